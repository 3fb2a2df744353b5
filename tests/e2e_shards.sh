#!/usr/bin/env bash
# e2e_shards.sh — training and evaluation on packed HDF5 shards, through the real programs:
#   1. flowdp-pack packs 512 Fashion-MNIST training and 64 test images (6 + 1 shards, 2 threads,
#      progress bar forced on); --verify passes; h5py reads a shard as is (shape, dtype, attributes).
#   2. 6 steps on the shards end bit-identical (ckpt_compare --exact) to 6 steps on the same IDX
#      images in memory: the streaming reader delivers exactly the sampler's batches.
#   3. with augmentation on (hflip, translate 0.1): 1 rank x 16 and 2 ranks x 8 agree at step 5
#      within 1e-4 (as e2e_rank_invariance.sh, same settings and reasons: adam_eps = 1, seed 3),
#      the 2-rank checkpoint resumed on 1 rank agrees at step 6, and a 1-rank run stopped at step 5
#      and resumed to 6 is bit-identical to the uninterrupted one (exact resume on shards).
#      Why step 6 and not 10: this tiny model amplifies float summation-order differences (see
#      e2e_rank_invariance.sh); on the augmented data the measure was 2.3e-6 at step 5, 3.7e-5 at
#      step 7 and 1.1e-4 at step 10 (Debug+sanitizer build), so step 10 would test the chaos, not
#      the data path.
#   4. flowdp-eval on the shards (2 ranks, streamed) gives the bpd flowdp-eval gives on the IDX file.
#   5. bad input, each one line naming the file, exit 2: an index listing a missing shard
#      (flowdp-train), a shard whose pixels changed (checksum; flowdp-eval on 2 ranks, flowdp-train,
#      which starts when [data] verify = false), a truncated
#      .npz (flowdp-pack, which leaves no index or shard behind).
# usage: bash e2e_shards.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        with FLOWDP_PACK = the flowdp-pack binary (default: beside FLOWDP_TRAIN)
source "$(dirname "$0")/e2e_common.sh" "$@"

PACK=${FLOWDP_PACK:-$(dirname "$TRAIN")/flowdp-pack}
[ -x "$PACK" ] || fail "$PACK is not an executable"
PY=/usr/bin/python3
D=$WORK/packed

# ---- 1. pack ----
run 0 pack_train "$PACK" --out "$D" --limit 512 --per-shard 100 -j 2 --progress "$FMNIST/train-images-idx3-ubyte.gz"
expect_in "$LOG" "packed 512 images of 28x28x1 \(HxWxC\) into 6 shard\(s\)" "flowdp-pack did not pack 512 images into 6 shards"
expect_in "$LOG" "img/s \| ETA" "no progress bar with --progress"
run 0 pack_test "$PACK" --out "$D" --split test --limit 64 --no-progress "$FMNIST/t10k-images-idx3-ubyte.gz"
run 0 verify "$PACK" --verify "$D/train.index"
expect_in "$LOG" "6 shard\(s\), 512 images of 28x28x1 \(HxWxC\), structure and checksums OK" "--verify"
if "$PY" -c 'import h5py' 2>/dev/null; then
    run 0 h5py "$PY" -c "
import h5py, sys
f = h5py.File('$D/train-00005-of-00006.h5', 'r')
im, lb = f['images'], f['labels']
assert im.shape == (12, 28, 28, 1) and im.dtype == 'uint8', (im.shape, im.dtype)
assert lb.shape == (12,) and lb.dtype == 'int32'
a = dict(f.attrs)
assert a['count'] == 12 and a['first_index'] == 500 and a['split'] == 'train', a
assert 0 <= lb[...].min() and lb[...].max() <= 9
print('h5py OK', im.chunks)
"
else
    note "python3-h5py not installed: the h5py check is skipped"
fi

HDF5=(--set data.format=hdf5 --set data.train="$D/train.index" --set data.test="$D" --set data.train_limit=0
      --set data.test_limit=0)

# ---- 2. the same bits as the in-memory path ----
train 0 idx6 "$WORK/idx6" --set train.steps=6
train 0 h5_6 "$WORK/h5_6" --set train.steps=6 "${HDF5[@]}"
expect_in "$LOG" "data wait: .* s of .* s training \(.*%\)" "no data-wait summary"
run 0 compare_idx_h5 "$CMP" "$(ckpt "$WORK/idx6" 6)" "$(ckpt "$WORK/h5_6" 6)" --exact --sections params,buffers,optimizer
cat "$LOG"

# ---- 3. rank invariance and exact resume with augmentation ----
SAME=("${HDF5[@]}" --set data.hflip=true --set data.translate=0.1 --set train.seed=3 --set train.adam_eps=1
      --set train.eval_every=0 --set data.test= --set checkpoint.every=5)
train 0 aug_one "$WORK/one" "${SAME[@]}" --set train.batch_size=16 --set train.steps=6
run 0 aug_two "${MPIEXEC[@]}" "$TRAIN" --config "$CONFIG" --set checkpoint.dir="$WORK/two" --set log.progress=false \
    "${SAME[@]}" --set train.batch_size=8 --set train.steps=5
expect_in "$LOG" "2 rank\(s\) x batch 8 = 16" "the 2-rank run does not report 2 ranks x batch 8"
run 0 compare_aug_5 "$CMP" "$(ckpt "$WORK/one" 5)" "$(ckpt "$WORK/two" 5)" --rtol 1e-4 --sections params,buffers --top 3
cat "$LOG"
train 0 aug_resume_1rank "$WORK/two" "${SAME[@]}" --set train.batch_size=8 --set train.steps=6 --resume auto
expect_in "$LOG" "resumed from $(ckpt "$WORK/two" 5) at step 5" "did not resume the 2-rank checkpoint"
expect_in "$LOG" "warn.*global batch 16" "no warning that the checkpoint's global batch 16 is kept"
run 0 compare_aug_6 "$CMP" "$(ckpt "$WORK/one" 6)" "$(ckpt "$WORK/two" 6)" --rtol 1e-4 --sections params,buffers --top 3
cat "$LOG"
train 0 aug_part1 "$WORK/part" "${SAME[@]}" --set train.batch_size=16 --set train.steps=5
train 0 aug_part2 "$WORK/part" "${SAME[@]}" --set train.batch_size=16 --set train.steps=6 --resume auto
expect_in "$LOG" "resumed from $(ckpt "$WORK/part" 5) at step 5" "did not resume at step 5"
run 0 compare_resume "$CMP" "$(ckpt "$WORK/one" 6)" "$(ckpt "$WORK/part" 6)" --exact --sections params,buffers,optimizer
cat "$LOG"

# ---- 4. evaluation streams the shards and agrees with the in-memory set ----
run 0 eval_idx "$EVAL" "$(ckpt "$WORK/idx6" 6)" --data "$FMNIST/t10k-images-idx3-ubyte.gz" --format idx --limit 64 \
    --batch 16 --json "$WORK/e_idx.json"
run 0 eval_h5 "${MPIEXEC[@]}" "$EVAL" "$(ckpt "$WORK/idx6" 6)" --data "$D/test.index" --format hdf5 --batch 16 \
    --json "$WORK/e_h5.json"
a=$(json_num "$WORK/e_idx.json" bpd)
b=$(json_num "$WORK/e_h5.json" bpd)
echo "test bpd: idx $a, shards on 2 ranks $b"
[ "$(json_num "$WORK/e_h5.json" images)" = 64 ] || fail "flowdp-eval on shards did not evaluate 64 images"
close "$a" "$b" 1e-6 || fail "bpd on shards ($b) differs from bpd on IDX ($a)"

# ---- 5. bad input ----
cp -r "$D" "$WORK/missing"
rm "$WORK/missing/train-00003-of-00006.h5"
train 2 missing_shard "$WORK/m" --set train.steps=2 "${HDF5[@]}" --set data.train="$WORK/missing/train.index"
expect_in "$LOG" "train-00003-of-00006\.h5: shard listed in .*train\.index: No such file" "missing shard not named"
cp -r "$D" "$WORK/changed"
if "$PY" -c 'import h5py' 2>/dev/null; then
    "$PY" -c "
import h5py
f = h5py.File('$WORK/changed/test-00000-of-00001.h5', 'r+')
f['images'][40, 14, 14, 0] ^= 0x20
"
    run 2 changed_shard "${MPIEXEC[@]}" "$EVAL" "$(ckpt "$WORK/idx6" 6)" --data "$WORK/changed/test.index" --format hdf5
    expect_in "$LOG" "test-00000-of-00001\.h5: shard checksum mismatch" "changed shard not caught"
    # flowdp-train checks the checksums at start too, unless [data] verify = false
    train 2 changed_train "$WORK/c1" --set train.steps=1 --set train.eval_every=0 "${HDF5[@]}" \
        --set data.test="$WORK/changed/test.index"
    expect_in "$LOG" "test-00000-of-00001\.h5: shard checksum mismatch" "flowdp-train did not catch the changed shard"
    train 0 changed_noverify "$WORK/c2" --set train.steps=1 --set train.eval_every=0 "${HDF5[@]}" \
        --set data.test="$WORK/changed/test.index" --set data.verify=false
fi
head -c 3000 /dev/urandom >"$WORK/rand.bin"
printf 'PK\003\004' | cat - "$WORK/rand.bin" >"$WORK/train_data_batch_1.npz"
run 2 bad_npz "$PACK" --out "$WORK/badout" "$WORK/train_data_batch_1.npz"
expect_in "$LOG" "^flowdp-pack: .*train_data_batch_1\.npz: " "bad npz not named"
[ "$(wc -l <"$LOG")" = 1 ] || fail "flowdp-pack printed more than one line for a bad npz"
[ -z "$(ls "$WORK/badout" 2>/dev/null)" ] || fail "flowdp-pack left files behind: $(ls "$WORK/badout")"
echo "PASS e2e_shards ($(elapsed) s)"
