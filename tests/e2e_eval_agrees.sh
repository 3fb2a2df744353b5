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
#   - flowdp-sample --interpolate 0 1 --interpolate 5 3 --steps 5 --data <test set> writes a 2 x 5
#     grid of 28x28 tiles 1 pixel apart (57 x 144 pixels); its first and last columns are the test
#     images I and J to within one 8-bit level (RealNVP decodes the encoded dequantized image;
#     the PNG decoded and the idx file read with python3's zlib / gzip), and its middle column
#     differs from both ends.
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
# --- latent interpolation between test images
TEST_SET=$FMNIST/t10k-images-idx3-ubyte.gz
run 0 interp "$SAMPLE" "$C12" -o "$WORK/interp.png" --interpolate 0 1 --interpolate 5 3 --steps 5 \
    --data "$TEST_SET" --threads 1
cat "$LOG"
command -v python3 >/dev/null || skip "python3 not found (checks the interpolation grid)"
python3 - "$WORK/interp.png" "$TEST_SET" <<'PY' || fail "the interpolation grid $WORK/interp.png is wrong (above)"
import gzip, struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, ihdr = 8, b'', None
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR': ihdr = struct.unpack('>IIBBBBB', body)
    if kind == b'IDAT': idat += body
    pos += 12 + n
w, h, depth, ctype = ihdr[:4]
assert (depth, ctype) == (8, 0), 'expected an 8-bit grey PNG, got depth %d colour type %d' % (depth, ctype)
raw, rows, prev = zlib.decompress(idat), [], bytearray(w)
for y in range(h):
    f, line = raw[y * (w + 1)], bytearray(raw[y * (w + 1) + 1:(y + 1) * (w + 1)])
    for x in range(w):
        a, b, c = line[x - 1] if x else 0, prev[x], prev[x - 1] if x else 0
        p = a + b - c
        pred = [0, a, b, (a + b) // 2, a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else b if abs(p - b) <= abs(p - c) else c][f]
        line[x] = (line[x] + pred) & 255
    rows.append(line)
    prev = line
print('interp.png: %d x %d pixels' % (w, h))
assert (w, h) == (5 * 28 + 4, 2 * 28 + 1), 'expected 144 x 61 (2 rows x 5 columns of 28x28, 1 pixel apart)'
idx = gzip.open(sys.argv[2]).read()
def image(i): return idx[16 + 784 * i:16 + 784 * (i + 1)]
def tile(r, c): return bytes(rows[r * 29 + y][c * 29 + x] for y in range(28) for x in range(28))
def diff(a, b): return max(abs(p - q) for p, q in zip(a, b))
for r, (i, j) in enumerate([(0, 1), (5, 3)]):
    d0, d1 = diff(tile(r, 0), image(i)), diff(tile(r, 4), image(j))
    dm = min(diff(tile(r, 2), image(i)), diff(tile(r, 2), image(j)))
    print('row %d: first column vs image %d: max diff %d; last vs image %d: %d; middle vs nearer end: %d' % (r, i, d0, j, d1, dm))
    assert d0 <= 1 and d1 <= 1, 'an end column is more than one level from its test image'
    assert dm > 8, 'the middle column is (nearly) one of the ends'
PY
note "interp.png: 2 pairs x 5 steps, ends match the test images"
echo "PASS e2e_eval_agrees ($(elapsed) s)"
