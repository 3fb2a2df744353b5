# shellcheck shell=bash
# cases_50_more.sh — adversarial rows (m50_*), written independently of the rows before:
# FIFOs where files are expected, paths with newlines or too long for a temporary name,
# outputs that collide with inputs or with the run's own outputs, damaged or foreign files
# inside a checkpoint directory (resume auto, keep_last, best.h5), resume with another image
# size / number of ranks, inputs that differ on one MPI rank, npz members with a bad CRC,
# image-folder class names that break the index, flowdp-bench's loosely parsed numbers.
# Every row is written to what the promise demands (README "The programs": one stderr line
# naming the file and what is wrong, exit 2 before any work, no pre-existing file changed),
# so a failing row documents a bug. Rows that could hang run under a 15 s guard (exit 124 =
# "hung"; run.sh then says "killed after $BAD_TIMEOUT s", but the guard fired after 15 s).
# A path with a newline: the ERE matches the first line; the row fails on the line count.
M=$W/m50
mkdir -p "$M"
M50_QUIET=(env OMPI_MCA_orte_execute_quiet=1)
M50_HG=(timeout -k 2 15) # hang guard
M50_MPI3=(mpiexec -n 3 --allow-run-as-root --oversubscribe)

# ---- inputs ------------------------------------------------------------------------------------
python3 - "$M" <<'PY'
import gzip, struct, sys, warnings, zipfile, zlib
warnings.simplefilter('ignore')
d = sys.argv[1]
def idx(name, n, h, w, fill=7):
    open(d + '/' + name, 'wb').write(struct.pack('>IIII', 0x803, n, h, w) + bytes([fill]) * (n * h * w))
idx('one1x1-images-idx3-ubyte', 1, 1, 1)
idx('four-images-idx3-ubyte', 4, 28, 28)
idx('s14-images-idx3-ubyte', 16, 14, 14)
idx('s32-images-idx3-ubyte', 16, 32, 32)
idx('n16-images-idx3-ubyte', 16, 28, 28)
idx('n64-images-idx3-ubyte', 64, 28, 28)
idx('dtrain-images-idx3-ubyte', 16, 28, 28)
idx('lab15-images-idx3-ubyte', 16, 28, 28)
open(d + '/lab15-labels-idx1-ubyte', 'wb').write(struct.pack('>II', 0x801, 15) + bytes(15))
idx('labmagic-images-idx3-ubyte', 16, 28, 28)
open(d + '/labmagic-labels-idx1-ubyte', 'wb').write(struct.pack('>IIII', 0x803, 16, 1, 1) + bytes(16))
open(d + '/zero-images-idx3-ubyte', 'wb').write(struct.pack('>IIII', 0x803, 0, 28, 28))
# a moderate gzip bomb: 256 MiB of zeros behind a header that promises one 28x28 image
co = zlib.compressobj(9, zlib.DEFLATED, 31)
with open(d + '/bomb-images-idx3-ubyte.gz', 'wb') as f:
    f.write(co.compress(struct.pack('>IIII', 0x803, 1, 28, 28)))
    z = bytes(1 << 20)
    for i in range(256): f.write(co.compress(z))
    f.write(co.flush())
# npz members
def npy(descr, shape):
    h = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)).encode()
    h += b' ' * ((64 - (10 + len(h) + 1) % 64) % 64) + b'\n'
    return b'\x93NUMPY\x01\x00' + len(h).to_bytes(2, 'little') + h
def npz(name, members):
    with zipfile.ZipFile(d + '/' + name, 'w') as z:
        for k, v in members: z.writestr(k, v)
npz('crc.npz', [('data.npy', npy('|u1', '(20, 12)') + bytes(range(240)))])
b = bytearray(open(d + '/crc.npz', 'rb').read()); i = b.find(b'\x93NUMPY'); b[i + 200] ^= 0xff
open(d + '/crc.npz', 'wb').write(b)   # the stored member's bytes no longer match its CRC-32
npz('labu64.npz', [('data.npy', npy('|u1', '(2, 12)') + bytes(24)),
                   ('labels.npy', npy('<u8', '(2,)') + struct.pack('<QQ', 2**63 + 5, 2))])
npz('lab2d.npz', [('data.npy', npy('|u1', '(2, 12)') + bytes(24)),
                  ('labels.npy', npy('<i8', '(2, 1)') + struct.pack('<qq', 1, 2))])
npz('dupmember.npz', [('data.npy', npy('|u1', '(2, 12)') + bytes(24)), ('data.npy', npy('|u1', '(3, 12)') + bytes(36))])
npz('zerorows.npz', [('data.npy', npy('|u1', '(0, 12)'))])
# a small valid PNG (4x4 RGB), for image folders
def chunk(t, data): return struct.pack('>I', len(data)) + t + data + struct.pack('>I', zlib.crc32(t + data) & 0xffffffff)
raw = b''.join(b'\x00' + bytes([40, 80, 120]) * 4 for _ in range(4))
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 4, 4, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')
import os
for folder, classes in (('im_fifo', ['a', 'b']), ('im_nl', ['a', 'b', 'c\nshard evil.h5 5'])):
    for c in classes:
        os.makedirs(d + '/' + folder + '/' + c, exist_ok=True)
        for k in (1, 2): open(d + '/' + folder + '/' + c + '/%d.png' % k, 'wb').write(png)
PY
mkfifo "$M/fifo.ini" "$M/fifo-images-idx3-ubyte" "$M/im_fifo/a/3.png"
printf '[MODEL]\ntype = realnvp\n' >"$M/upper_section.ini"
python3 -c "print('[model' + 'x' * 1000 + ']\ntype = realnvp')" >"$M/long_section.ini"
ln -s loop_b.ini "$M/loop_a.ini" && ln -s loop_a.ini "$M/loop_b.ini"
printf '[train]\r\nlr = abc\r\n' >"$M/crlf_bad.ini"
printf '\xef\xbb\xbf[train]\nlr = abc\n' >"$M/bom_bad.ini"
# CIFAR-10: a training directory without data_batch_3.bin, one where it is a directory
mkdir -p "$M/cifar_missing" "$M/cifar_dir/data_batch_3.bin"
for i in 1 2 4 5; do
    head -c 3073 /dev/zero >"$M/cifar_missing/data_batch_$i.bin"
    head -c 3073 /dev/zero >"$M/cifar_dir/data_batch_$i.bin"
done
# packed shards (512 images, 3 shards), a copy with a FIFO for shard 2, one with a directory,
# one with a damaged shard 2, an index that states the height twice
"$PACK" --out "$M/sh" --per-shard 200 --limit 512 --no-progress "$FMNIST/train-images-idx3-ubyte.gz" >/dev/null 2>&1 ||
    echo "cases_50: could not pack the shard set"
M50_S0=train-00000-of-00003.h5 M50_S1=train-00001-of-00003.h5 M50_S2=train-00002-of-00003.h5
for v in sh_fifo sh_dir sh_sum; do
    mkdir -p "$M/$v" && cp "$M/sh/train.index" "$M/sh/$M50_S0" "$M/sh/$M50_S2" "$M/$v/"
done
mkfifo "$M/sh_fifo/$M50_S1"
mkdir -p "$M/sh_dir/$M50_S1"
cp "$M/sh/$M50_S1" "$M/sh_sum/$M50_S1" && printf '\x5a' | dd of="$M/sh_sum/$M50_S1" bs=1 seek=80000 conv=notrunc status=none
sed 's/^channels 1$/channels 1\nheight 14/' "$M/sh/train.index" >"$M/sh/dupkey.index"
# outputs and files that collide with them
cp "$CONFIG" "$M/cfg_metrics.ini"
cp "$CKPT" "$M/resume_copy.h5"
printf 'my notes\n' >"$M/notes_resume.txt"
mkdir -p "$M/ck_bestdir/best.h5" "$M/ck_besttext" "$M/ck_ckpttext" "$M/o_own"
printf 'my notes about the best run\n' >"$M/ck_besttext/best.h5"
printf 'my notes\n' >"$M/ck_ckpttext/ckpt_000000004.h5"
cp "$M/n16-images-idx3-ubyte" "$M/o_own/train-00000-of-00001.h5" # an IDX file named like pack's output
M50_L250=$(printf 'j%.0s' $(seq 250))                              # a name that fits, its temporary name does not
M50_LONG=$M/no_such
for _ in $(seq 15); do M50_LONG=$M50_LONG/$(printf 'p%.0s' $(seq 250)); done
# run CMD with the args after --r1 only on MPI rank 1 (a file that differs on one node)
cat >"$M/rank1.sh" <<'SH'
#!/bin/bash
r=${OMPI_COMM_WORLD_RANK:-0} a=() extra=0
for x in "$@"; do
    if [ "$x" = --r1 ]; then extra=1; continue; fi
    if [ $extra = 1 ] && [ "$r" != 1 ]; then continue; fi
    a+=("$x")
done
exec "${a[@]}"
SH
chmod +x "$M/rank1.sh"
# a checkpoint directory whose newest-named entry is damaged: resume auto, keep_last 1, 8 steps;
# the row checks that the run's own last checkpoint survives the pruning
M50_PRUNE=(bash -c 'd=$1 ck=$2 how=$3; shift 3; mkdir -p "$d" && cp "$ck" "$d/ckpt_000000003.h5" || exit 9
    case $how in cut) head -c 5000 "$ck" >"$d/ckpt_000000100.h5" ;; dir) mkdir -p "$d/ckpt_000000100.h5" ;; esac
    "$@" || exit
    [ -e "$d/ckpt_000000008.h5" ] || { echo "the run exited 0 but pruning deleted its last checkpoint ckpt_000000008.h5; left: $(ls "$d" | tr "\n" " ")" >&2; exit 9; }' prune)

# ---- config: odd values and odd files --------------------------------------------------------
bad m50_config_fifo 2 'fifo\.ini' -- "${M50_HG[@]}" "$TRAIN" --config "$M/fifo.ini"
bad m50_config_lr_nan 2 '^flowdp-train: --set: \[train\] lr = nan: not a finite number$' -- "${TR[@]}" --set train.lr=nan
bad m50_config_lr_1e400 2 '^flowdp-train: --set: \[train\] lr = 1e400: not a finite number$' -- "${TR[@]}" --set train.lr=1e400
bad m50_config_lr_minus_zero 2 '\[train\] lr = -0: out of range' -- "${TR[@]}" --set train.lr=-0
bad m50_config_seed_hex 2 '\[train\] seed = 0x10: not an integer' -- "${TR[@]}" --set train.seed=0x10
bad m50_config_fullwidth_digit 2 '\[train\] batch_size = ８: not a number' -- "${TR[@]}" --set train.batch_size=８
bad m50_config_upper_section 2 'upper_section\.ini:1: unknown section \[MODEL\] \(did you mean \[model\]\?\)' -- \
    "$TRAIN" --config "$M/upper_section.ini"
bad m50_config_long_section_line 2 'long_section\.ini:1: ' -- "$TRAIN" --config "$M/long_section.ini"
bad m50_config_dev_zero 2 'config /dev/zero: larger than 16 MiB' -- "$TRAIN" --config /dev/zero
bad m50_config_symlink_loop 2 'loop_a\.ini: Too many levels of symbolic links' -- "$TRAIN" --config "$M/loop_a.ini"
bad m50_config_crlf_bad_value 2 'crlf_bad\.ini:2: \[train\] lr = abc: not a number$' -- "$TRAIN" --config "$M/crlf_bad.ini"
bad m50_config_bom_bad_value 2 'bom_bad\.ini:2: \[train\] lr = abc: not a number$' -- "$TRAIN" --config "$M/bom_bad.ini"
bad m50_config_path_newline 2 'm50/no' -- "$TRAIN" --config "$M/no"$'\n'"such.ini"
# warmup longer than the run: an error when steps is given, silently accepted when steps come from epochs
bad m50_config_warmup_vs_epochs 2 'warmup_steps = 1000 is larger than' --absent @CK@/ckpt_000000001.h5 -- \
    "${TR[@]}" --set train.steps=0 --set train.epochs=0.01 --set train.warmup_steps=1000
# device from the config: the message should name the config key, not a --device option flowdp-train lacks
bad m50_config_device_cuda_origin 2 '(--set train\.device=cuda|\[train\] device)' -- "${TR[@]}" --set train.device=cuda
# a long path (under the 4095-character limit): the 1024-byte message loses what is wrong
bad m50_config_long_path_reason 2 'No such file or directory' -- "${TR[@]}" --set data.train="$M50_LONG/train-images-idx3-ubyte"

# ---- datasets ---------------------------------------------------------------------------------
bad m50_idx_fifo_train 2 'fifo-images-idx3-ubyte' -- "${M50_HG[@]}" "${TR[@]}" --set data.train="$M/fifo-images-idx3-ubyte"
bad m50_idx_fifo_eval 2 'fifo-images-idx3-ubyte' -- "${M50_HG[@]}" "$EVAL" "$CKPT" --data "$M/fifo-images-idx3-ubyte"
bad m50_idx_fifo_pack 2 'fifo-images-idx3-ubyte' --absent "$M/o_fifoidx/train.index" -- \
    "${M50_HG[@]}" "$PACK" --out "$M/o_fifoidx" "$M/fifo-images-idx3-ubyte"
bad m50_idx_zero_images 2 'zero-images-idx3-ubyte: header declares 0 images' -- "${TR[@]}" --set data.train="$M/zero-images-idx3-ubyte"
bad m50_idx_1x1_images 2 'one1x1-images-idx3-ubyte|1x1' -- "${TR[@]}" --set data.train="$M/one1x1-images-idx3-ubyte" --set data.test=
bad m50_idx_labels_short 2 'lab15-labels-idx1-ubyte: holds 15 labels but .*lab15-images-idx3-ubyte holds 16 images' -- \
    "${TR[@]}" --set data.train="$M/lab15-images-idx3-ubyte"
bad m50_idx_labels_wrong_magic 2 'labmagic-labels-idx1-ubyte: wrong magic' -- "$EVAL" "$CKPT" --data "$M/labmagic-images-idx3-ubyte"
bad m50_idx_test_shape 2 'test set .*s14-images-idx3-ubyte is 1x14x14 but the training set is 1x28x28' -- \
    "${TR[@]}" --set data.test="$M/s14-images-idx3-ubyte"
bad m50_idx_too_few_images 2 'four-images-idx3-ubyte: 4 training images cannot fill one global batch of 8' -- \
    "${TR[@]}" --set data.train="$M/four-images-idx3-ubyte"
bad m50_idx_gz_bomb 2 'bomb-images-idx3-ubyte\.gz: [0-9]+ trailing bytes' -- "$EVAL" "$CKPT" --data "$M/bomb-images-idx3-ubyte.gz"
bad m50_eval_other_image_size 2 's32-images-idx3-ubyte holds 1x32x32 images, the model in .* takes 1x28x28' -- \
    "$EVAL" "$CKPT" --data "$M/s32-images-idx3-ubyte"
bad m50_cifar_missing_batch 2 'cifar_missing/data_batch_3\.bin: missing CIFAR-10 file' -- \
    "$PACK" --out "$M/o_cifar" "$M/cifar_missing"
bad m50_cifar_batch_is_dir 2 'cifar_dir/data_batch_3\.bin: not a regular file' -- \
    "${TR[@]}" --set data.format=cifar10 --set data.train="$M/cifar_dir" --set data.test=
# an IDX file given as a shard index: fine for 16 images, "...:2: line too long" for 64
bad m50_eval_hdf5_on_idx_file 2 'n16-images-idx3-ubyte.*not a flowdp shard index' -- \
    "$EVAL" "$CKPT" --format hdf5 --data "$M/n16-images-idx3-ubyte"
bad m50_eval_hdf5_on_idx_file_64 2 'n64-images-idx3-ubyte.*not a flowdp shard index' -- \
    "$EVAL" "$CKPT" --format hdf5 --data "$M/n64-images-idx3-ubyte"
bad m50_train_hdf5_on_idx_file_64 2 'n64-images-idx3-ubyte.*not a flowdp shard index' -- \
    "${TR[@]}" --set data.format=hdf5 --set data.train="$M/n64-images-idx3-ubyte" --set data.test=
bad m50_eval_data_newline 2 'm50/no' -- "$EVAL" "$CKPT" --data "$M/no"$'\n'"such-images-idx3-ubyte"

# ---- npz, image folders, shards -------------------------------------------------------------
bad m50_npz_crc_mismatch 2 'crc\.npz.*(CRC|crc|checksum)' --absent "$M/o_crc/train.index" -- "$PACK" --out "$M/o_crc" "$M/crc.npz"
bad m50_npz_label_u64_value 2 'labu64\.npz: labels\.npy\[0\] = 9223372036854775813' -- "$PACK" --out "$M/o_labu64" "$M/labu64.npz"
bad m50_npz_labels_2d 2 'lab2d\.npz: labels\.npy .*(1-D|one dimension|\(N,\)|2 dims.*expected 1)' -- "$PACK" --out "$M/o_lab2d" "$M/lab2d.npz"
bad m50_npz_duplicate_member 2 'dupmember\.npz: .*(duplicate|twice|more than once)' -- "$PACK" --out "$M/o_dup" "$M/dupmember.npz"
bad m50_npz_zero_rows 2 'zerorows\.npz: no images to pack' -- "$PACK" --out "$M/o_zero" "$M/zerorows.npz"
bad m50_npz_path_newline 2 'm50/no' -- "$PACK" --out "$M/o_nl" "$M/no"$'\n'"such.npz"
bad m50_pack_fifo_named_png 2 'im_fifo/a/3\.png' --absent "$M/o_fifopng/train.index" -- \
    "${M50_HG[@]}" "$PACK" --out "$M/o_fifopng" --size 4 "$M/im_fifo"
# a class folder whose name holds a newline: pack writes an index its own --verify refuses
bad m50_pack_class_newline 2 'im_nl/c' --absent "$M/o_classnl/train.index" -- "$PACK" --out "$M/o_classnl" --size 4 "$M/im_nl"
bad m50_pack_force_own_input 2 'o_own/train-00000-of-00001\.h5.*input' -- \
    "$PACK" --out "$M/o_own" --force --format idx "$M/o_own/train-00000-of-00001.h5"
bad m50_shard_fifo_verify 2 'sh_fifo/train-00001-of-00003\.h5' -- "${M50_HG[@]}" "$PACK" --verify "$M/sh_fifo/train.index"
bad m50_shard_fifo_eval 2 'sh_fifo/train-00001-of-00003\.h5' -- \
    "${M50_HG[@]}" "$EVAL" "$CKPT" --format hdf5 --data "$M/sh_fifo/train.index"
bad m50_shard_is_directory 2 'sh_dir/train-00001-of-00003\.h5: .*(directory|not a regular file)' -- "$PACK" --verify "$M/sh_dir/train.index"
bad m50_index_duplicate_height 2 'dupkey\.index:[0-9]+: .*height' -- "$PACK" --verify "$M/sh/dupkey.index"

# ---- checkpoints and resume ----------------------------------------------------------------------
bad m50_resume_glow_into_realnvp 2 "cannot resume: checkpoint .*glow/ckpt_000000002\.h5: checkpoint is of another model: model_type 'glow'" -- \
    "${TR[@]}" --resume "$GLOW_CKPT"
bad m50_resume_other_mid_channels 2 'cannot resume: .*has shape \[4, 1, 1, 1\] in the checkpoint but \[8, 1, 1, 1\]' -- \
    "${TR[@]}" --resume "$CKPT" --set model.mid_channels=8
# a 1x28x28 RealNVP checkpoint resumed on 32x32 images: trains on (flowdp-eval refuses the same pair)
bad m50_resume_other_image_size 2 'ckpt_000000003\.h5.*28x28.*32x32|32x32.*28x28' --absent @CK@/ckpt_000000012.h5 -- \
    "${TR[@]}" --resume "$CKPT" --set data.train="$M/s32-images-idx3-ubyte" --set data.test=
bad m50_resume_newline 2 'm50/no' -- "${TR[@]}" --resume "$M/no"$'\n'"such.h5"
# resume with a [log] metrics that is a text file: moved aside without --force (a new run refuses it)
bad m50_resume_metrics_text 2 'notes_resume\.txt: not a flowdp metrics file' -- \
    "${TR[@]}" --resume "$CKPT" --set log.metrics="$M/notes_resume.txt"
# a damaged or foreign entry named like a newer checkpoint: keep_last 1 then deletes the run's own last checkpoint
bad m50_prune_damaged_newer 0 'warning: skipping invalid checkpoint: .*ckpt_000000100\.h5' -- \
    "${M50_PRUNE[@]}" @CK@ "$CKPT" cut "${TR[@]}" --set checkpoint.keep_last=1 --set train.steps=8 --set train.eval_every=0
bad m50_prune_directory_named_ckpt 2 'ckpt_000000100\.h5 is a directory, not a checkpoint file' -- \
    "${M50_PRUNE[@]}" @CK@ "$CKPT" dir "${TR[@]}" --set checkpoint.keep_last=1 --set train.steps=8 --set train.eval_every=0
# best.h5 in the checkpoint directory: a directory (found after training: exit 5) or a text file (replaced)
bad m50_best_is_directory 2 'ck_bestdir/best\.h5' --absent "$M/ck_bestdir/ckpt_000000004.h5" -- \
    "${TR[@]}" --set checkpoint.dir="$M/ck_bestdir" --set train.steps=6
bad m50_best_is_text 2 'ck_besttext/best\.h5' -- "${TR[@]}" --set checkpoint.dir="$M/ck_besttext" --set train.steps=6
bad m50_ckpt_name_is_text 2 'ck_ckpttext/ckpt_000000004\.h5' -- "${TR[@]}" --set checkpoint.dir="$M/ck_ckpttext" --set train.steps=6

# ---- [log] metrics colliding with an input or with the run's own outputs ---------------------------
bad m50_metrics_is_config_force 2 'cfg_metrics\.ini.*(config|input)' -- \
    "$TRAIN" --config "$M/cfg_metrics.ini" --set checkpoint.dir=@CK@ --set log.progress=false \
    --set log.metrics="$M/cfg_metrics.ini" --force --set train.steps=2
bad m50_metrics_is_train_data_force 2 'dtrain-images-idx3-ubyte.*(training set|input)' -- \
    "${TR[@]}" --set data.train="$M/dtrain-images-idx3-ubyte" --set data.test= \
    --set log.metrics="$M/dtrain-images-idx3-ubyte" --force --set train.steps=2
bad m50_metrics_is_resume_ckpt_force 2 'resume_copy\.h5.*(checkpoint|input)' -- \
    "${TR[@]}" --resume "$M/resume_copy.h5" --set log.metrics="$M/resume_copy.h5" --force --set train.steps=4
bad m50_metrics_is_own_checkpoint 2 'metrics .*ckpt_000000004\.h5' -- \
    "${TR[@]}" --set log.metrics=@CK@/ckpt_000000004.h5 --set train.steps=8
bad m50_metrics_is_own_best 2 'metrics .*best\.h5' -- "${TR[@]}" --set log.metrics=@CK@/best.h5 --set train.steps=8

# ---- output names: the name fits, its temporary name (NAME.tmp.PID.K) does not -----------------
bad m50_eval_json_name_too_long 2 'jjjj\.json: the file name is too long' --absent "$M/$M50_L250.json" -- \
    "$EVAL" "$CKPT" --limit 2 --threads 1 --json "$M/$M50_L250.json"
bad m50_sample_out_name_too_long 2 'jjjj\.png: the file name is too long' --absent "$M/$M50_L250.png" -- \
    "$SAMPLE" "$CKPT" -n 1 --threads 1 -o "$M/$M50_L250.png"
bad m50_eval_ckpt_newline 2 'm50/no' -- "$EVAL" "$M/no"$'\n'"such.h5"
bad m50_sample_out_newline 2 'm50/no' -- "$SAMPLE" "$CKPT" -o "$M/no"$'\n'"such/g.png"

# ---- eval / sample options ---------------------------------------------------------------------
bad m50_sample_t_nan 2 '^flowdp-sample: -t nan: expected a temperature from 0 to 10$' -- "$SAMPLE" "$CKPT" -o "$M/t.png" -t nan
bad m50_sample_t_inf 2 '^flowdp-sample: -t inf: expected a temperature' -- "$SAMPLE" "$CKPT" -o "$M/t.png" -t inf
bad m50_sample_device_empty 2 "^flowdp-sample: unknown device ''" -- "$SAMPLE" "$CKPT" -o "$M/t.png" --device ''
bad m50_eval_format_upper 2 "unknown dataset format 'IDX'" -- "$EVAL" "$CKPT" --format IDX

# ---- MPI: 2 and 3 ranks --------------------------------------------------------------------------
bad m50_mpi_resume_3_ranks 2 '^flowdp-train: cannot resume: .*global batch 8 cannot be split over 3 ranks' -- \
    "${M50_QUIET[@]}" "${M50_MPI3[@]}" "${TR[@]}" --resume "$CKPT"
bad m50_mpi_shard_checksum_rank1 2 '^flowdp-train: .*sh_sum/train-00001-of-00003\.h5: shard checksum mismatch' -- \
    "${M50_QUIET[@]}" "${MPIEXEC[@]}" "${TR[@]}" --set data.format=hdf5 --set data.train="$M/sh_sum/train.index" \
    --set data.test="$M/sh/train.index"
# a resume warning is printed by every rank (one line expected, as for errors)
bad m50_mpi_resume_warning_once 0 'warning: .*global batch 8; continuing with 2 rank' -- \
    "${M50_QUIET[@]}" "${MPIEXEC[@]}" "${TR[@]}" --resume "$CKPT" --set train.steps=4 --set train.eval_every=0
# the test set has another shape on rank 1 only (a node-local copy that differs): rank 1 quits
# silently, rank 0 waits in a collective
bad m50_mpi_rank1_test_shape 2 's14-images-idx3-ubyte is 1x14x14 but the training set is 1x28x28' -- \
    "${M50_HG[@]}" "${M50_QUIET[@]}" "${MPIEXEC[@]}" "$M/rank1.sh" "${TR[@]}" --r1 --set data.test="$M/s14-images-idx3-ubyte"
# the model differs on rank 1: an MPI_ERR_TRUNCATE "fatal" (exit 1) instead of a one-line bad-input error
bad m50_mpi_rank1_model_differs 2 'mid_channels|differ' -- \
    "${M50_HG[@]}" "${M50_QUIET[@]}" "${MPIEXEC[@]}" "$M/rank1.sh" "${TR[@]}" --r1 --set model.mid_channels=8

# ---- flowdp-bench: numbers parsed with atoi/atof -----------------------------------------------
if [ -x "$BENCH" ]; then
    bad m50_bench_batch_trailing_junk 2 '^flowdp-bench: --batch 4x' -- "$BENCH" --batch 4x --steps 2 --warmup 0 --threads 1
    bad m50_bench_batch_abc 2 '^flowdp-bench: --batch abc' -- "$BENCH" --batch abc --steps 2 --warmup 0
    bad m50_bench_blocks_zero 2 '^flowdp-bench: .*blocks' -- "$BENCH" --blocks 0 --batch 2 --steps 2 --warmup 0 --threads 1
    bad m50_bench_threads_negative 2 '^flowdp-bench: --threads -4' -- "$BENCH" --threads -4 --batch 2 --steps 2 --warmup 0
    bad m50_bench_steps_wraps 2 '^flowdp-bench: --steps 4294967298' -- "$BENCH" --steps 4294967298 --batch 2 --warmup 0 --threads 1
    bad m50_bench_translate_nan 2 '^flowdp-bench: .*translate' -- "$BENCH" --data "$M/sh/train.index" --translate nan --steps 2 --batch 8
    bad m50_bench_in_huge 2 '^flowdp-bench: --in 1x65536x65536' -- "$BENCH" --in 1x65536x65536 --batch 2 --steps 2 --warmup 0
    bad m50_bench_readers_too_many 2 '^flowdp-bench: .*cannot fill one global batch of 8 x 200' -- \
        "$BENCH" --data "$M/sh/train.index" --steps 2 --batch 8 --readers 200
    bad m50_bench_scales_zero 2 '^flowdp-bench: --scales 0: expected an integer from 1 to 16$' -- "$BENCH" --scales 0 --batch 2 --steps 2 --warmup 0
    bad m50_bench_data_translate_range 2 '^flowdp-bench: --translate 0.6: expected a number from 0 to 0.5$' -- \
        "$BENCH" --data "$M/sh/train.index" --translate 0.6 --steps 2 --batch 8
fi
