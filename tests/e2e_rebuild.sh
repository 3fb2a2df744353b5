#!/usr/bin/env bash
# e2e_rebuild.sh — [train] rebuild_activations (docs/ARCHITECTURE.md, section "Memory") through the real
# flowdp-train on configs/tiny_test.ini: 2 ranks x batch 4, 5 steps, same seed,
#   (a) with --set train.rebuild_activations=true (synchronized BatchNorm: the recomputation
#       reuses the forward's global statistics; gradient buckets started from the rebuilt
#       backward) and without: the final params and buffers agree within 1e-4 by
#       ckpt_compare's measure (max |a-b|/(|b|+1e-3)), the rebuilt run says so at start and
#       its activation arena peak is below 60% of the stored run's (measured: 0.84 vs 3.37 MiB);
#   (b) the same for a small Glow (model.type=glow, 2 levels x 3 flow steps, width 8): the
#       root seq's forward_inplace / backward_rebuild (ActNorm's data-dependent init on the
#       first batch with global statistics, the splits and top prior keeping what leaves the
#       flow) against the stored path, final params and buffers within 1e-4, the rebuilt
#       run's arena peak below 60% of the stored run's.
# Why 1e-4 and adam_eps = 1: see e2e_rank_invariance.sh; the rebuilt gradients differ from
# the stored ones by float rounding (~1e-6 relative, tests/test_rebuild.c), the size of the
# summation-order differences between 1 and 2 ranks that test bounds with 1e-4.
# usage: bash e2e_rebuild.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"

RTOL=1e-4
SAME=(--config "$CONFIG" --set log.progress=false --set train.seed=3 --set train.adam_eps=1 --set train.eval_every=0
    --set data.test= --set checkpoint.every=5 --set train.steps=5 --set train.batch_size=4)
peak() { sed -n 's/.*activation arena peak \([0-9.]*\) MiB.*/\1/p' "$1"; }

run 0 stored "${MPIEXEC[@]}" "$TRAIN" "${SAME[@]}" --set checkpoint.dir="$WORK/stored"
expect_in "$LOG" "2 rank\(s\) x batch 4 = 8 .*activations stored" "the stored run does not report 2 ranks x batch 4"
P_STORED=$(peak "$LOG")
run 0 rebuilt "${MPIEXEC[@]}" "$TRAIN" "${SAME[@]}" --set checkpoint.dir="$WORK/rebuilt" \
    --set train.rebuild_activations=true
expect_in "$LOG" "2 rank\(s\) x batch 4 = 8 .*activations rebuilt in backward" "the rebuilt run does not say so"
P_REBUILT=$(peak "$LOG")
echo "activation arena peak: stored $P_STORED MiB, rebuilt $P_REBUILT MiB"
[ -n "$P_STORED" ] && [ -n "$P_REBUILT" ] || fail "no activation arena peak in the logs"
awk -v a="$P_REBUILT" -v b="$P_STORED" 'BEGIN { exit !(a < 0.6 * b) }' ||
    fail "the rebuilt run's arena peak $P_REBUILT MiB is not below 60% of the stored run's $P_STORED MiB"
run 0 compare "$CMP" "$(ckpt "$WORK/rebuilt" 5)" "$(ckpt "$WORK/stored" 5)" --rtol $RTOL \
    --sections params,buffers --top 3
cat "$LOG"

GLOW=(--set model.type=glow --set model.n_levels=2 --set model.depth=3 --set model.width=8)
run 0 glow_stored "${MPIEXEC[@]}" "$TRAIN" "${SAME[@]}" "${GLOW[@]}" --set checkpoint.dir="$WORK/glow_stored"
expect_in "$LOG" "glow 1x28x28" "the glow run is not a Glow"
expect_in "$LOG" "2 rank\(s\) x batch 4 = 8 .*activations stored" "the stored glow run does not report 2 ranks x batch 4"
G_STORED=$(peak "$LOG")
run 0 glow_rebuilt "${MPIEXEC[@]}" "$TRAIN" "${SAME[@]}" "${GLOW[@]}" --set checkpoint.dir="$WORK/glow_rebuilt" \
    --set train.rebuild_activations=true
expect_in "$LOG" "2 rank\(s\) x batch 4 = 8 .*activations rebuilt in backward" "the rebuilt glow run does not say so"
G_REBUILT=$(peak "$LOG")
echo "glow activation arena peak: stored $G_STORED MiB, rebuilt $G_REBUILT MiB"
[ -n "$G_STORED" ] && [ -n "$G_REBUILT" ] || fail "no activation arena peak in the glow logs"
awk -v a="$G_REBUILT" -v b="$G_STORED" 'BEGIN { exit !(a < 0.6 * b) }' ||
    fail "the rebuilt glow run's arena peak $G_REBUILT MiB is not below 60% of the stored run's $G_STORED MiB"
run 0 glow_compare "$CMP" "$(ckpt "$WORK/glow_rebuilt" 5)" "$(ckpt "$WORK/glow_stored" 5)" --rtol $RTOL \
    --sections params,buffers --top 3
cat "$LOG"
echo "PASS e2e_rebuild ($(elapsed) s)"
