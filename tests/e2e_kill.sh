#!/usr/bin/env bash
# e2e_kill.sh — kill -9 never costs more than the steps since the last checkpoint
# (docs/ARCHITECTURE.md, invariant 5: a checkpoint on disk is always whole). 20 rounds (E2E_KILL_ROUNDS):
# flowdp-train (checkpoint.every=1, --resume auto, so each round continues the previous
# one; a first uninterrupted run of 2 steps leaves checkpoints to start from) is started,
# and once it has logged its first step it is killed with SIGKILL at a moment drawn
# from its observed progress, never from a clock (a Release build runs these steps
# ~20x faster than the sanitizer build, and a time-based kill found the run finished):
#   - odd rounds, inside a checkpoint write: as soon as its temporary file
#     (ckpt_<step>.h5.tmp.<its pid>) appears, after a further random 0-3 ms;
#   - even rounds, in a step or a write: once its log shows a step 0-3 steps after its
#     first one (random), after a further random 0-3 ms;
# STEPS leaves room for every round (a round advances a few steps) so that no run can
# finish before its kill, whatever the speed;
# then
#   - every ckpt_*.h5 left in the directory loads (invariant 5 says all of them are whole),
#     checked with ckpt_compare on copies, in the background, while the next round runs;
#   - a *.tmp.<pid> file left by a kill inside a write is never taken for a checkpoint;
#     at least one kill must have landed inside a write (else the rounds did not test it).
# Every round must end by the kill (not by itself) and every resume must succeed (its log
# says "resumed from ckpt_...", with no error and no warning about a skipped checkpoint).
# Finally `--resume auto` runs to the end (checkpoint.every=0: only the final one), and
# its final parameters, buffers and optimizer moments equal those of an uninterrupted run
# (ckpt_compare --exact; the reference run writes only its final checkpoint: how often
# one checkpoints does not change the math).
# usage: bash e2e_kill.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"

ROUNDS=${E2E_KILL_ROUNDS:-20}
STEPS=$((40 + 8 * ROUNDS))
COMMON=(--config "$CONFIG" --set log.progress=false --set log.every=1 --set "train.steps=$STEPS"
    --set train.eval_every=0 --set data.test_limit=8)
D=$WORK/run

# the uninterrupted reference, in the background on the second core
timeout -k 5 "$RUN_TIMEOUT" "$TRAIN" "${COMMON[@]}" --set checkpoint.dir="$WORK/ref" --set checkpoint.every=0 \
    >"$WORK/ref.log" 2>&1 &
ref_pid=$!

# 2 steps to start from, so that every round begins with checkpoints on disk
train 0 first "$D" "${COMMON[@]:2}" --set checkpoint.every=1 --set train.steps=2

newest_step() { # the step of the newest ckpt_*.h5 in $D, or -1
    local f
    f=$(find "$D" -maxdepth 1 -name 'ckpt_*.h5' 2>/dev/null | sort | tail -1)
    if [ -z "$f" ]; then echo -1; else f=${f##*ckpt_}; echo $((10#${f%.h5})); fi
}
sleep_ms() { sleep "$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))"; }

CHECKS=()
CHECKED=""   # the checkpoint files already checked (name:inode:mtime:size)
IN_WRITE=0   # kills that left the victim's temporary file behind (landed inside a write)
for ((round = 1; round <= ROUNDS; round++)); do
    log=$WORK/kill$round.log
    timeout -s KILL "$RUN_TIMEOUT" "$TRAIN" "${COMMON[@]}" --set checkpoint.dir="$D" --set checkpoint.every=1 \
        --resume auto >"$log" 2>&1 &
    tpid=$!
    # wait until it has taken a step (its first log line)
    for ((w = 0; w < 12000; w++)); do
        grep -qs '^step ' "$log" && break
        kill -0 "$tpid" 2>/dev/null || break
        sleep 0.01
    done
    cpid=$(pgrep -P "$tpid" || true)
    delay_ms=$((RANDOM % 4))
    if ((round % 2)); then
        # inside a checkpoint write: poll for this process's temporary file
        mode="write"
        for ((w = 0; w < 20000; w++)); do
            compgen -G "$D/*.tmp.$cpid" >/dev/null && break
            kill -0 "$tpid" 2>/dev/null || break
        done
    else
        # at a step 0-3 steps after the first one it logged
        first=$(grep -m1 -oE '^step [0-9]+' "$log" | grep -oE '[0-9]+' || echo 0)
        target=$((first + RANDOM % 4))
        mode="step $target"
        for ((w = 0; w < 12000; w++)); do
            grep -qsE "^step $target/" "$log" && break
            kill -0 "$tpid" 2>/dev/null || break
            sleep 0.001
        done
    fi
    sleep_ms "$delay_ms"
    killed=no
    if [ -n "$cpid" ] && kill -9 "$cpid" 2>/dev/null; then killed=yes; fi
    rc=0
    wait "$tpid" 2>/dev/null || rc=$?
    left=no
    if [ -n "$cpid" ] && compgen -G "$D/*.tmp.$cpid" >/dev/null; then left=yes; IN_WRITE=$((IN_WRITE + 1)); fi
    last_line=$(grep -E '^step|^resumed|^finished|^nothing' "$log" | tail -1 || true)
    echo "[round $round] $mode: killed=$killed ${delay_ms} ms, exit $rc, inside a write: $left; last: ${last_line:0:40}"
    [ "$killed" = yes ] || { sed 's/^/    /' "$log"; fail "round $round: the run ended by itself (exit $rc) before the kill"; }
    expect_in "$log" "^resumed from $D/ckpt_[0-9]+\.h5 at step" "round $round: did not resume from a checkpoint"
    # a skipped checkpoint (warning naming it) or any error is a failure; metrics.h5 cut by
    # a kill is moved aside with a warning, which is its documented behaviour
    if grep -Eq 'error|warning: .*ckpt_' "$log"; then sed 's/^/    /' "$log"; fail "round $round: an error, or a checkpoint skipped"; fi
    grep -E 'warning' "$log" | sed "s/^/    [round $round] /" || true

    n=$(newest_step)
    if [ "$n" -lt 0 ]; then
        note "round $round: no checkpoint yet"
        continue
    fi
    # snapshot the checkpoints (the next round prunes them) and check them in the background
    # while the next round runs, in pairs with ckpt_compare (exit 0/1 = both loaded and
    # verified, 2 = one does not load). Checkpoint files are never modified in place (only
    # created by rename), so a file (same name, inode, mtime, size) checked in an earlier
    # round is not checked again.
    snap=$WORK/snap$round
    mkdir -p "$snap"
    files=()
    for f in "$D"/ckpt_*.h5; do
        key=${f##*/}:$(stat -c '%i:%Y:%s' "$f") # name + inode + mtime + size (inodes get reused)
        case " $CHECKED " in *" $key "*) continue ;; esac
        CHECKED="$CHECKED $key"
        cp "$f" "$snap"/
        files+=("$snap/${f##*/}")
    done
    [ ${#files[@]} -gt 0 ] || continue
    [ $((${#files[@]} % 2)) = 0 ] || files+=("${files[-1]}")
    (
        set +e
        : >"$snap/status"
        for ((i = 0; i < ${#files[@]}; i += 2)); do
            timeout -k 5 "$RUN_TIMEOUT" "$CMP" "${files[i]}" "${files[i + 1]}" >>"$snap/check.log" 2>&1
            echo "check $? ${files[i]##*/} ${files[i + 1]##*/}" >>"$snap/status"
        done
    ) &
    CHECKS+=("$!:$snap")
done
echo "kills inside a checkpoint write (temporary file left): $IN_WRITE of $ROUNDS"
[ "$IN_WRITE" -ge 1 ] || fail "no kill landed inside a checkpoint write: the rounds did not test that"
# the temporary files of killed writers are removed by the next writer (fdp_ckpt_prune)

train 0 final "$D" "${COMMON[@]:2}" --set checkpoint.every=0 --resume auto
expect_in "$LOG" "finished: $STEPS steps|nothing to do" "the final resume did not reach step $STEPS"
grep -E '^resumed|^nothing' "$LOG" || true
expect_in "$LOG" "^resumed from $D/ckpt_[0-9]+\.h5 at step" "the final resume did not start from a checkpoint (never a *.tmp.*)"

# the checks of each round's checkpoints
for c in "${CHECKS[@]}"; do
    wait "${c%%:*}" || true
    snap=${c#*:}
    [ -f "$snap/status" ] || fail "no result from the checks in $snap"
    while read -r _ code names; do
        case "$code" in
        0 | 1) ;;
        *) cat "$snap/check.log"; fail "${snap##*/}: a checkpoint left after kill -9 does not load: $names (exit $code)" ;;
        esac
    done <"$snap/status"
done
echo "checkpoints left after the kills, all loaded and verified: $(echo "$CHECKED" | wc -w)"

rc=0
wait "$ref_pid" || rc=$?
[ "$rc" = 0 ] || { sed 's/^/    /' "$WORK/ref.log"; fail "the uninterrupted run exited $rc"; }
run 0 compare "$CMP" "$(ckpt "$WORK/ref" $STEPS)" "$(ckpt "$D" $STEPS)" --exact --sections params,buffers,optimizer
cat "$LOG"
echo "PASS e2e_kill ($(elapsed) s)"
