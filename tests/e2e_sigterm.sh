#!/usr/bin/env bash
# e2e_sigterm.sh — SIGTERM to mpiexec (what scancel, many schedulers and a plain `kill`
# do): Open MPI forwards it to the ranks, which agree on it at the next step, checkpoint
# at the same step and exit 3; mpiexec itself then returns 1 whatever its ranks returned.
# So rank 0 leaves <checkpoint dir>/STOPPED, and a job script that sees a non-zero code
# requeues when that file is newer than the start of the step (jobs/train*.sbatch):
#   - mpiexec -n 2 flowdp-train, SIGTERM to mpiexec once the run has logged step 3;
#   - mpiexec's exit code is not 0 (1 or 3); the ranks said "exiting with 3";
#   - STOPPED exists, is newer than a stamp taken before the start, names the checkpoint of
#     the step they stopped at, and that checkpoint exists; flowdp-train --get
#     checkpoint.dir finds the directory (as the job scripts do);
#   - the decision of the job scripts (the same test as theirs) says "requeue";
#   - a resumed run continues from that step, finishes with 0 and removes STOPPED, and
#     the same decision then says "done".
# usage: bash e2e_sigterm.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"

D=$WORK/run
ARGS=(--config "$CONFIG" --set checkpoint.dir="$D" --set log.progress=false --set log.every=1
    --set train.eval_every=0 --set checkpoint.every=0 --set data.test_limit=8)
# the job scripts' decision: requeue on 3, or on another failure when STOPPED is newer than STAMP
decide() {
    local rc=$1 dir=$2 stopped=0
    [ -f "$dir/STOPPED" ] && [ "$dir/STOPPED" -nt "$STAMP" ] && stopped=1
    if [ "$rc" -eq 3 ] || { [ "$rc" -ne 0 ] && [ "$stopped" = 1 ]; }; then echo requeue; else echo done; fi
}

STAMP=$WORK/stamp
touch "$STAMP"
sleep 0.05 # a clearly newer mtime for what follows
LOG=$WORK/run1.log
"${MPIEXEC[@]}" "$TRAIN" "${ARGS[@]}" --set train.steps=100000 >"$LOG" 2>&1 &
mpid=$!
for ((w = 0; w < 12000; w++)); do
    grep -qsE '^step ([3-9]|[1-9][0-9]+)/' "$LOG" && break
    kill -0 "$mpid" 2>/dev/null || break
    sleep 0.01
done
grep -qsE '^step ([3-9]|[1-9][0-9]+)/' "$LOG" || { cat "$LOG"; fail "the run did not reach step 3"; }
kill -TERM "$mpid"
rc=0
timeout 120 tail --pid="$mpid" -f /dev/null || fail "mpiexec did not end within 120 s of SIGTERM"
wait "$mpid" || rc=$?
echo "mpiexec exit code after SIGTERM: $rc"
sed 's/^/    /' "$LOG" | grep -v '^    step ' || true
[ "$rc" != 0 ] || fail "mpiexec returned 0 after SIGTERM: the run did not stop"
expect_in "$LOG" "every rank checkpointed at step [0-9]+; exiting with 3" "the ranks did not stop with a checkpoint"
step=$(grep -oE 'checkpointed at step [0-9]+' "$LOG" | grep -oE '[0-9]+$' | head -1)
[ -f "$D/STOPPED" ] || fail "no $D/STOPPED marker"
sed 's/^/    STOPPED: /' "$D/STOPPED"
[ "$D/STOPPED" -nt "$STAMP" ] || fail "STOPPED is not newer than the start"
expect_in "$D/STOPPED" "at step $step: requeue" "STOPPED does not name step $step"
expect_in "$D/STOPPED" "^checkpoint $(ckpt "$D" "$step")\$" "STOPPED does not name the checkpoint"
[ -f "$(ckpt "$D" "$step")" ] || fail "the checkpoint STOPPED names is not there"
got=$("$TRAIN" "${ARGS[@]}" --get checkpoint.dir)
[ "$got" = "$D" ] || fail "--get checkpoint.dir printed '$got', expected $D"
[ "$(decide "$rc" "$got")" = requeue ] || fail "the job scripts' decision is not 'requeue' (exit $rc)"

# the requeued run: resumes from that step, finishes, removes the marker
touch "$STAMP"
sleep 0.05
run 0 resume "${MPIEXEC[@]}" "$TRAIN" "${ARGS[@]}" --set train.steps=$((step + 3)) --resume auto
expect_in "$LOG" "^resumed from $(ckpt "$D" "$step") at step $step" "the next run did not resume from step $step"
expect_in "$LOG" "finished: $((step + 3)) steps" "the next run did not finish"
[ ! -e "$D/STOPPED" ] || fail "STOPPED is still there after a run that started and finished"
[ "$(decide 0 "$D")" = done ] || fail "the job scripts' decision after the finished run is not 'done'"
echo "PASS e2e_sigterm ($(elapsed) s)"
