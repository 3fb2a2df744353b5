#!/usr/bin/env bash
# e2e_rank_dies.sh — no hang when a rank dies (docs/ARCHITECTURE.md, invariant 6): a 2-rank training
# run (400 steps, far more than the test waits for) has rank 1's process killed with
# SIGKILL 2 s after training started. The whole job must end within 60 s of the kill,
# with a non-zero exit code, and its output must name the rank that died ("rank 1").
# Each rank runs under a tiny wrapper that records "$OMPI_COMM_WORLD_RANK:$$" and then
# execs flowdp-train, so the pid killed is exactly rank 1's flowdp-train.
# The time from the kill to the end of the job is printed. (mpiexec's own exit code is
# 137 = 128 + SIGKILL here: it passes on how rank 1 died.)
# usage: bash e2e_rank_dies.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"

BUDGET=60
cat >"$WORK/rank_wrapper.sh" <<'EOF'
#!/bin/sh
# records "rank:pid" of this rank, then becomes flowdp-train (same pid)
echo "${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-?}}:$$" >>"$RANK_PIDS"
exec "$@"
EOF
export RANK_PIDS=$WORK/rank_pids
: >"$RANK_PIDS"
log=$WORK/job.log
timeout -k 5 $((BUDGET + 150)) "${MPIEXEC[@]}" sh "$WORK/rank_wrapper.sh" "$TRAIN" --config "$CONFIG" \
    --set checkpoint.dir="$WORK/run" --set log.progress=false --set train.steps=400 --set train.eval_every=0 \
    --set checkpoint.every=0 --set data.test= --set log.every=1 >"$log" 2>&1 &
job=$!

# wait (at most 100 s) until both ranks are recorded and rank 0 reports a training step
for ((w = 0; w < 1000; w++)); do
    [ "$(grep -c . "$RANK_PIDS")" -ge 2 ] && grep -qs '^step ' "$log" && break
    kill -0 "$job" 2>/dev/null || { cat "$log"; fail "the job ended before training started"; }
    sleep 0.1
done
grep -qs '^step ' "$log" || { cat "$log"; fail "training did not start within 100 s"; }
sleep 2
pid1=$(sed -n 's/^1:\([0-9]*\)$/\1/p' "$RANK_PIDS" | head -1)
[ -n "$pid1" ] || { cat "$RANK_PIDS"; fail "no pid recorded for rank 1"; }
note "ranks: $(tr '\n' ' ' <"$RANK_PIDS"); killing rank 1 (pid $pid1, $(tr '\0' ' ' </proc/"$pid1"/cmdline | cut -c1-60)...)"
last=$(grep '^step ' "$log" | tail -1 | cut -d'|' -f1)
kill -9 "$pid1"
t_kill=$(date +%s.%N)
rc=0
wait "$job" || rc=$?
took=$(elapsed "$t_kill")
sed 's/^/    /' "$log" | grep -v '^    step ' | head -40
note "the job ended $took s after rank 1 was killed (at ${last}), exit code $rc"
[ "$rc" != 0 ] || fail "the job exited 0 although rank 1 was killed"
[ "$rc" != 124 ] || fail "the job hung: killed by the test's timeout"
awk -v t="$took" -v b="$BUDGET" 'BEGIN { exit !(t <= b) }' || fail "the job took $took s to end, more than $BUDGET s"
grep -Eq 'rank 1([^0-9]|$)|\[\[[0-9]+,[0-9]+\],1\]' "$log" || fail "the output does not name rank 1"
# no rank process may outlive the job (a zombie waiting for its reaper is fine); mpiexec
# may return while the survivors are still being terminated: allow them 10 s
for p in $(sed -n 's/^[0-9]*:\([0-9]*\)$/\1/p' "$RANK_PIDS"); do
    for ((w = 0; w < 100; w++)); do
        state=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | cut -d' ' -f1 || true)
        [ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ] && break
        sleep 0.1
    done
    if [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]; then
        ps -o pid,stat,etime,args -p "$p" || true
        fail "rank process $p is still alive (state $state) 10 s after the job ended"
    fi
done
echo "PASS e2e_rank_dies ($(elapsed) s; the job ended $took s after the kill)"
