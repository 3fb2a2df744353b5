#!/usr/bin/env python3
"""check_structure.py — the size and layering rules of docs/ARCHITECTURE.md ("Module map"):
no source file under src/, include/ or tools/ over 700 lines, no function over 120 lines,
and no two source files that call into each other (from the symbols of a build's objects).

  tools/check_structure.py BUILD_DIR     (a configured and built tree, e.g. build-test)

Exit 0 when every rule holds, 1 with one line per violation."""
import collections, glob, os, re, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FILE, MAX_FUNC = 700, 120


def sources():
    for d in ("src", "include", "tools"):
        for f in sorted(glob.glob(os.path.join(ROOT, d, "**", "*"), recursive=True)):
            if f.endswith((".c", ".h", ".cu")):
                yield f


def function_spans(lines):
    """(first line, length) of every function definition: a body that opens at the end of a
    line whose declaration starts in column 0 and closes with a '}' in column 0"""
    start = None
    for i, l in enumerate(lines):
        if start is None and l.rstrip().endswith("{") and ")" in l:
            j = i
            while j > 0 and lines[j].startswith((" ", "\t")):
                j -= 1
            head = lines[j]
            if re.match(r"[A-Za-z_]", head) and not head.startswith(("typedef", "struct", "enum", "union")) \
                    and "=" not in head.split("(")[0]:
                start = j
        elif start is not None and l.startswith("}"):
            yield start + 1, i - start + 1
            start = None


def sizes():
    bad = []
    for f in sources():
        lines = open(f, errors="replace").read().split("\n")
        rel = os.path.relpath(f, ROOT)
        if len(lines) - 1 > MAX_FILE:
            bad.append(f"{rel}: {len(lines) - 1} lines (at most {MAX_FILE})")
        for line, n in function_spans(lines):
            if n > MAX_FUNC:
                bad.append(f"{rel}:{line}: a function of {n} lines (at most {MAX_FUNC}): {lines[line - 1][:70]}")
    return bad


def mutual_calls(build):
    objs = {}
    for o in glob.glob(os.path.join(build, "CMakeFiles", "*_objects.dir", "**", "*.o"), recursive=True):
        key = o[o.index(os.sep + "src" + os.sep) + 1:-2]
        objs.setdefault(key, o)
    if not objs:
        return [f"{build}: no module objects (CMakeFiles/*_objects.dir): build it first"]
    defined, undefined = {}, {}
    for key, o in objs.items():
        out = subprocess.run(["nm", o], capture_output=True, text=True, check=True).stdout.split("\n")
        defined[key] = {l.split()[-1] for l in out if len(l.split()) == 3 and l.split()[1] in "TDBR"}
        undefined[key] = {l.split()[-1] for l in out if len(l.split()) == 2 and l.split()[0] == "U"}
    calls = collections.defaultdict(set)
    for a in objs:
        for b in objs:
            if a != b and undefined[a] & defined[b]:
                calls[a].add(b)
    bad = []
    for a in sorted(calls):
        for b in sorted(calls[a]):
            if a < b and a in calls.get(b, ()):
                bad.append(f"{a} and {b} call into each other ({sorted(undefined[a] & defined[b])[0]}, "
                           f"{sorted(undefined[b] & defined[a])[0]})")
    return bad


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bad = sizes() + mutual_calls(sys.argv[1])
    for b in bad:
        print("check_structure:", b)
    print(f"check_structure: {'FAILED' if bad else 'ok'} (files <= {MAX_FILE} lines, functions <= {MAX_FUNC}, "
          "no mutual calls)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
