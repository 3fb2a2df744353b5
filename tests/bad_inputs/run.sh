#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2034  # functions and arrays used by the sourced case files
# run.sh — the table-driven bad-input suite. Every case is one row:
#
#   bad NAME EXIT 'ERE' [--lines N] [--absent PATH]... -- COMMAND ARGS...
#
# and passes when COMMAND
#   - exits with EXIT (a hang, killed after $BAD_TIMEOUT s, fails);
#   - prints exactly N lines on stderr (default 1), one of which matches ERE (grep -E);
#     stdout is free (progress and info lines go there);
#   - leaves every file that existed under $W before the case byte-identical (SHA-256 of
#     every file under $W taken before and compared after; new files are allowed unless
#     --absent names them);
#   - did not create any of the --absent paths.
# The rows live in tests/bad_inputs/cases_*.sh (sourced in name order); each file first makes
# the bad inputs it needs under $W, then lists its rows. Every row runs even when an earlier
# one failed; the failures are listed at the end and the exit code is 1 if there were any.
#
# usage: bash tests/bad_inputs/run.sh BUILD_DIR SOURCE_DIR [NAME-ERE]
#   BUILD_DIR holds flowdp-train, flowdp-eval, flowdp-sample, flowdp-pack (the Release build
#   or the sanitizer build); NAME-ERE runs only the cases whose name matches.
# What a case file can use:
#   $TRAIN $EVAL $SAMPLE $PACK $BENCH  the programs;   $SRC  the source tree
#   $CONFIG   a copy of configs/tiny_test.ini under $W (train 512 images, test 64)
#   $FMNIST   /usr/share/datasets/fashion-mnist
#   $W        the scratch directory whose files are checksummed around every case
#   $CKPT     a valid RealNVP checkpoint of $CONFIG (3 steps), under $W
#   $GLOW_CKPT  a valid Glow checkpoint (configs/glow_tiny.ini shrunk), under $W
#   MPIEXEC   array: the command line that starts 2 ranks
#   "${TR[@]}" ARGS  "$TRAIN" --config "$CONFIG" --set checkpoint.dir=$W/ck_NAME --set log.progress=false ARGS
#   @CK@      in any argument of a row: $W/ck_NAME (a checkpoint dir of the row's own)
# Exit: 0 all passed, 1 a case failed, 77 skipped (Fashion-MNIST not installed).
set -uo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash $0 BUILD_DIR SOURCE_DIR [NAME-ERE]" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$2" && pwd)
ONLY=${3:-}
TRAIN=$BUILD/flowdp-train
EVAL=$BUILD/flowdp-eval
SAMPLE=$BUILD/flowdp-sample
PACK=$BUILD/flowdp-pack
BENCH=$BUILD/flowdp-bench
FMNIST=/usr/share/datasets/fashion-mnist
BAD_TIMEOUT=${BAD_TIMEOUT:-120}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
read -r -a MPIEXEC <<<"${FLOWDP_MPIEXEC:-mpiexec -n 2 --allow-run-as-root --oversubscribe}"
for p in "$TRAIN" "$EVAL" "$SAMPLE" "$PACK"; do
    [ -x "$p" ] || { echo "FAIL: $p is not an executable"; exit 1; }
done
if [ ! -r "$FMNIST/train-images-idx3-ubyte.gz" ] || [ ! -r "$FMNIST/t10k-images-idx3-ubyte.gz" ]; then
    echo "SKIP: Fashion-MNIST is not in $FMNIST (Debian package dataset-fashion-mnist)"
    exit 77
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/flowdp-bad.XXXXXX")
OUT=$(mktemp -d "${TMPDIR:-/tmp}/flowdp-bad-logs.XXXXXX") # logs and checksums, outside $W
cleanup() { rm -rf "$W" "$OUT"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PASSED=0
FAILS=()
NCASE=0
fail_case() { echo "FAIL [$1]: $2"; FAILS+=("$1: $2"); }

# checksums of every file under $W (path and SHA-256), sorted; files whose inode, size,
# mtime and ctime did not change since the last call are not read again (sums.py)
sums() { python3 "$SRC/tests/bad_inputs/sums.py" "$W" "$OUT/sums.cache"; }

bad() {
    local name=$1 want=$2 ere=$3 lines=1
    local absent=()
    shift 3
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        case $1 in
            --lines) lines=$2; shift 2 ;;
            --absent) absent+=("$2"); shift 2 ;;
            *) echo "run.sh: case $name: unknown option $1" >&2; exit 2 ;;
        esac
    done
    [ "${1:-}" = -- ] || { echo "run.sh: case $name: missing -- before the command" >&2; exit 2; }
    shift
    if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then return 0; fi
    NCASE=$((NCASE + 1))
    local args=() x
    for x in "$@"; do args+=("${x//@CK@/$W/ck_$name}"); done
    set -- "${args[@]}"
    sums >"$OUT/$name.before"
    local rc=0
    timeout -k 5 "$BAD_TIMEOUT" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" </dev/null || rc=$?
    sums >"$OUT/$name.after"
    local ok=1 n
    n=$(grep -c '' "$OUT/$name.err")
    local first
    first=$(head -n 3 "$OUT/$name.err" | cut -c1-400)
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        fail_case "$name" "hung (killed after $BAD_TIMEOUT s)"; ok=0
    elif [ "$rc" != "$want" ]; then
        fail_case "$name" "exit $rc, expected $want"; ok=0
    fi
    if [ "$n" != "$lines" ]; then
        fail_case "$name" "$n lines on stderr, expected $lines"; ok=0
    fi
    if ! grep -Eq -- "$ere" "$OUT/$name.err"; then
        fail_case "$name" "no stderr line matches: $ere"; ok=0
    fi
    # every file that existed before must be unchanged (new files may appear)
    local changed
    changed=$(comm -23 <(sort "$OUT/$name.before") <(sort "$OUT/$name.after") | head -5)
    if [ -n "$changed" ]; then
        fail_case "$name" "changed or removed: $(echo "$changed" | awk '{print $2}' | tr '\n' ' ')"; ok=0
    fi
    local a
    for a in "${absent[@]+"${absent[@]}"}"; do
        if [ -e "$a" ]; then fail_case "$name" "created $a"; ok=0; fi
    done
    if [ $ok = 1 ]; then
        PASSED=$((PASSED + 1))
        echo "ok   [$name] exit $rc: $(head -n 1 "$OUT/$name.err" | cut -c1-200)"
    else
        echo "     command: $*" | cut -c1-600
        echo "     stderr (first lines):"
        printf '%s\n' "$first" | sed 's/^/       /'
    fi
}

# "${TR[@]}" ARGS: flowdp-train on $CONFIG, no progress line, its checkpoint dir $W/ck_NAME
# (the token @CK@ in any argument of a row becomes $W/ck_NAME)
TR=("$TRAIN" --config "$W/tiny.ini" --set checkpoint.dir=@CK@ --set log.progress=false)

# ---- shared inputs: a config, a RealNVP and a Glow checkpoint --------------------------------
cp "$SRC/configs/tiny_test.ini" "$W/tiny.ini"
CONFIG=$W/tiny.ini
if ! "$TRAIN" --config "$CONFIG" --set checkpoint.dir="$W/base" --set log.progress=false \
        --set train.steps=3 --set train.eval_every=0 --set checkpoint.every=3 >"$OUT/base.log" 2>&1; then
    cat "$OUT/base.log"; echo "FAIL: could not train the base checkpoint"; exit 1
fi
CKPT=$W/base/ckpt_000000003.h5
[ -r "$CKPT" ] || { ls -l "$W/base"; echo "FAIL: $CKPT was not written"; exit 1; }
if ! "$TRAIN" --config "$SRC/configs/glow_tiny.ini" --set checkpoint.dir="$W/glow" --set log.progress=false \
        --set train.steps=2 --set train.warmup_steps=1 --set train.eval_every=0 --set checkpoint.every=2 --set model.depth=2 \
        --set model.width=8 --set data.train_limit=64 --set data.test_limit=16 >"$OUT/glow.log" 2>&1; then
    cat "$OUT/glow.log"; echo "FAIL: could not train the Glow checkpoint"; exit 1
fi
GLOW_CKPT=$W/glow/ckpt_000000002.h5
[ -r "$GLOW_CKPT" ] || { ls -l "$W/glow"; echo "FAIL: $GLOW_CKPT was not written"; exit 1; }

for f in "$SRC"/tests/bad_inputs/cases_*.sh; do
    echo "---- $(basename "$f")"
    # shellcheck disable=SC1090
    source "$f"
done

echo
echo "bad inputs: $NCASE cases, $PASSED passed, ${#FAILS[@]} failed"
if [ ${#FAILS[@]} -gt 0 ]; then
    printf '  %s\n' "${FAILS[@]}"
    exit 1
fi
exit 0
