# e2e_glow.sh — a tiny Glow (configs/glow_tiny.ini: Adamax, warmup, EMA weights,
# LU 1x1 convolutions, affine coupling) trained on 2 ranks for a few hundred steps:
# its final test bpd is at least 1 bpd below its first evaluation, a resume
# continues, and flowdp-sample writes samples at temperatures 0.5 to 1.0.
# Arguments and environment: see tests/e2e_common.sh.
# shellcheck source=tests/e2e_common.sh
source "$(dirname "$0")/e2e_common.sh"
command -v h5dump >/dev/null || skip "h5dump not found (Debian package hdf5-tools)"
GCONFIG=$SRC/configs/glow_tiny.ini
D=$WORK/glow
RUN_TIMEOUT=${E2E_RUN_TIMEOUT:-400}

# 2 ranks x 16 = the config's global batch of 32; 300 steps, evaluations every 100
run 0 glow_300 "${MPIEXEC[@]}" "$TRAIN" --config "$GCONFIG" --set checkpoint.dir="$D" --set log.progress=false \
    --set train.batch_size=16 --set train.steps=300 --set train.eval_every=100 --set data.test_limit=500 \
    --set data.train_limit=2048 --resume none
expect_in "$LOG" "glow 1x28x28" "the run is a Glow"

rows() {
    h5dump -m '%.17g' -d "$1" -y -w 0 "$D/metrics.h5" | sed -n '/DATA {/,/}/p' | sed 's/DATA {//; s/}//' |
        tr ',' '\n' | tr -d ' ' | grep .
}
first=$(rows /test/bpd | head -1)
last=$(rows /test/bpd | tail -1)
note "test bpd: first evaluation $first, last $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b <= a - 1.0) }' ||
    fail "the test bpd fell from $first to $last: less than 1 bpd"

# resume on 1 rank with the same global batch (2 x 16 -> 1 x 32)
run 0 glow_resume "$TRAIN" --config "$GCONFIG" --set checkpoint.dir="$D" --set log.progress=false \
    --set train.steps=320 --set train.eval_every=100 --set data.test_limit=500 --set data.train_limit=2048
expect_in "$LOG" "resumed from .*ckpt_000000300.h5" "resumed from step 300"
expect_in "$LOG" "finished: 320 steps" "finished the resumed run"

run 0 glow_sample "$SAMPLE" "$D/best.h5" -n 6 -t 0.5 -t 0.75 -t 1.0 --threads 1 -o "$WORK/glow.png"
[ "$(head -c 8 "$WORK/glow.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "not a PNG"
run 0 glow_eval "$EVAL" "$D/best.h5" --threads 1 --limit 64
expect_in "$LOG" "glow 1x28x28" "flowdp-eval reads a Glow checkpoint"
echo "PASS e2e_glow"
