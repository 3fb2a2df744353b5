#!/usr/bin/env bash
# e2e_resume.sh — resuming is exact (docs/ARCHITECTURE.md, invariants 4, 5): a 12-step run in one go
# and a run of 8 steps continued with `--resume auto` to 12 end in checkpoints that are
# bit-identical in params, buffers and optimizer moments (ckpt_compare --exact); and
# `--resume PATH` (a copy of the step-8 checkpoint, into an empty directory) ends in the
# same bits too.
# usage: bash e2e_resume.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"

# the uninterrupted run, in the background on the second core
timeout -k 5 "$RUN_TIMEOUT" "$TRAIN" --config "$CONFIG" --set checkpoint.dir="$WORK/full" --set log.progress=false \
    --set train.steps=12 >"$WORK/full.log" 2>&1 &
full_pid=$!

train 0 part1 "$WORK/part" --set train.steps=8
[ -f "$(ckpt "$WORK/part" 8)" ] || fail "the 8-step run left no ckpt_000000008.h5"
cp "$(ckpt "$WORK/part" 8)" "$WORK/saved8.h5"

# --resume PATH (into an empty directory) in the background, while --resume auto continues the 8-step run
timeout -k 5 "$RUN_TIMEOUT" "$TRAIN" --config "$CONFIG" --set checkpoint.dir="$WORK/frompath" --set log.progress=false \
    --set train.steps=12 --resume "$WORK/saved8.h5" >"$WORK/from_path.log" 2>&1 &
path_pid=$!

train 0 part2 "$WORK/part" --set train.steps=12 --resume auto
expect_in "$LOG" "resumed from $(ckpt "$WORK/part" 8) at step 8" "--resume auto did not take the step-8 checkpoint"
expect_in "$LOG" "finished: 12 steps" "the resumed run did not finish"

for job in full:$full_pid from_path:$path_pid; do
    rc=0
    wait "${job#*:}" || rc=$?
    echo "[${job%%:*}] exit $rc (run alongside)"
    [ "$rc" = 0 ] || { sed 's/^/    /' "$WORK/${job%%:*}.log"; fail "${job%%:*} exited $rc"; }
done
expect_in "$WORK/from_path.log" "resumed from $WORK/saved8.h5 at step 8" "--resume PATH did not take that checkpoint"

run 0 compare_auto "$CMP" "$(ckpt "$WORK/full" 12)" "$(ckpt "$WORK/part" 12)" --exact \
    --sections params,buffers,optimizer
cat "$LOG"
run 0 compare_path "$CMP" "$(ckpt "$WORK/full" 12)" "$(ckpt "$WORK/frompath" 12)" --exact \
    --sections params,buffers,optimizer
cat "$LOG"

# a missing PATH is bad input, not a silent fresh start
train 2 missing_path "$WORK/nopath" --set train.steps=12 --resume "$WORK/no_such_ckpt.h5"
expect_in "$LOG" "no_such_ckpt\.h5" "the error for a missing --resume PATH does not name it"
echo "PASS e2e_resume ($(elapsed) s)"
