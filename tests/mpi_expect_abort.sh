#!/bin/sh
# mpi_expect_abort.sh — run an MPI job that must fail and check how it fails:
# non-zero exit code, within max_seconds (no hang), output matching a regex.
# usage: sh mpi_expect_abort.sh <max_seconds> <extended-regex> <command...>
# (ctest passes the mpiexec command line for tests/mpi_test_abort.c.)
max=$1
pattern=$2
shift 2
start=$(date +%s.%N)
# the guard: kill the whole launcher after 4x the budget, so a hang fails instead of blocking ctest
out=$(timeout -k 5 $((max * 4)) "$@" 2>&1)
rc=$?
end=$(date +%s.%N)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
printf '%s\n' "$out"
echo "---- mpi_expect_abort: exit code $rc after $elapsed s (budget $max s)"
fail=0
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0; it should have aborted"; fail=1; fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: the job hung (killed by timeout)"; fail=1; fi
if ! printf '%s\n' "$out" | grep -Eq -- "$pattern"; then echo "FAIL: no line matches: $pattern"; fail=1; fi
if printf '%s\n' "$out" | grep -q "got past the point of no return"; then echo "FAIL: a rank went on"; fail=1; fi
if ! awk -v e="$elapsed" -v m="$max" 'BEGIN { exit !(e <= m) }'; then
    echo "FAIL: took $elapsed s, more than $max s"; fail=1
fi
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
