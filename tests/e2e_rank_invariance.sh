#!/usr/bin/env bash
# e2e_rank_invariance.sh — results do not depend on the number of ranks (docs/ARCHITECTURE.md,
# invariant 3): same seed, same global batch 16,
#   (a) 1 rank x batch 16 and 2 ranks x batch 8 (mpiexec -n 2), 5 steps: the final params
#       and buffers agree within 1e-4 by ckpt_compare's measure max |a-b|/(|b|+1e-3);
#   (b) the 2-rank checkpoint at step 5 resumed on 1 rank (config still says batch 8: the
#       trainer must keep the checkpoint's global batch 16 and say so in a warning) to step
#       10 agrees with the uninterrupted 1-rank run at step 10 within 1e-4.
# Runs use [train] adam_eps = 1 instead of the tiny config's 1e-8. Why: this RealNVP has
# parameters whose exact gradient is zero (conv biases and weight-norm scales right before
# a BatchNorm, which removes them); their computed gradients are float rounding noise
# (~1e-7..1e-6), which differs with the summation order, and Adam with eps 1e-8 turns
# that noise into steps of ~lr (sign(g) * lr): those parameters then differ by ~lr between
# 1 and 2 ranks after ONE step, whatever the implementation (measured: 0.96 after 5 steps
# with correct gradients). With eps = 1 the noise stays noise while a real gradient error
# still shows (BatchNorm weight/bias gradients off by the factor world_size: measure 0.26).
# The seed is the config's (3). The tiny model is chaotic (BatchNorm over a few channels
# of 7x7 maps amplifies differences): parameters 1e-6 apart after step 2 give gradients
# 3% apart at step 3 for some seeds. With seed 3 and correct gradients the measure was
# ~3e-6 at steps 5 and 10; other seeds reached 4e-4 (step 5) and 6e-3 (step 10), so a
# change of seed (or of the kernels' summation order) can need a new look at this test.
# usage: bash e2e_rank_invariance.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"

RTOL=1e-4
SAME=(--set train.seed=3 --set train.adam_eps=1 --set train.eval_every=0 --set data.test= --set checkpoint.every=5)

# (a) 1 rank x 16 (to step 10, checkpoints at 5 and 10) vs 2 ranks x 8 (to step 5)
train 0 one_rank "$WORK/one" "${SAME[@]}" --set train.batch_size=16 --set train.steps=10
run 0 two_ranks "${MPIEXEC[@]}" "$TRAIN" --config "$CONFIG" --set checkpoint.dir="$WORK/two" \
    --set log.progress=false "${SAME[@]}" --set train.batch_size=8 --set train.steps=5
expect_in "$LOG" "2 rank\(s\) x batch 8 = 16" "the 2-rank run does not report 2 ranks x batch 8"
run 0 compare_5 "$CMP" "$(ckpt "$WORK/one" 5)" "$(ckpt "$WORK/two" 5)" --rtol $RTOL --sections params,buffers --top 3
cat "$LOG"

# (b) resume the 2-rank checkpoint on 1 rank, with the config's batch 8
train 0 resume_1rank "$WORK/two" "${SAME[@]}" --set train.batch_size=8 --set train.steps=10 --resume auto
grep -E 'warn|resumed|rank\(s\) x batch' "$LOG" || true
expect_in "$LOG" "resumed from $(ckpt "$WORK/two" 5) at step 5" "did not resume the 2-rank checkpoint"
expect_in "$LOG" "warn.*global batch 16" "no warning that the checkpoint's global batch 16 is kept"
expect_in "$LOG" "1 rank\(s\) x batch 16 = 16" "the resumed run does not use 1 rank x batch 16"
run 0 compare_10 "$CMP" "$(ckpt "$WORK/one" 10)" "$(ckpt "$WORK/two" 10)" --rtol $RTOL --sections params,buffers --top 3
cat "$LOG"
echo "PASS e2e_rank_invariance ($(elapsed) s)"
