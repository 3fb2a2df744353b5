# shellcheck shell=bash
# cases_20_data.sh — bad datasets and flowdp-pack input (the hardening issue's data items):
# IDX, CIFAR-10, npz/.npy, packed shards and their index, JPEG/PNG folders, flowdp-pack's
# command line and output directory. Every row: exit 2, one stderr line naming the file.
# The inputs are made here with bash and python3's standard library only.
D20_JPG='/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAUDBAQEAwUEBAQFBQUGBwwIBwcHBw8LCwkMEQ8SEhEPERETFhwXExQaFRERGCEYGh0dHx8fExciJCIeJBweHx7/2wBDAQUFBQcGBw4ICA4eFBEUHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh7/wAARCAAUABgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwCraaTep4cuNM06xgldrFY1SXIaaQ6ZHGoXBAGDd4I4IwDkCtArNcaqq6Qn2mzae4EKSBEje4Zre9iG5trNkfZ1YYUj58YClqjmtLa6eyF/qAE8usXNnbdIwqCG4twGXpIA9tFyQOgye5ZbIt9a2ctg0QkvIIvJS1T7ODd27OyQmQHlZENxAV2kDylznjOkva+054xtJ21s7JuLTer36aW7buyzqS5KbjUfMkrbWvy3Uba2b3s3Z6X1S1gvJ5rG5tLafF3ZBIo7RY8KXQpIYeTjYJop5ojJJwshYqAVGCtGe4fUUSe0g1LU4plM8MSCMLMGJldCr8mRWWSZFcD70sS8bmBWFShCoouTjF26x5t9ejjZ9H5rTu1HHTw0FzSs3rvUV+1+VS1to766a6t2ZrtnAmoWN3hjJZ6zrssB3EbHQvOp4wThpXHPGMDrzWf4g1S8t18TZlaWTSb9rm1kZ2Vg0tvHclTtIyolJYL0Gec0UUZauZ0nLWzf5I9GvpViv+nS/wDSp/5L7jVsIVvvFdjp7vNFDrelx6lK0czB7a4M8SloWJJUFsOQSQWX0LBiiivRpUKU9ZRT07ebX6L7jHLacWqt1tOX5J/m2f/Z'
D20_PNG='iVBORw0KGgoAAAANSUhEUgAAABQAAAAQCAIAAACZeshMAAAADnRFWHRDb21tZW50AGZsb3dkcGjKvHsAAAFrSURBVHicY2DglVI3cfSLziht6p+zctvhC3dffWcRlNO2cA2Kz6lsm7xg7a7jVx6++80hqqRv4xmWXFDbNX3Jxn2nbzz99J+BXURRz9ojNCm/pnPa4g17T11/8vEft4Sqkb1PZFpxQ++s5VsOnrv94isTv4ymmXNAbFZ5y8R5q3ccvXT/zU82Bj5pDVMn/5jMsuYJc1dtP3Lx3usfrELyOpZuwQm5Ve1TFq7bfeLqo/d/OMWUDWy9wlMK67pnLN20/8zNZ58ZeBmwuIZHUs3YwTcqvaSxb/aKrYfO33n5jVlAVsvcJTAuu6J10vw1O49dfvD2F7sIAxbXCCvoWrmHJOZVd0xdtH7PyWuPP/zlElcxtPOOSC2q75m5bPOBs7eef2Hkk2bA4hqiQ5ABi2uIDkEGLK4hOgQZiIlPXCHIQEx84gpBBmLiE1cIMhATn7hCkIGY+MQVggxk5QhoCDKQlSOgIchAVo6AhiAAjxvaEM6peQIAAAAASUVORK5CYII='
D=$W/d20
mkdir -p "$D"
TRH=("${TR[@]}" --set data.format=hdf5 --set data.test="$D/sh/train.index") # flowdp-train on packed sets (--set data.train=INDEX)
# "${BOTH[@]}" CMD...: CMD with its stdout sent to stderr too, so that the row counts stdout's lines
# (the IDX "no labels file beside it" note goes to stdout and must not come with an error)
BOTH=(bash -c '"$@" 1>&2' both)

# ---- IDX: short, bad magic, gzip cut; the "no labels beside it" note only after a good load
mkdir -p "$D/idx_short" "$D/idx_magic" "$D/idx_gz"
python3 - "$D" <<'PY'
import struct, sys
d = sys.argv[1]
open(d + '/idx_short/train-images-idx3-ubyte', 'wb').write(struct.pack('>IIII', 0x803, 10, 28, 28) + bytes(784 * 3))
open(d + '/idx_magic/train-images-idx3-ubyte', 'wb').write(struct.pack('>IIII', 0x1234, 1, 28, 28) + bytes(784))
PY
head -c 3000 "$FMNIST/train-images-idx3-ubyte.gz" >"$D/idx_gz/train-images-idx3-ubyte.gz"
bad d20_idx_short_train 2 'idx_short/train-images-idx3-ubyte' -- "${TR[@]}" --set data.train="$D/idx_short/train-images-idx3-ubyte"
bad d20_idx_short_pack 2 'idx_short/train-images-idx3-ubyte' -- "${BOTH[@]}" "$PACK" --out "$D/o_idx" "$D/idx_short/train-images-idx3-ubyte"
bad d20_idx_magic_pack 2 'idx_magic/train-images-idx3-ubyte:? .*magic' -- "${BOTH[@]}" "$PACK" --out "$D/o_idx" --format idx "$D/idx_magic/train-images-idx3-ubyte"
bad d20_idx_gz_cut 2 'idx_gz/train-images-idx3-ubyte\.gz' -- "${TR[@]}" --set data.train="$D/idx_gz/train-images-idx3-ubyte.gz"
bad d20_idx_gz_cut_eval 2 'idx_gz/train-images-idx3-ubyte\.gz' -- "$EVAL" "$CKPT" --data "$D/idx_gz/train-images-idx3-ubyte.gz"

# ---- CIFAR-10: a directory whose data_batch_1.bin is not a whole number of records
mkdir -p "$D/cifar"
head -c 6151 /dev/zero >"$D/cifar/data_batch_1.bin"
for i in 2 3 4 5; do head -c 3073 /dev/zero >"$D/cifar/data_batch_$i.bin"; done
bad d20_cifar_batch_size 2 'cifar/data_batch_1\.bin' -- "$PACK" --out "$D/o_cifar" "$D/cifar"

# ---- npz: not a zip, no data member, a float dtype, a shape whose byte count overflows
python3 - "$D" <<'PY'
import sys, zipfile
d = sys.argv[1]
def npy(descr, shape):
    h = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)).encode()
    h += b' ' * ((64 - (10 + len(h) + 1) % 64) % 64) + b'\n'
    return b'\x93NUMPY\x01\x00' + len(h).to_bytes(2, 'little') + h
open(d + '/not_zip.npz', 'wb').write(b'this is not a zip archive\n' * 4)
def npz(name, members):
    with zipfile.ZipFile(d + '/' + name, 'w') as z:
        for k, v in members.items(): z.writestr(k, v)
npz('no_data.npz', {'labels.npy': npy('<i8', '(2,)') + bytes(16)})
npz('float.npz', {'data.npy': npy('<f4', '(2, 12)') + bytes(96)})
npz('overflow.npz', {'data.npy': npy('|u1', '(4294967296, 4294967296, 3)')})
PY
bad d20_npz_not_zip 2 'not_zip\.npz' -- "$PACK" --out "$D/o_npz" "$D/not_zip.npz"
bad d20_npz_no_data 2 'no_data\.npz.*data\.npy' -- "$PACK" --out "$D/o_npz" "$D/no_data.npz"
bad d20_npz_dtype 2 'float\.npz:data\.npy.*<f4' -- "$PACK" --out "$D/o_npz" "$D/float.npz"
bad d20_npz_shape_overflow 2 'overflow\.npz:data\.npy.*shape \(4294967296, 4294967296, 3\).*too large' -- \
    "$PACK" --out "$D/o_npz" "$D/overflow.npz"

# ---- shards: a good set of 3 shards (512 Fashion-MNIST images), then damaged copies
if ! "$PACK" --out "$D/sh" --per-shard 200 --limit 512 --no-progress "$FMNIST/train-images-idx3-ubyte.gz" >/dev/null 2>"$D/pack.err"; then
    cat "$D/pack.err"; echo "FAIL: could not pack the shard set"; exit 1
fi
S0=train-00000-of-00003.h5 S1=train-00001-of-00003.h5 S2=train-00002-of-00003.h5
HEAD=$'flowdp-shards 1\nsplit train\nheight 28\nwidth 28\nchannels 1'
mkset() { # mkset NAME COUNT SHARD-LINES...: $D/NAME/train.index over the good shards
    local name=$1 count=$2
    shift 2
    mkdir -p "$D/$name"
    { echo "$HEAD"; echo "count $count"; printf 'shard %s\n' "$@"; } >"$D/$name/train.index"
    local f
    for f in "$S0" "$S1" "$S2"; do [ -e "$D/$name/$f" ] || ln -s "$D/sh/$f" "$D/$name/$f"; done
}
mkdir -p "$D/sh_missing" && cp "$D/sh/train.index" "$D/sh/$S0" "$D/sh/$S2" "$D/sh_missing/"
mkdir -p "$D/sh_sum" && cp "$D/sh/"* "$D/sh_sum/"
printf '\x5a' | dd of="$D/sh_sum/$S1" bs=1 seek=80000 conv=notrunc status=none
mkset sh_badline 512 "$S0 200" "$S1 200" "$S2 112" && sed -i 's/^height 28$/height twenty-eight/' "$D/sh_badline/train.index"
mkset sh_dup 512 "$S0 200" "$S0 200" "$S2 112"
mkset sh_order 512 "$S1 200" "$S0 200" "$S2 112"
mkset sh_dotdot 512 "$S0 200" "../sh/$S1 200" "$S2 112"
mkset sh_abs 512 "$S0 200" "$D/sh/$S1 200" "$S2 112"
mkdir -p "$D/sh_dir/train.index"
bad d20_shard_missing_train 2 'sh_missing/train-00001-of-00003\.h5' -- "${TRH[@]}" --set data.train="$D/sh_missing/train.index"
bad d20_shard_checksum_verify 2 'sh_sum/train-00001-of-00003\.h5.*checksum' -- "$PACK" --verify "$D/sh_sum/train.index"
bad d20_shard_checksum_train 2 'sh_sum/train-00001-of-00003\.h5.*checksum' -- "${TRH[@]}" --set data.train="$D/sh_sum/train.index"
bad d20_index_bad_line 2 'sh_badline/train\.index:3: bad height' -- "$EVAL" "$CKPT" --format hdf5 --data "$D/sh_badline/train.index"
bad d20_index_duplicate_verify 2 'sh_dup/train\.index: shard entry 2 .* same file as entry 1' -- "$PACK" --verify "$D/sh_dup/train.index"
bad d20_index_duplicate_train 2 'sh_dup/train\.index: shard entry 2' -- "${TRH[@]}" --set data.train="$D/sh_dup/train.index"
bad d20_index_duplicate_eval 2 'sh_dup/train\.index: shard entry 2' -- "$EVAL" "$CKPT" --format hdf5 --data "$D/sh_dup/train.index"
bad d20_index_first_index_verify 2 'sh_order/train\.index: shard entry 1 .*first_index 200' -- "$PACK" --verify "$D/sh_order/train.index"
bad d20_index_first_index_train 2 'sh_order/train\.index: shard entry 1' -- "${TRH[@]}" --set data.train="$D/sh_order/train.index"
bad d20_index_dotdot_verify 2 'sh_dotdot/train\.index:[0-9]+: shard entry 2 .*\.\.' -- "$PACK" --verify "$D/sh_dotdot/train.index"
bad d20_index_dotdot_eval 2 'sh_dotdot/train\.index:[0-9]+: shard entry 2' -- "$EVAL" "$CKPT" --format hdf5 --data "$D/sh_dotdot/train.index"
bad d20_index_absolute_train 2 'sh_abs/train\.index:[0-9]+: shard entry 2 .*absolute' -- "${TRH[@]}" --set data.train="$D/sh_abs/train.index"
bad d20_index_not_a_file 2 'sh_dir/train\.index: .*not a regular file' -- "$PACK" --verify "$D/sh_dir"
bad d20_index_not_a_file_train 2 'sh_dir/train\.index: .*not a regular file' -- "${TRH[@]}" --set data.train="$D/sh_dir"

# ---- image folders: a truncated JPEG, a PNG with a CRC error, a truncated PNG, an empty folder
mkimg() { # mkimg DIR: two classes of good images
    mkdir -p "$1/a" "$1/b"
    echo "$D20_JPG" | base64 -d >"$1/a/1.jpg"
    echo "$D20_JPG" | base64 -d >"$1/a/2.jpg"
    echo "$D20_PNG" | base64 -d >"$1/b/1.png"
    echo "$D20_JPG" | base64 -d >"$1/b/2.jpg"
}
mkimg "$D/im_jpg" && head -c 600 "$D/im_jpg/a/1.jpg" >"$D/im_jpg/a/0cut.jpg"
mkimg "$D/im_crc" && python3 -c "
import sys; d = bytearray(open(sys.argv[1], 'rb').read()); i = d.find(b'tEXt'); d[i + 4] ^= 1
open(sys.argv[2], 'wb').write(d)" "$D/im_crc/b/1.png" "$D/im_crc/b/0crc.png"
mkimg "$D/im_pngcut" && head -c 120 "$D/im_pngcut/b/1.png" >"$D/im_pngcut/b/3cut.png"
mkdir -p "$D/im_empty/a" "$D/im_empty/b"
mkimg "$D/im_good" && echo "$D20_JPG" | base64 -d >"$D/im_good/b/3.jpg"
mkimg "$D/im_cutlast" && head -c 600 "$D/im_jpg/a/1.jpg" >"$D/im_cutlast/b/9cut.jpg"
mkdir -p "$D/im_allbad/a" && head -c 600 "$D/im_jpg/a/1.jpg" >"$D/im_allbad/a/cut.jpg"
bad d20_jpeg_truncated 2 'im_jpg/a/0cut\.jpg: bad JPEG: Premature end' --absent "$D/o_jpg" -- "$PACK" --out "$D/o_jpg" --size 8 "$D/im_jpg"
bad d20_jpeg_truncated_shards 2 'im_cutlast/b/9cut\.jpg: bad JPEG' --absent "$D/o_jpg1" -- \
    "$PACK" --out "$D/o_jpg1" --size 8 --per-shard 1 -j 1 "$D/im_cutlast"
bad d20_png_crc 2 'im_crc/b/0crc\.png: bad PNG: .*CRC' --absent "$D/o_crc" -- "$PACK" --out "$D/o_crc" --size 8 "$D/im_crc"
bad d20_png_truncated 2 'im_pngcut/b/3cut\.png: bad PNG' --absent "$D/o_pngcut" -- "$PACK" --out "$D/o_pngcut" --size 8 "$D/im_pngcut"
bad d20_images_empty 2 'im_empty: no \.jpg' -- "$PACK" --out "$D/o_empty" --size 8 "$D/im_empty"
bad d20_skip_bad_all 2 'im_allbad: none of the 1 image' --absent "$D/o_allbad" -- "$PACK" --out "$D/o_allbad" --size 8 --skip-bad "$D/im_allbad"

# ---- an existing --out directory: other files stay, an existing shard is never replaced by a failed run
mkdir -p "$D/out_keep" && echo keep >"$D/out_keep/notes.txt" && echo old >"$D/out_keep/train-00000-of-00005.h5"
bad d20_out_exists_no_force 2 'out_keep/train-00000-of-00005\.h5 already exists.*--force' --absent "$D/out_keep/train.index" -- \
    "$PACK" --out "$D/out_keep" --size 8 --per-shard 1 "$D/im_good"
bad d20_out_force_fails 2 'im_cutlast/b/9cut\.jpg' --absent "$D/out_keep/train.index" \
    --absent "$D/out_keep/train-00001-of-00005.h5" -- "$PACK" --out "$D/out_keep" --force --size 8 --per-shard 1 -j 1 "$D/im_cutlast"

# ---- flowdp-pack's command line: each error names the option as typed
bad d20_cli_per_shard_0 2 '^flowdp-pack: --per-shard 0: ' -- "$PACK" --out "$D/o_cli" --per-shard 0 "$D/im_jpg"
bad d20_cli_per_shard_eq_0 2 '^flowdp-pack: --per-shard 0: ' -- "$PACK" --out "$D/o_cli" --per-shard=0 "$D/im_jpg"
bad d20_cli_n_0 2 '^flowdp-pack: -n 0: ' -- "$PACK" --out "$D/o_cli" -n 0 "$D/im_jpg"
bad d20_cli_size_0 2 '^flowdp-pack: --size 0: expected an integer from 1 to 1024' -- "$PACK" --out "$D/o_cli" --size 0 "$D/im_jpg"
bad d20_cli_size_99999 2 '^flowdp-pack: --size 99999: expected an integer from 1 to 1024' -- "$PACK" --out "$D/o_cli" --size 99999 "$D/im_jpg"
bad d20_cli_size_1025 2 '^flowdp-pack: -S 1025: ' -- "$PACK" --out "$D/o_cli" -S 1025 "$D/im_jpg"
bad d20_cli_j_abc 2 '^flowdp-pack: -j abc: expected an integer' -- "$PACK" --out "$D/o_cli" -j abc "$D/im_jpg"
bad d20_cli_threads_abc 2 '^flowdp-pack: --threads abc: ' -- "$PACK" --out "$D/o_cli" --threads abc "$D/im_jpg"
bad d20_cli_shards_and_per_shard 2 '^flowdp-pack: --shards and --per-shard exclude each other' -- \
    "$PACK" --out "$D/o_cli" --shards 2 --per-shard 10 --size 8 "$D/im_jpg"
bad d20_cli_unknown_option 2 '^flowdp-pack: unknown option --no-such \(see --help\)$' -- "$PACK" --out "$D/o_cli" --no-such "$D/im_jpg"
bad d20_cli_unknown_short 2 '^flowdp-pack: unknown option -x \(see --help\)$' -- "$PACK" -x --out "$D/o_cli" "$D/im_jpg"
bad d20_cli_missing_value 2 '^flowdp-pack: --split needs a value' -- "$PACK" --out "$D/o_cli" "$D/im_jpg" --split
bad d20_cli_missing_out 2 '^flowdp-pack: need --out DIR' -- "$PACK" --size 8 "$D/im_jpg"
bad d20_cli_size_needed 2 'im_jpg: packing an image folder needs --size' --absent "$D/o_cli" -- "$PACK" --out "$D/o_cli" "$D/im_jpg"
