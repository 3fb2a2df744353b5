#!/usr/bin/env bash
# trajectory_check.sh — are the training trajectories unchanged? Trains 50 steps of
# configs/quickstart_fmnist.ini and configs/glow_tiny.ini on 2 ranks with the base
# commit's flowdp-train and with the current tree's, and checks that the two step-50
# checkpoints are bit-identical in parameters, buffers, optimizer moments and EMA
# (tests/ckpt_compare.c --exact, built from the current tree).
#
#   tools/trajectory_check.sh [--workdir DIR] [--build DIR] [--tree DIR] [BASE_REV]
#
#   BASE_REV       the base commit (default: the one in tests/trajectory_base), a
#                  commit of the git checkout this script is in
#   --tree DIR     the current tree to check (default: the checkout this script is in),
#                  e.g. a scratch copy with an experimental change
#   --workdir DIR  scratch (default: build-traj/ in the checkout, ignored by git):
#                  DIR/base/src   the base tree (git archive BASE_REV, not a worktree)
#                  DIR/base/build its Release flowdp-train, CUDA off; reused when
#                                 DIR/base/commit names the same commit
#                  DIR/cur        the current tree's Release build, CUDA off (incremental;
#                                 replaced when it was configured for another tree)
#                  DIR/runs       the runs' checkpoints and logs (replaced each time)
#   --build DIR    use (and bring up to date) this configured build of the current tree
#                  instead of DIR/cur, e.g. build/ (it should be Release; a build with
#                  CUDA kernels is accepted, but only the CPU backend runs here)
#
# Why a re-run of the base and not a stored checksum: oneDNN picks its kernels by the
# CPU's instruction set and the Release build uses -march=native, so the bits differ
# between machines; base and current built and run on the same machine do not.
# Each run: mpiexec -n 2, 1 OpenMP thread per rank, 50 steps, a checkpoint at step 50,
# the step-50 evaluation on 500 test images, no progress line. The base run reads the
# base tree's config file, the current run the current tree's (a difference is noted).
#
# Prints one line per config ("quickstart_fmnist: bit-identical (N values)", or the
# first and the worst difference). Exit: 0 both bit-identical, 1 a difference, 2 an
# error (build or run failed, bad arguments), 77 cannot run here (no mpiexec, cmake
# or git, or Fashion-MNIST not in /usr/share/datasets/fashion-mnist).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIGS=(quickstart_fmnist glow_tiny)
STEPS=50
DATA=/usr/share/datasets/fashion-mnist

usage() { sed -n '8p' "$0" | sed 's/^# *//' >&2; exit 2; }
die() { echo "trajectory_check: $*" >&2; exit 2; }
skip() { echo "trajectory_check: skipped: $*" >&2; exit 77; }

WORK="" CUR_BUILD="" BASE_REV="" TREE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) [ $# -ge 2 ] || usage; WORK=$2; shift 2 ;;
    --build) [ $# -ge 2 ] || usage; CUR_BUILD=$2; shift 2 ;;
    --tree) [ $# -ge 2 ] || usage; TREE=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "trajectory_check: unknown option '$1'" >&2; usage ;;
    *) [ -z "$BASE_REV" ] || usage; BASE_REV=$1; shift ;;
  esac
done

for tool in mpiexec cmake git tar; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool not found"
done
for f in train-images-idx3-ubyte.gz t10k-images-idx3-ubyte.gz; do
  [ -r "$DATA/$f" ] || skip "Fashion-MNIST not installed ($DATA/$f missing; Debian package dataset-fashion-mnist)"
done

if [ -z "$BASE_REV" ]; then
  [ -r "$ROOT/tests/trajectory_base" ] || die "no BASE_REV given and no tests/trajectory_base"
  read -r BASE_REV <"$ROOT/tests/trajectory_base" || true
  [ -n "$BASE_REV" ] || die "tests/trajectory_base is empty"
fi
BASE=$(git -C "$ROOT" rev-parse --verify --quiet "$BASE_REV^{commit}") ||
  die "base revision '$BASE_REV' is not a commit of $ROOT"

WORK=${WORK:-$ROOT/build-traj}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
TREE=${TREE:-$ROOT}
[ -f "$TREE/CMakeLists.txt" ] || die "--tree $TREE: not a flowdp source tree"
TREE=$(cd "$TREE" && pwd)
if [ -n "$CUR_BUILD" ]; then
  [ -d "$CUR_BUILD" ] || die "--build $CUR_BUILD: no such directory"
  CUR_BUILD=$(cd "$CUR_BUILD" && pwd)
fi
JOBS=$(nproc 2>/dev/null || echo 2)

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
T0=$SECONDS
elapsed() { echo "$((SECONDS - T0)) s"; }

# build LOG CMAKE-ARGS... : a build step whose output goes to LOG, shown only on failure
build() {
  local log=$1
  shift
  if ! "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "build failed: $* (log: $log)"
  fi
}

# ---- the base: git archive BASE | tar -x, Release flowdp-train, CUDA off ------------------
BASE_DIR=$WORK/base
if [ "$(cat "$BASE_DIR/commit" 2>/dev/null || true)" = "$BASE" ] && [ -x "$BASE_DIR/build/flowdp-train" ]; then
  echo "trajectory_check: base ${BASE:0:12}: reusing $BASE_DIR/build"
else
  echo "trajectory_check: base ${BASE:0:12}: building flowdp-train in $BASE_DIR/build"
  rm -rf "$BASE_DIR"
  mkdir -p "$BASE_DIR/src"
  git -C "$ROOT" archive --format=tar "$BASE" | tar -x -C "$BASE_DIR/src"
  build "$BASE_DIR/build.log" cmake -S "$BASE_DIR/src" -B "$BASE_DIR/build" -DCMAKE_BUILD_TYPE=Release -DFLOWDP_CUDA=OFF
  build "$BASE_DIR/build.log" cmake --build "$BASE_DIR/build" -j"$JOBS" --target flowdp-train
  echo "$BASE" >"$BASE_DIR/commit"
  echo "trajectory_check: base built ($(elapsed))"
fi

# ---- the current tree: Release flowdp-train and ckpt_compare, CUDA off ---------------------
if [ -z "$CUR_BUILD" ]; then
  CUR_BUILD=$WORK/cur
  : >"$WORK/cur.log"
  if [ -f "$CUR_BUILD/CMakeCache.txt" ] &&
      ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$TREE" "$CUR_BUILD/CMakeCache.txt"; then
    rm -rf "$CUR_BUILD" # configured for another tree
  fi
  build "$WORK/cur.log" cmake -S "$TREE" -B "$CUR_BUILD" -DCMAKE_BUILD_TYPE=Release -DFLOWDP_CUDA=OFF
else
  [ -f "$CUR_BUILD/CMakeCache.txt" ] || die "--build $CUR_BUILD: not a configured CMake build"
  : >"$WORK/cur.log"
  grep -q '^CMAKE_BUILD_TYPE:[A-Z]*=Release$' "$CUR_BUILD/CMakeCache.txt" ||
    echo "trajectory_check: note: $CUR_BUILD is not a Release build (the base is)" >&2
fi
echo "trajectory_check: current tree $TREE: building flowdp-train and ckpt_compare in $CUR_BUILD"
build "$WORK/cur.log" cmake --build "$CUR_BUILD" -j"$JOBS" --target flowdp-train ckpt_compare
CUR_TRAIN=$CUR_BUILD/flowdp-train
COMPARE=$CUR_BUILD/tests/ckpt_compare
if [ ! -x "$CUR_TRAIN" ] || [ ! -x "$COMPARE" ]; then die "no $CUR_TRAIN or $COMPARE after the build"; fi
echo "trajectory_check: built ($(elapsed))"

# ---- the runs --------------------------------------------------------------------------
# run WHICH PROGRAM CONFIG_FILE OUT_DIR: 50 steps on 2 ranks; the log in OUT_DIR.log
run() {
  local which=$1 prog=$2 cfg=$3 out=$4
  rm -rf "$out" "$out.log"
  if ! mpiexec -n 2 --allow-run-as-root --oversubscribe "$prog" --config "$cfg" \
      --set train.steps=$STEPS --set checkpoint.every=$STEPS --set train.eval_every=0 \
      --set train.threads=1 --set data.test_limit=500 --set log.progress=false \
      --set checkpoint.dir="$out" --resume none >"$out.log" 2>&1; then
    tail -n 20 "$out.log" >&2
    if grep -qi "unknown key\|unknown section" "$out.log"; then
      echo "trajectory_check: the $which program does not know a key above: each --set key and each" \
        "key of its config file must exist in the $which tree" >&2
    fi
    die "$which run of $(basename "$cfg") failed (log: $out.log)"
  fi
  [ -f "$out/ckpt_$(printf %09d "$STEPS").h5" ] || die "$which run of $(basename "$cfg"): no step-$STEPS checkpoint in $out"
}

RUNS=$WORK/runs
mkdir -p "$RUNS"
status=0
for name in "${CONFIGS[@]}"; do
  base_cfg=$BASE_DIR/src/configs/$name.ini cur_cfg=$TREE/configs/$name.ini
  [ -f "$base_cfg" ] || die "the base has no configs/$name.ini"
  [ -f "$cur_cfg" ] || die "the current tree has no configs/$name.ini"
  cmp -s "$base_cfg" "$cur_cfg" ||
    echo "trajectory_check: note: configs/$name.ini differs from the base's (each run uses its own tree's)" >&2
  run base "$BASE_DIR/build/flowdp-train" "$base_cfg" "$RUNS/$name.base"
  run current "$CUR_TRAIN" "$cur_cfg" "$RUNS/$name.cur"
  ck=ckpt_$(printf %09d "$STEPS").h5
  sections=params,buffers,optimizer,ema
  set +e
  out=$("$COMPARE" "$RUNS/$name.base/$ck" "$RUNS/$name.cur/$ck" --exact --sections "$sections" 2>&1)
  rc=$?
  set -e
  echo "$out" >"$RUNS/$name.compare.txt"
  if [ $rc -eq 0 ]; then
    n=$(sed -n 's/^\([0-9]*\) values compared: bit-identical$/\1/p' <<<"$out")
    echo "$name: bit-identical (${n:-?} values)"
  elif [ $rc -eq 1 ]; then
    status=1
    worst=$("$COMPARE" "$RUNS/$name.base/$ck" "$RUNS/$name.cur/$ck" --rtol 0 --sections "$sections" 2>&1 || true)
    echo "$worst" >>"$RUNS/$name.compare.txt"
    first=$(grep -m1 '^first difference\|^different models\|^section .*present only' <<<"$out" || echo "$out" | tail -n 1)
    echo "$name: DIFFERENT (A = base ${BASE:0:12}, B = current): $first"
    grep '^worst:\|^max |a-b|' <<<"$worst" | sed "s/^/$name:   /" || true
  else
    echo "$out" >&2
    die "$name: ckpt_compare failed (exit $rc)"
  fi
done
echo "trajectory_check: done in $(elapsed) (runs in $RUNS)"
exit $status
