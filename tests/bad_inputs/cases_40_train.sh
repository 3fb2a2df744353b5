# shellcheck shell=bash
# cases_40_train.sh — flowdp-train's outputs and resume (the hardening issue's training
# items): every output place is checked before the first step (exit 2, nothing trained);
# [log] metrics never replaces a file that is not a flowdp metrics file; a checkpoint whose
# bytes changed is refused before anything is parsed (its trailer hash), the config
# included; resume errors under 2 ranks are one line. The read-only, full-disk and
# file-size rows run in a private mount namespace (unshare -m) or a subshell with
# `ulimit -f`: nothing outlives the row.
T=$W/t40
mkdir -p "$T/ro" "$T/full"
printf 'not a directory\n' >"$T/afile"
printf 'these are my notes\n' >"$T/notes.txt"
# a foreign HDF5 file: a packed shard
"$PACK" --out "$T/pack" --per-shard 10000 "$FMNIST/t10k-images-idx3-ubyte.gz" >/dev/null 2>&1 ||
    echo "cases_40: could not pack the foreign HDF5 file"
FOREIGN=$(find "$T/pack" -name '*.h5' | head -1)
# a checkpoint with one byte changed inside its stored config text ("[model]...")
cp "$CKPT" "$T/config_flip.h5"
CFG_AT=$(grep -boa 'num_blocks' "$CKPT" | head -1 | cut -d: -f1)
printf 'X' | dd of="$T/config_flip.h5" bs=1 seek="$CFG_AT" conv=notrunc status=none
# ... and one byte in HDF5 metadata in the middle of the file (HDF5 1.10.8 cannot close
# such a file after the failed read: "infinite loop closing library", exit 1, before)
cp "$CKPT" "$T/mid_flip.h5"
printf '\xa5' | dd of="$T/mid_flip.h5" bs=1 seek=$(($(stat -c %s "$CKPT") / 2)) conv=notrunc status=none
# the same without flowdp's trailer (a checkpoint of an older flowdp): HDF5's own checksums
head -c $(($(stat -c %s "$T/mid_flip.h5") - 16)) "$T/mid_flip.h5" >"$T/mid_flip_old.h5"
QUIET=(env OMPI_MCA_orte_execute_quiet=1)
# in_ns SETUP CMD...: CMD in a private mount namespace after the shell line SETUP
IN_NS=(unshare -m bash -c 'eval "$1"; shift; exec "$@"' in_ns)

# ---- the checkpoint directory: found unusable before the first step
bad train_ckdir_is_file 2 '\[checkpoint\] dir .*afile: cannot create it: Not a directory' -- \
    "${TR[@]}" --set checkpoint.dir="$T/afile"
bad train_ckdir_under_file 2 '\[checkpoint\] dir .*afile/run: cannot create it: Not a directory' -- \
    "${TR[@]}" --set checkpoint.dir="$T/afile/run"
bad train_ckdir_readonly 2 '\[checkpoint\] dir .*ro: cannot write into it: Read-only file system' -- \
    "${IN_NS[@]}" "mount --bind $T/ro $T/ro && mount -o remount,bind,ro $T/ro" \
    "${TR[@]}" --set checkpoint.dir="$T/ro"
bad train_ckdir_readonly_sub 2 '\[checkpoint\] dir .*ro/run: cannot create it: Read-only file system' -- \
    "${IN_NS[@]}" "mount --bind $T/ro $T/ro && mount -o remount,bind,ro $T/ro" \
    "${TR[@]}" --set checkpoint.dir="$T/ro/run"

# ---- [log] metrics: never replaces a file that is not a flowdp metrics file (a new run)
bad train_metrics_is_checkpoint 2 'metrics .*ckpt_000000003\.h5: not a flowdp metrics file.*move it away' -- \
    "${TR[@]}" --resume none --set log.metrics="$CKPT"
bad train_metrics_is_text 2 'metrics .*notes\.txt: not a flowdp metrics file \(not a readable HDF5 file\)' -- \
    "${TR[@]}" --set log.metrics="$T/notes.txt"
bad train_metrics_foreign_hdf5 2 "metrics .*$(basename "$FOREIGN"): not a flowdp metrics file \(wrong 'format' attribute\)" -- \
    "${TR[@]}" --set log.metrics="$FOREIGN"
bad train_metrics_is_dir 2 'metrics .*t40/ro: is a directory' -- "${TR[@]}" --set log.metrics="$T/ro"
bad train_metrics_missing_dir 2 'metrics .*nodir/m\.h5: cannot write .*No such file or directory' -- \
    "${TR[@]}" --set log.metrics="$T/nodir/m.h5"
bad train_metrics_readonly 2 'metrics .*ro/m\.h5: cannot write .*Read-only file system' -- \
    "${IN_NS[@]}" "mount --bind $T/ro $T/ro && mount -o remount,bind,ro $T/ro" \
    "${TR[@]}" --set log.metrics="$T/ro/m.h5"
bad train_metrics_full_disk 2 'metrics .*full/m\.h5: cannot write .*No space left on device' -- \
    "${IN_NS[@]}" "mount -t tmpfs -o size=4k tmpfs $T/full && head -c 4096 /dev/zero >$T/full/fill" \
    "${TR[@]}" --set log.metrics="$T/full/m.h5"
# the disk fills during the run (64 KiB hold the new file, not the rows of 12 steps): a
# warning when a write first fails (the rows stay in memory, every later flush retries),
# the error at the end, exit 5; the file keeps its last complete version. Two lines: the
# warning says so while a long run is still going. (`ulimit -f` cannot be tried on the
# metrics file here: Open MPI needs several MB of files to start; tests/test_metrics.c
# covers RLIMIT_FSIZE, and tests/e2e_fsize.sh the checkpoints under `ulimit -f`.)
bad train_metrics_disk_fills 5 'error: metrics .*full/m\.h5: cannot write .*No space left on device \(the last [0-9]+ rows' \
    --lines 2 -- "${IN_NS[@]}" "mount -t tmpfs -o size=64k tmpfs $T/full" \
    "${TR[@]}" --set log.metrics="$T/full/m.h5" --set log.every=1

# ---- resume: a checkpoint whose bytes changed is refused before anything is read from it
bad train_resume_config_flip 2 'cannot resume: checkpoint .*config_flip\.h5: damaged file: its checksum does not match' -- \
    "${TR[@]}" --resume "$T/config_flip.h5"
bad train_resume_mid_flip 2 'cannot resume: checkpoint .*mid_flip\.h5: damaged file: its checksum' -- \
    "${TR[@]}" --resume "$T/mid_flip.h5"
bad eval_mid_flip 2 'flowdp-eval: checkpoint .*mid_flip\.h5: damaged file' -- "$EVAL" "$T/mid_flip.h5"
bad eval_mid_flip_no_trailer 2 'flowdp-eval: checkpoint .*mid_flip_old\.h5: damaged file' -- "$EVAL" "$T/mid_flip_old.h5"
bad sample_config_flip 2 'flowdp-sample: checkpoint .*config_flip\.h5: damaged file: its checksum' -- \
    "$SAMPLE" "$T/config_flip.h5" -o "$T/s.png"

# ---- resume errors under 2 ranks: one line, from one rank
bad mpi_train_resume_missing 2 '^flowdp-train: cannot resume: checkpoint .*missing\.h5: cannot open: No such file' -- \
    "${QUIET[@]}" "${MPIEXEC[@]}" "${TR[@]}" --resume "$T/missing.h5"
bad mpi_train_resume_flipped 2 '^flowdp-train: cannot resume: .*config_flip\.h5: damaged file' -- \
    "${QUIET[@]}" "${MPIEXEC[@]}" "${TR[@]}" --resume "$T/config_flip.h5"
bad mpi_train_ckdir_is_file 2 '^flowdp-train: \[checkpoint\] dir .*afile: cannot create it' -- \
    "${QUIET[@]}" "${MPIEXEC[@]}" "${TR[@]}" --set checkpoint.dir="$T/afile"
bad mpi_train_metrics_is_text 2 '^flowdp-train: metrics .*notes\.txt: not a flowdp metrics file' -- \
    "${QUIET[@]}" "${MPIEXEC[@]}" "${TR[@]}" --set log.metrics="$T/notes.txt"

# ---- --get
bad train_get_unknown_key 2 '^flowdp-train: --get train\.nope: no such key' -- "${TR[@]}" --get train.nope
