#!/usr/bin/env bash
# e2e_fsize.sh — a checkpoint that cannot be written fails cleanly (docs/ARCHITECTURE.md, invariants 5
# and 7). After a 4-step run (ckpt 4 on disk), flowdp-train resumes on 2 ranks under a
# file-size limit (`ulimit -f`) below the size of a checkpoint (but above metrics.h5), so
# the write of ckpt 8 fails with EFBIG (flowdp-train ignores SIGXFSZ: the signal would
# kill it). For each [checkpoint] on_write_error policy:
#   - stop:     exit 5 at step 8, nothing trained past it;
#   - continue: a warning, training goes on to step 12, whose (final) checkpoint fails
#               too, and a failed final checkpoint always exits 5;
# and in both cases the failure is ONE line naming the checkpoint file and the cause
# ("File too large"), no HDF5 error stack, no sanitizer report, no *.tmp.* file left,
# and ckpt 4 is byte-identical to what it was. Then, without the limit,
# `--resume auto` continues from ckpt 4 and ends with the parameters of an
# uninterrupted run (ckpt_compare --exact).
# Then the same on a full disk (root only: a tmpfs too small for a second checkpoint,
# ENOSPC), policy stop, one rank.
# PMIX_MCA_gds=hash: Open MPI's PMIx would otherwise keep its data store in files that
# the limit also caps.
# usage: bash e2e_fsize.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"
export PMIX_MCA_gds=hash

COMMON=(--set train.steps=12 --set checkpoint.every=4 --set train.eval_every=0 --set data.test_limit=8
    --set log.every=1)

# the uninterrupted reference, in the background
timeout -k 5 "$RUN_TIMEOUT" "$TRAIN" --config "$CONFIG" --set log.progress=false "${COMMON[@]}" \
    --set checkpoint.dir="$WORK/ref" >"$WORK/ref.log" 2>&1 &
ref_pid=$!

train 0 first "$WORK/first" "${COMMON[@]}" --set train.steps=4
c4=$(ckpt "$WORK/first" 4)
[ -f "$c4" ] || fail "no $c4 after the first run"
cp "$c4" "$WORK/ckpt4.orig"
csize=$(stat -c %s "$c4")
msize=$(stat -c %s "$WORK/first/metrics.h5")
# bash's ulimit -f counts KiB: halfway between metrics.h5 and a checkpoint
limit_kb=$(((csize + msize) / 2 / 1024))
[ "$msize" -lt $((limit_kb * 1024)) ] && [ $((limit_kb * 1024)) -lt "$csize" ] ||
    fail "no room for a limit between metrics.h5 ($msize bytes) and a checkpoint ($csize bytes)"
note "checkpoint $csize bytes, metrics.h5 $msize bytes: ulimit -f $limit_kb (KiB)"

# check_failure NAME DIR STEP: the log of run NAME has one error line naming ckpt STEP's file
# with the cause, no HDF5 stack, no sanitizer report; DIR holds ckpt 4 unchanged, no later
# checkpoint and no temporary file
check_failure() {
    local name=$1 dir=$2 step=$3 cause=$4 log=$WORK/$1.log f
    f=$(basename "$(ckpt "$dir" "$step")")
    local n
    n=$(grep -c "error: .*$f" "$log" || true)
    [ "$n" = 1 ] || { sed 's/^/    /' "$log"; fail "$name: $n error lines name $f (want exactly 1)"; }
    expect_in "$log" "error: checkpoint at step $step not written: checkpoint [^ ]*/$f: cannot write .*$f\.tmp\.[0-9]+ .*: $cause\$" \
        "$name: the error line does not name the file and the cause ($cause)"
    if grep -Eq 'HDF5-DIAG|AddressSanitizer|UndefinedBehaviorSanitizer|runtime error' "$log"; then
        sed 's/^/    /' "$log"
        fail "$name: an HDF5 error stack or a sanitizer report"
    fi
    grep "error: .*$f" "$log"
    [ -z "$(find "$dir" -name '*.tmp.*')" ] || { ls -l "$dir"; fail "$name: a temporary file was left in $dir"; }
    [ -z "$(find "$dir" -name 'ckpt_*.h5' ! -name "$(basename "$(ckpt "$dir" 4)")")" ] ||
        { ls -l "$dir"; fail "$name: a checkpoint other than ckpt 4 exists"; }
    # byte for byte the file that the final resume below loads and continues exactly
    cmp -s "$WORK/ckpt4.orig" "$(ckpt "$dir" 4)" || fail "$name: ckpt 4 changed"
}

for policy in stop continue; do
    D=$WORK/$policy
    cp -a "$WORK/first" "$D"
    rc=0
    (
        ulimit -f "$limit_kb"
        exec timeout -k 5 "$RUN_TIMEOUT" "${MPIEXEC[@]}" "$TRAIN" --config "$CONFIG" --set log.progress=false \
            "${COMMON[@]}" --set checkpoint.dir="$D" --set checkpoint.on_write_error=$policy --resume auto
    ) >"$WORK/$policy.log" 2>&1 || rc=$?
    echo "[$policy] exit $rc under ulimit -f $limit_kb"
    [ "$rc" = 5 ] || { sed 's/^/    /' "$WORK/$policy.log"; fail "$policy: exit code $rc, expected 5"; }
    expect_in "$WORK/$policy.log" "resumed from $(ckpt "$D" 4) at step 4" "$policy: did not resume from ckpt 4"
    check_failure "$policy" "$D" 8 "File too large"
    if [ $policy = stop ]; then
        expect_in "$WORK/$policy.log" "stopping: \[checkpoint\] on_write_error = stop" "stop: no message about the policy"
        ! grep -q '^step 9/' "$WORK/$policy.log" || fail "stop: trained past the failed checkpoint"
    else
        expect_in "$WORK/$policy.log" "continuing without this checkpoint" "continue: no warning about going on"
        expect_in "$WORK/$policy.log" "^step 12/12" "continue: did not train on to step 12"
        expect_in "$WORK/$policy.log" "the final checkpoint \(step 12\) was not written: exiting with 5" \
            "continue: the failed final checkpoint is not reported"
        grep -E "warning|final checkpoint" "$WORK/$policy.log"
    fi
done

# without the limit, the continue run's directory resumes from ckpt 4 and finishes exactly
train 0 resume "$WORK/continue" "${COMMON[@]}" --resume auto
expect_in "$LOG" "resumed from $(ckpt "$WORK/continue" 4) at step 4" "the resume did not start from ckpt 4"
expect_in "$LOG" "finished: 12 steps" "the resumed run did not finish"
rc=0
wait "$ref_pid" || rc=$?
[ "$rc" = 0 ] || { sed 's/^/    /' "$WORK/ref.log"; fail "the uninterrupted run exited $rc"; }
run 0 compare "$CMP" "$(ckpt "$WORK/ref" 12)" "$(ckpt "$WORK/continue" 12)" --exact --sections params,buffers,optimizer
tail -1 "$LOG"

# a full disk: a tmpfs with room for one checkpoint but not a second
if [ "$(id -u)" = 0 ]; then
    M=$WORK/tmpfs
    mkdir -p "$M"
    size_kb=$(((csize * 3 / 2 + 4095) / 4096 * 4))
    if mount -t tmpfs -o size=${size_kb}k flowdp-e2e-fsize "$M" 2>"$WORK/mount.err"; then
        trap 'umount "$M" 2>/dev/null || true; cleanup' EXIT
        cp "$c4" "$M/"
        cp "$WORK/first/metrics.h5" "$WORK/full-metrics.h5"
        train 5 full "$M" "${COMMON[@]}" --set log.metrics="$WORK/full-metrics.h5" \
            --set checkpoint.on_write_error=stop --resume auto
        echo "[full] exit 5 on a ${size_kb} KiB tmpfs"
        check_failure full "$M" 8 "No space left on device"
        umount "$M"
    else
        # containers without CAP_SYS_ADMIN cannot mount; the ulimit cases above still ran
        echo "NOTE: full-disk case not run: mount -t tmpfs failed: $(tr '\n' ' ' <"$WORK/mount.err")"
    fi
else
    echo "NOTE: full-disk case not run: needs root to mount a tmpfs"
fi
echo "PASS e2e_fsize ($(elapsed) s)"
