#!/usr/bin/env bash
# e2e_kill.sh — kill -9 never costs more than the steps since the last checkpoint
# (DESIGN.md invariant 5: a checkpoint on disk is always whole). Five times:
# flowdp-train (checkpoint.every=1, --resume auto, so each round continues the previous
# one; a first uninterrupted run of 2 steps leaves checkpoints to start from) is started,
# and once it has logged its first step it is killed with SIGKILL after a random 0.2-2 s
# ($RANDOM): in the middle of a step or of a checkpoint write; then
#   - every ckpt_*.h5 left in the directory loads (invariant 5 says all of them are whole),
#     the newest with flowdp-eval --limit 8 (exit 0), the others with ckpt_compare (these
#     checks run on copies, in the background, while the next round runs);
#   - the kill is likely to land inside a checkpoint write (each one takes a good part of
#     a step here), which leaves a *.tmp.<pid> file: it must never be taken for a checkpoint.
# Finally `--resume auto` runs to the end (checkpoint.every=0: only the final one), and
# its final parameters, buffers and optimizer moments equal those of an uninterrupted run
# (ckpt_compare --exact; the reference run writes only its final checkpoint: how often one
# checkpoints does not change the math).
# usage: bash e2e_kill.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"

STEPS=12
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

CHECKS=()
CHECKED=""   # the checkpoint files already checked (name:inode:mtime:size)
for round in 1 2 3 4 5; do
    delay_ms=$((200 + RANDOM % 1801))
    log=$WORK/kill$round.log
    timeout -s KILL "$RUN_TIMEOUT" "$TRAIN" "${COMMON[@]}" --set checkpoint.dir="$D" --set checkpoint.every=1 \
        --resume auto >"$log" 2>&1 &
    tpid=$!
    # wait until it has taken a step (its first log line), then the random delay
    for ((w = 0; w < 1200; w++)); do
        grep -qs '^step ' "$log" && break
        kill -0 "$tpid" 2>/dev/null || break
        sleep 0.1
    done
    sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
    cpid=$(pgrep -P "$tpid" || true)
    killed=no
    if [ -n "$cpid" ] && kill -9 "$cpid" 2>/dev/null; then killed=yes; fi
    rc=0
    wait "$tpid" 2>/dev/null || rc=$?
    last_line=$(grep -E '^step|^resumed|^finished|^nothing' "$log" | tail -1 || true)
    echo "[round $round] killed=$killed ${delay_ms} ms after its first step, exit $rc; last: ${last_line:0:60}"
    if [ "$killed" = no ] && [ "$rc" != 0 ]; then sed 's/^/    /' "$log"; fail "round $round: exited $rc by itself"; fi
    ls "$D" 2>/dev/null | tr '\n' ' ' | sed 's/^/    files: /'
    echo

    n=$(newest_step)
    if [ "$n" -lt 0 ]; then
        note "round $round: no checkpoint yet"
        continue
    fi
    # snapshot the checkpoints (the next round prunes them) and check them in the background
    # while the next round runs: the newest with flowdp-eval, the others with ckpt_compare
    # (exit 0/1 = both loaded, 2 = one does not load). Checkpoint files are never modified
    # in place (only created by rename), so a file (same name, inode, mtime, size) checked
    # in an earlier round is not checked again.
    snap=$WORK/snap$round
    mkdir -p "$snap"
    newest_src=$(ckpt "$D" "$n")
    newest=
    others=()
    for f in "$D"/ckpt_*.h5; do
        key=${f##*/}:$(stat -c '%i:%Y:%s' "$f") # name + inode + mtime + size (inodes get reused)
        case " $CHECKED " in *" $key "*) continue ;; esac
        CHECKED="$CHECKED $key"
        cp "$f" "$snap"/
        if [ "$f" = "$newest_src" ]; then newest=$snap/${f##*/}; else others+=("$snap/${f##*/}"); fi
    done
    if [ -z "$newest" ]; then
        note "round $round: newest $(basename "$newest_src") already loaded in an earlier round"
        [ ${#others[@]} -gt 0 ] || continue
    fi
    (
        set +e
        : >"$snap/status"
        if [ -n "$newest" ]; then
            timeout -k 5 "$RUN_TIMEOUT" "$EVAL" "$newest" --threads 1 --limit 8 --batch 8 >"$snap/eval.log" 2>&1
            echo "eval $? ${newest##*/}" >>"$snap/status"
        fi
        if [ ${#others[@]} -gt 0 ]; then
            [ ${#others[@]} -eq 1 ] && others+=("${others[0]}")
            timeout -k 5 "$RUN_TIMEOUT" "$CMP" "${others[0]}" "${others[1]}" >"$snap/others.log" 2>&1
            echo "others $? ${others[0]##*/} ${others[1]##*/}" >>"$snap/status"
            for f in "${others[@]:2}"; do
                timeout -k 5 "$RUN_TIMEOUT" "$CMP" "$f" "$f" >>"$snap/others.log" 2>&1
                echo "others $? ${f##*/}" >>"$snap/status"
            done
        fi
    ) &
    CHECKS+=("$!:$snap")
done

train 0 final "$D" "${COMMON[@]:2}" --set checkpoint.every=0 --resume auto
expect_in "$LOG" "finished: $STEPS steps|nothing to do" "the final resume did not reach step $STEPS"
grep -E '^resumed|^nothing' "$LOG" || true
expect_in "$LOG" "^resumed from $D/ckpt_[0-9]+\.h5 at step" "the final resume did not start from a checkpoint (never a *.tmp.*)"

# the checks of each round's checkpoints
for c in "${CHECKS[@]}"; do
    wait "${c%%:*}" || true
    snap=${c#*:}
    [ -f "$snap/status" ] || fail "no result from the checks in $snap"
    sed "s|^|[${snap##*/}] exit |" "$snap/status"
    while read -r what code names; do
        case "$what:$code" in
        eval:0 | others:0 | others:1) ;;
        eval:*) cat "$snap/eval.log"; fail "${snap##*/}: flowdp-eval on the newest checkpoint $names after kill -9 exited $code" ;;
        *) cat "$snap/others.log"; fail "${snap##*/}: a checkpoint left after kill -9 does not load: $names" ;;
        esac
    done <"$snap/status"
done

rc=0
wait "$ref_pid" || rc=$?
[ "$rc" = 0 ] || { sed 's/^/    /' "$WORK/ref.log"; fail "the uninterrupted run exited $rc"; }
run 0 compare "$CMP" "$(ckpt "$WORK/ref" $STEPS)" "$(ckpt "$D" $STEPS)" --exact --sections params,buffers,optimizer
cat "$LOG"
echo "PASS e2e_kill ($(elapsed) s)"
