#!/usr/bin/env bash
# e2e_bad_input.sh — bad input gets exit 2 and a clear message, never a crash, a hang or a
# half-started run (docs/ARCHITECTURE.md, invariant 7): flowdp-train with
#   - a config with an unknown key        -> names the file, the line and the key
#   - a bad value (lr = abc)              -> names the file, the line and the key
#   - a config file that does not exist   -> names the file
#   - an unknown command-line option      -> names the option
#   - an IDX file whose header claims 1000 28x28 images followed by 100 bytes, a gzipped
#     IDX cut after 4 KiB, and the gunzipped start of it (wrong length) -> names the file
#   - a CIFAR-10 directory whose data_batch_1.bin is not a multiple of 3073 bytes -> names it
#   - model.num_scales=4 on 28x28 images  -> names the scale that cannot take the shape
# and none of these failing runs wrote anything into the checkpoint directory. Also
# flowdp-eval --threads abc, --seed -1 and flowdp-sample --threads abc -> exit 2 naming
# the option (not silently "all cores" / seed 2^64-1). Every case is checked even after a
# failure; all failures are listed at the end.
# Under the sanitizer build any crash / leak changes the exit code and fails the test.
# usage: bash e2e_bad_input.sh FLOWDP_TRAIN FLOWDP_EVAL FLOWDP_SAMPLE CKPT_COMPARE SOURCE_DIR
#        (arguments and environment: see tests/e2e_common.sh)
source "$(dirname "$0")/e2e_common.sh" "$@"

CK=$WORK/ckpt    # every failing run points its checkpoint dir here
# Every case is checked even when an earlier one failed; the failures are listed at the end.
FAILS=()
soft_fail() { echo "FAIL: $*"; FAILS+=("$*"); }
# expect CODE NAME cmd...: the exit code must be CODE (output in $LOG, printed)
expect() {
    local want=$1 name=$2
    shift 2
    LOG=$WORK/$name.log
    local rc=0
    timeout -k 5 "$RUN_TIMEOUT" "$@" >"$LOG" 2>&1 || rc=$?
    echo "[$name] exit $rc"
    sed 's/^/    /' "$LOG"
    [ "$rc" = "$want" ] || soft_fail "$name: exit code $rc, expected $want"
}
bad() { # bad NAME [flowdp-train args...]: must exit 2
    local name=$1
    shift
    expect 2 "$name" "$TRAIN" --set checkpoint.dir="$CK" --set log.progress=false "$@"
}
says() { # says ERE what: the last log must match
    grep -Eq -- "$1" "$LOG" || soft_fail "$2 (no line matches: $1)"
}

# --- config: unknown key (inserted as line N of a copy of the tiny config)
awk '{ print } /^batch_size/ { print "btach_size = 8" }' "$CONFIG" >"$WORK/unknown_key.ini"
line=$(grep -n '^btach_size' "$WORK/unknown_key.ini" | cut -d: -f1)
bad unknown_key --config "$WORK/unknown_key.ini"
says "unknown_key\.ini:$line:.*btach_size" "unknown key: the message must name file, line $line and the key"

# --- config: bad value
sed 's/^lr = .*/lr = abc/' "$CONFIG" >"$WORK/bad_value.ini"
line=$(grep -n '^lr = abc' "$WORK/bad_value.ini" | cut -d: -f1)
bad bad_value --config "$WORK/bad_value.ini"
says "bad_value\.ini:$line:.*lr.*abc" "bad value: the message must name file, line $line, the key and the value"

# --- config file missing
bad missing_config --config "$WORK/no_such.ini"
says "no_such\.ini" "missing config: the message must name the file"

# --- unknown command-line option
bad unknown_option --config "$CONFIG" --no-such-option
says "no-such-option" "unknown option: the message must name it"

# --- IDX: a header claiming 1000 images of 28x28, then 100 bytes
printf '\000\000\010\003\000\000\003\350\000\000\000\034\000\000\000\034' >"$WORK/short-images-idx3-ubyte"
head -c 100 /dev/zero >>"$WORK/short-images-idx3-ubyte"
bad idx_short --config "$CONFIG" --set data.train="$WORK/short-images-idx3-ubyte"
says "short-images-idx3-ubyte.*(short|truncat)" "short IDX: the message must name the file and say it is short"

# --- IDX: the real gzipped file cut after 4 KiB, as .gz and gunzipped (a partial image set)
head -c 4096 "$FMNIST/train-images-idx3-ubyte.gz" >"$WORK/cut-images-idx3-ubyte.gz"
gunzip -c "$WORK/cut-images-idx3-ubyte.gz" >"$WORK/cut-images-idx3-ubyte" 2>/dev/null || true
[ -s "$WORK/cut-images-idx3-ubyte" ] || fail "could not gunzip the start of the training set"
bad idx_cut_gz --config "$CONFIG" --set data.train="$WORK/cut-images-idx3-ubyte.gz"
says "cut-images-idx3-ubyte\.gz.*(short|truncat|ends early)" "cut .gz: the message must name the file"
bad idx_cut_plain --config "$CONFIG" --set data.train="$WORK/cut-images-idx3-ubyte"
says "cut-images-idx3-ubyte[^.].*(short|truncat)" "cut IDX: the message must name the file"

# --- CIFAR-10: data_batch_1.bin of a size that is not a multiple of 3073 (the others fine)
mkdir -p "$WORK/cifar"
for i in 2 3 4 5; do head -c $((2 * 3073)) /dev/zero >"$WORK/cifar/data_batch_$i.bin"; done
head -c $((2 * 3073 + 1000)) /dev/zero >"$WORK/cifar/data_batch_1.bin"
bad cifar_size --config "$CONFIG" --set data.format=cifar10 --set data.train="$WORK/cifar" --set data.test=
says "data_batch_1\.bin.*3073" "CIFAR-10: the message must name data_batch_1.bin and the record size"

# --- a model that cannot take the shape: 4 scales on 28x28
bad num_scales --config "$CONFIG" --set model.num_scales=4
says "[Ss]cale [0-9]" "num_scales=4: the message must name the scale that cannot take the shape"

# --- flowdp-eval / flowdp-sample options: a bad number is refused before anything else
# (the checkpoint does not exist: a run that accepts the option fails on the checkpoint instead)
expect 2 eval_threads "$EVAL" "$WORK/none.h5" --threads abc
says "threads.*abc" "flowdp-eval --threads abc: must be refused naming the option"
expect 2 eval_seed "$EVAL" "$WORK/none.h5" --seed -1
says "seed.*-1" "flowdp-eval --seed -1 (help: a non-negative integer): must be refused naming the option"
expect 2 sample_threads "$SAMPLE" "$WORK/none.h5" -o "$WORK/x.png" --threads abc
says "threads.*abc" "flowdp-sample --threads abc: must be refused naming the option"

# --- nothing was written by any of the failing runs
if [ -e "$CK" ] && [ -n "$(ls -A "$CK")" ]; then
    ls -la "$CK"
    soft_fail "failing runs wrote into the checkpoint directory $CK"
fi
if [ ${#FAILS[@]} -gt 0 ]; then
    echo "---- ${#FAILS[@]} failure(s):"
    printf '  %s\n' "${FAILS[@]}"
    exit 1
fi
echo "PASS e2e_bad_input ($(elapsed) s)"
