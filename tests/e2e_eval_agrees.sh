#!/usr/bin/env bash
# e2e_eval_agrees.sh — the test-set numbers agree wherever they are computed (docs/ARCHITECTURE.md,
# invariant 3, include/flowdp/evaluate.h): after a 12-step run whose final evaluation
# logged test bpd over test_limit = 64 images (last row of /test/bpd in metrics.h5),
#   - flowdp-eval on the final checkpoint with --limit 64 --seed <train seed> gives the
#     same bpd to 1e-6 relative (noise keyed by (seed, sample index) in both);
#   - flowdp-eval on 2 ranks gives the same bpd and nats/image as on 1 rank to 1e-9
#     relative (same per-image values, only the summation order differs; the JSON holds
#     bpd with 8 decimals, so one unit in that last place, 1e-8, is allowed on top);
#   - --importance-samples 4 gives a bpd <= the single-draw one + 1e-3 (log-mean-exp);
#   - flowdp-sample -t 0.5 -t 1.0 writes a PNG (8-byte signature checked).
# The numbers are printed (ctest -V shows them). Every flowdp-eval/-sample run gets
# --threads 1: their default (0) is omp_get_num_procs(), which ignores OMP_NUM_THREADS.
# usage: bash e2e_eval_agrees.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"
command -v h5dump >/dev/null || skip "h5dump not found (Debian package hdf5-tools)"

D=$WORK/run
N=64
SEED=3
train 0 train "$D" --set train.steps=12 --set train.seed=$SEED --set data.test_limit=$N
C12=$(ckpt "$D" 12)
[ -f "$C12" ] || fail "no final checkpoint $C12"

# the last row of /test/bpd (and /test/images, /test/step) in full precision
last_row() {
    h5dump -m '%.17g' -d "$1" -y -w 0 "$D/metrics.h5" | sed -n '/DATA {/,/}/p' | sed 's/DATA {//; s/}//' |
        tr ',' '\n' | tr -d ' ' | grep . | tail -1
}
train_bpd=$(last_row /test/bpd)
train_images=$(last_row /test/images)
train_step=$(last_row /test/step)
note "metrics.h5: last /test row: step $train_step, $train_images images, bpd $train_bpd"
[ "${train_step%.*}" = 12 ] || fail "the last test row is at step $train_step, expected 12"
[ "${train_images%.*}" = $N ] || fail "the last test row is over $train_images images, expected $N"

# --- flowdp-eval, 1 rank, same noise seed (default batch: differs from the trainer's 32)
run 0 eval_1rank "$EVAL" "$C12" --threads 1 --limit $N --seed $SEED --json "$WORK/eval1.json"
cat "$LOG"
bpd1=$(json_num "$WORK/eval1.json" bpd)
nats1=$(json_num "$WORK/eval1.json" nats_per_image)
[ "$(json_num "$WORK/eval1.json" images)" = $N ] || fail "flowdp-eval evaluated $(json_num "$WORK/eval1.json" images) images"
note "train-time bpd $train_bpd, flowdp-eval bpd $bpd1"
close "$bpd1" "$train_bpd" 1e-6 || fail "flowdp-eval bpd $bpd1 differs from the trainer's $train_bpd by more than 1e-6 relative"

# --- flowdp-eval on 2 ranks
run 0 eval_2ranks "${MPIEXEC[@]}" "$EVAL" "$C12" --threads 1 --limit $N --seed $SEED --json "$WORK/eval2.json"
cat "$LOG"
bpd2=$(json_num "$WORK/eval2.json" bpd)
nats2=$(json_num "$WORK/eval2.json" nats_per_image)
[ "$(json_num "$WORK/eval2.json" ranks)" = 2 ] || fail "the 2-rank evaluation reports $(json_num "$WORK/eval2.json" ranks) ranks"
note "1 rank: bpd $bpd1, nats $nats1; 2 ranks: bpd $bpd2, nats $nats2"
awk -v a="$bpd2" -v b="$bpd1" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-9 * b + 1e-8) }' ||
    fail "bpd on 2 ranks $bpd2 differs from 1 rank $bpd1 by more than 1e-9 relative (+1e-8 for the printed digits)"
awk -v a="$nats2" -v b="$nats1" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-9 * b + 1e-6) }' ||
    fail "nats/image on 2 ranks $nats2 differs from 1 rank $nats1 by more than 1e-9 relative (+1e-6 printed)"

# --- importance-weighted estimate over 4 noise draws
run 0 eval_iw4 "$EVAL" "$C12" --threads 1 --limit $N --seed $SEED --importance-samples 4 --batch 32 --json "$WORK/eval4.json"
cat "$LOG"
bpd4=$(json_num "$WORK/eval4.json" bpd)
note "single draw bpd $bpd1, importance-weighted (K=4) bpd $bpd4, difference $(awk -v a="$bpd4" -v b="$bpd1" 'BEGIN { printf "%.6f", a - b }')"
awk -v a="$bpd4" -v b="$bpd1" 'BEGIN { exit !(a <= b + 1e-3) }' ||
    fail "importance-weighted bpd $bpd4 > single-draw $bpd1 + 1e-3"

# --- samples: a PNG at two temperatures
run 0 sample "$SAMPLE" "$C12" -o "$WORK/grid.png" -n 4 -t 0.5 -t 1.0 --threads 1
cat "$LOG"
sig=$(od -An -tx1 -N8 "$WORK/grid.png" | tr -d ' \n')
[ "$sig" = 89504e470d0a1a0a ] || fail "$WORK/grid.png does not start with the PNG signature (got $sig)"
note "grid.png: $(stat -c %s "$WORK/grid.png") bytes, PNG signature ok"
echo "PASS e2e_eval_agrees ($(elapsed) s)"
