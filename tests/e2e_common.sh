# shellcheck shell=bash
# e2e_common.sh — sourced (not run) by every tests/e2e_*.sh end-to-end test: the
# argument convention, the skip rule, a private scratch directory removed on exit,
# and helpers that run a program under `timeout` and check its exit code.
#
# Every e2e script is called (ctest does it, see the e2e block in tests/CMakeLists.txt) as
#   bash tests/e2e_<x>.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
# with, in the environment:
#   FLOWDP_MPIEXEC   the command line that starts 2 ranks (default:
#                    "mpiexec -n 2 --allow-run-as-root --oversubscribe")
#   OMP_NUM_THREADS=1, OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1, and for the sanitizer build
#   ASAN_OPTIONS / LSAN_OPTIONS with tests/mpi_lsan.supp (Open MPI's own leaks).
# Exit codes: 0 pass, 1 fail, 77 skipped (Fashion-MNIST is not installed).
# The runs use configs/tiny_test.ini (a tiny RealNVP on 512 Fashion-MNIST images).

set -euo pipefail
if [ $# -lt 5 ]; then
    echo "usage: bash $0 FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR" >&2
    exit 2
fi
TRAIN=$1
EVAL=$2
SAMPLE=$3
CMP=$4
SRC=$5
CONFIG=$SRC/configs/tiny_test.ini
FMNIST=/usr/share/datasets/fashion-mnist
# shellcheck disable=SC2034  # used by the scripts that source this file
read -r -a MPIEXEC <<<"${FLOWDP_MPIEXEC:-mpiexec -n 2 --allow-run-as-root --oversubscribe}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# no program run may take longer than this (seconds): a hang fails, a slow busy machine does not
RUN_TIMEOUT=${E2E_RUN_TIMEOUT:-120}

skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*"
    exit 1
}
note() { echo "---- $*"; }

for p in "$TRAIN" "$EVAL" "$SAMPLE" "$CMP"; do
    [ -x "$p" ] || fail "$p is not an executable"
done
[ -r "$CONFIG" ] || fail "$CONFIG not found"
if [ ! -r "$FMNIST/train-images-idx3-ubyte.gz" ] || [ ! -r "$FMNIST/t10k-images-idx3-ubyte.gz" ]; then
    skip "Fashion-MNIST is not in $FMNIST (Debian package dataset-fashion-mnist); configs/tiny_test.ini needs it"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/flowdp-e2e.XXXXXX")
# kill_tree PID: SIGKILL a background job and all its descendants (timeout, mpiexec, ranks).
# Only jobs of this shell that are still running (`jobs -p`) are killed: never a reused pid.
kill_tree() {
    local c
    for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
    kill -9 "$1" 2>/dev/null || true
}
cleanup() {
    local p
    for p in $(jobs -p); do kill_tree "$p"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # so that the EXIT trap cleans up (nothing can catch SIGKILL)
E2E_T0=$(date +%s.%N)
# seconds since the script started, or since $1 (a `date +%s.%N` value)
elapsed() { awk -v a="${1:-$E2E_T0}" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# run WANT NAME cmd...: run cmd under timeout, stdout+stderr into $WORK/NAME.log (also $LOG);
# WANT is the expected exit code, or "nonzero". On a mismatch print the log and fail.
LOG=
run() {
    local want=$1 name=$2
    shift 2
    LOG=$WORK/$name.log
    local rc=0 t0
    t0=$(date +%s.%N)
    timeout -k 5 "$RUN_TIMEOUT" "$@" >"$LOG" 2>&1 || rc=$?
    echo "[$name] exit $rc after $(elapsed "$t0") s: ${*##*/}" | cut -c1-300
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        sed 's/^/    /' "$LOG"
        fail "$name: hung (killed by timeout after $RUN_TIMEOUT s)"
    fi
    if { [ "$want" = nonzero ] && [ "$rc" = 0 ]; } || { [ "$want" != nonzero ] && [ "$rc" != "$want" ]; }; then
        sed 's/^/    /' "$LOG"
        fail "$name: exit code $rc, expected $want"
    fi
}

# train WANT NAME DIR [args...]: flowdp-train on the tiny config with checkpoint.dir=DIR
train() {
    local want=$1 name=$2 dir=$3
    shift 3
    run "$want" "$name" "$TRAIN" --config "$CONFIG" --set checkpoint.dir="$dir" --set log.progress=false "$@"
}

# expect_in LOGFILE ERE what: the log must contain a line matching ERE
expect_in() {
    if ! grep -Eq -- "$2" "$1"; then
        sed 's/^/    /' "$1"
        fail "$3 (no line of $(basename "$1") matches: $2)"
    fi
}

# ckpt PATH-DIR STEP: the checkpoint file name for a step
ckpt() { printf '%s/ckpt_%09d.h5' "$1" "$2"; }

# json_num FILE KEY: a number from flowdp-eval's --json report
json_num() { sed -n "s/^ *\"$2\": *\\([-+0-9.eE]*\\).*/\\1/p" "$1"; }

# close A B RTOL: |A-B| <= RTOL*|B| (numbers as text)
close() { awk -v a="$1" -v b="$2" -v r="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(d <= r * m) }'; }
