#!/usr/bin/env bash
# e2e_corrupt.sh — damaged checkpoints are refused, never used (docs/ARCHITECTURE.md, invariants 5, 7):
# after a 12-step run (checkpoints 6, 8, 12 kept), the newest is cut to half its size and
# one byte in the middle of a parameter's raw data in ckpt 8 is flipped (raw data carries
# no HDF5 checksum: only flowdp's own XXH64 can notice). Then
#   - flowdp-eval refuses each with exit 2 and ONE line naming the file
#     ("checksum" for the flip, "truncated" or "HDF5" for the cut); so does ckpt_compare;
#   - `--resume auto` warns about each corrupt one by name, resumes from ckpt 6, finishes,
#     and the checkpoint it ends with loads;
#   - resuming a (valid) checkpoint with a config of another model (mid_channels 8 vs 4) is
#     refused with exit 2 naming the file.
# usage: bash e2e_corrupt.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"
command -v h5dump >/dev/null || skip "h5dump not found (Debian package hdf5-tools)"

D=$WORK/run
train 0 train "$D" --set train.steps=12
c6=$(ckpt "$D" 6) c8=$(ckpt "$D" 8) c12=$(ckpt "$D" 12)
for f in "$c6" "$c8" "$c12"; do [ -f "$f" ] || { ls -l "$D"; fail "expected $f after the run"; }; done

# --- cut the newest to half its size
size=$(stat -c %s "$c12")
truncate -s $((size / 2)) "$c12"
note "truncated $(basename "$c12") from $size to $((size / 2)) bytes"

# --- flip one byte in the middle of the raw data of ckpt 8's largest /params dataset
read -r name off len < <(h5dump -p -H -g /params "$c8" | awk '
    /DATASET "/ { n = $2; gsub(/"/, "", n) }
    /^ *SIZE [0-9]+/ { s = $2 }
    /^ *OFFSET [0-9]+/ { if (s > best) { best = s; o = $2; bn = n } }
    END { print bn, o, best }')
if [ -z "${len:-}" ] || [ "$len" -le 0 ]; then fail "could not find the raw data of a /params dataset in $c8"; fi
pos=$((off + len / 2))
old=$(od -An -tu1 -j "$pos" -N1 "$c8" | tr -d ' ')
new=$((old ^ 0x5a))
printf '%b' "$(printf '\\%03o' "$new")" | dd of="$c8" bs=1 seek="$pos" conv=notrunc status=none
note "flipped byte $pos of $(basename "$c8") ($old -> $new), inside /params/$name ($len bytes at $off)"

# --- flowdp-eval refuses both, with one line naming the file
run 2 eval_truncated "$EVAL" "$c12" --threads 1 --limit 8
[ "$(grep -c . "$LOG")" = 1 ] || { cat "$LOG"; fail "flowdp-eval on the truncated file: not a one-line message"; }
expect_in "$LOG" "$(basename "$c12").*(truncated|HDF5)" "flowdp-eval on the truncated file does not say so"
cat "$LOG"
run 2 eval_flipped "$EVAL" "$c8" --threads 1 --limit 8
[ "$(grep -c . "$LOG")" = 1 ] || { cat "$LOG"; fail "flowdp-eval on the flipped file: not a one-line message"; }
expect_in "$LOG" "$(basename "$c8").*checksum" "flowdp-eval on the flipped file does not report a checksum mismatch"
cat "$LOG"
run 2 compare_flipped "$CMP" "$c8" "$c6"
expect_in "$LOG" "checksum" "ckpt_compare loaded a corrupt checkpoint"

# --- resume skips both (warning by name) and continues from ckpt 6
train 0 resume "$D" --set train.steps=12 --resume auto
expect_in "$LOG" "$(basename "$c12")" "--resume auto did not warn about the truncated newest checkpoint"
expect_in "$LOG" "$(basename "$c8").*checksum" "--resume auto did not warn about the flipped checkpoint"
expect_in "$LOG" "resumed from $c6 at step 6" "--resume auto did not fall back to the newest valid checkpoint (6)"
expect_in "$LOG" "finished: 12 steps" "the resumed run did not finish"
grep -E "warn|resumed" "$LOG"
run 0 final_loads "$CMP" "$c12" "$c12" --exact

# --- a valid checkpoint of another model is refused too (exit 2, names the file), nothing written
train 2 other_model "$WORK/other" --set train.steps=12 --set model.mid_channels=8 --resume "$c6"
expect_in "$LOG" "$(basename "$c6").*(another model|other model)" "resuming a checkpoint of another model: no clear refusal"
sed 's/^/    /' "$LOG"
[ -z "$(find "$WORK/other" -name 'ckpt_*' 2>/dev/null)" ] || fail "the refused resume wrote a checkpoint"
echo "PASS e2e_corrupt ($(elapsed) s)"
