#!/usr/bin/env bash
# e2e_device.sh — the device path of the programs, as far as this machine can run it:
#  1. flowdp-bench --config under 2 MPI ranks: the trainer's step with the gradient
#     buckets and synchronized BatchNorm (MPI here, NCCL with --device cuda) runs, and
#     reports the all-reduce time and its last line `images/s: X  peak_rss_mb: Y`;
#  2. without a usable GPU, `device = cuda` in flowdp-train, flowdp-eval, flowdp-sample
#     and flowdp-bench stops at once with exit 2 and one line giving the CUDA runtime's
#     reason, and writes nothing (no checkpoint directory). Where a GPU works, part 2
#     is skipped with a message (the GPU tests test_cuda_parity / mpi_test_nccl run there).
# usage: bash e2e_device.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR FLOWDP_BENCH
source "$(dirname "$0")/e2e_common.sh" "$@"
BENCH=${6:?usage: ... SOURCE_DIR FLOWDP_BENCH}
[ -x "$BENCH" ] || fail "$BENCH is not an executable"

note "flowdp-bench --config on 2 ranks (MPI gradient buckets)"
run 0 bench "${MPIEXEC[@]}" "$BENCH" --config "$CONFIG" --steps 4 --warmup 1
expect_in "$LOG" "2 rank\(s\) x batch [0-9]+, cpu, .*gradient all-reduce via MPI" "bench header names 2 ranks and MPI"
expect_in "$LOG" "^gradient all-reduce: median wait in wait_all [0-9.]+ ms per step" "bench reports the all-reduce wait"
last=$(grep -v '^$' "$LOG" | tail -1)
[[ $last =~ ^images/s:\ [0-9]+\.[0-9]+\ \ peak_rss_mb:\ [0-9]+\.[0-9]$ ]] || fail "bench last line is '$last'"
run 2 bench_bad_set "$BENCH" --config "$CONFIG" --set model.nope=1 --steps 2 --warmup 0
expect_in "$LOG" "unknown key \[model\] nope" "bench names a bad --set key"

note "device = cuda without a usable GPU"
D=$WORK/cuda_run
rc=0
timeout -k 5 "$RUN_TIMEOUT" "${MPIEXEC[@]}" "$TRAIN" --config "$CONFIG" --set checkpoint.dir="$D" \
    --set log.progress=false --set train.device=cuda --set train.steps=2 >"$WORK/cuda_train.log" 2>&1 || rc=$?
if [ "$rc" = 0 ]; then
    echo "SKIP part 2: a CUDA device is usable here (flowdp-train device = cuda finished); the GPU tests cover it"
    exit 0
fi
[ "$rc" = 2 ] || { sed 's/^/    /' "$WORK/cuda_train.log"; fail "flowdp-train device = cuda: exit $rc, expected 2"; }
REASON='(no CUDA device visible: .+|built without CUDA)'
expect_in "$WORK/cuda_train.log" "$REASON" "flowdp-train says why there is no GPU"
[ ! -e "$D" ] || fail "flowdp-train device = cuda created $D although it could not start"

train 0 cpu "$WORK/cpu" --set train.steps=1 --set train.eval_every=0 --set data.test_limit=8
C=$(ckpt "$WORK/cpu" 1)
[ -f "$C" ] || fail "no checkpoint $C"
run 2 eval_cuda "$EVAL" "$C" --device cuda --limit 8
expect_in "$LOG" "^flowdp-eval: .*$REASON" "flowdp-eval says why there is no GPU"
run 2 sample_cuda "$SAMPLE" "$C" -o "$WORK/s.png" -n 4 --device cuda
expect_in "$LOG" "^flowdp-sample: .*$REASON" "flowdp-sample says why there is no GPU"
[ ! -e "$WORK/s.png" ] || fail "flowdp-sample wrote $WORK/s.png without a GPU"
run 2 bench_cuda "$BENCH" --steps 2 --warmup 0 --device cuda
expect_in "$LOG" "^flowdp-bench: .*$REASON" "flowdp-bench says why there is no GPU"
run 2 bench_cfg_cuda "$BENCH" --config "$CONFIG" --steps 2 --warmup 0 --device cuda
expect_in "$LOG" "$REASON" "flowdp-bench --config says why there is no GPU"
echo "PASS ($(elapsed) s)"
