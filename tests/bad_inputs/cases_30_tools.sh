# shellcheck shell=bash
# cases_30_tools.sh — flowdp-eval, flowdp-sample (and flowdp-bench's options): bad
# checkpoints, bad option values, bad datasets, and bad output paths (checked before any
# work: include/flowdp/outpath.h), also under MPI.
#
# Under mpiexec, flowdp-eval prints a bad-input error once and every rank calls
# MPI_Finalize and exits 2; Open MPI 4.1's mpiexec still prints its own 11-line banner
# ("Primary job terminated normally, but 1 process returned a non-zero exit code ...")
# whenever a rank exits non-zero, finalized or not, and a program cannot turn that off.
# `mpiexec -q` (or OMPI_MCA_orte_execute_quiet=1 in mpiexec's environment) suppresses it
# and keeps the exit code 2; the MPI rows below set the variable, and one row without it
# checks that the program's line still appears only once (1 + 11 lines).
#
# The read-only rows mount a read-only bind of $W/ro in a private mount namespace
# (unshare -m) that lives only as long as the command: nothing can stay mounted.

# ---- inputs --------------------------------------------------------------------------------
head -c "$(($(stat -c %s "$CKPT") / 2))" "$CKPT" >"$W/truncated.h5"
cp "$CKPT" "$W/flipped.h5"
# one byte in the parameter data (the checkpoint's checksums catch it; a flip in HDF5 metadata,
# e.g. at 1/2 of the file, currently ends in "HDF5: infinite loop closing library", exit 1)
FLIP_AT=$(($(stat -c %s "$CKPT") * 3 / 10))
printf '\xa5' | dd of="$W/flipped.h5" bs=1 seek="$FLIP_AT" conv=notrunc status=none
printf 'these are my notes\n' >"$W/notes.txt"
printf 'not an idx file\n' >"$W/not_idx.gz"
mkdir -p "$W/ckdir" "$W/ro" "$W/outdir"
ln -s "$CKPT" "$W/ckpt_link.h5"
ln "$CKPT" "$W/ckpt_hard.h5"
QUIET=(env OMPI_MCA_orte_execute_quiet=1)
# ro_run DIR CMD...: CMD with DIR read-only (a bind mount private to CMD)
RO_RUN=(unshare -m bash -c 'd=$1; shift; mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" && exec "$@"' ro_run)

# ---- checkpoints -----------------------------------------------------------------------------
bad eval_ckpt_missing 2 'flowdp-eval: .*missing\.h5.*No such file' -- "$EVAL" "$W/missing.h5"
bad eval_ckpt_truncated 2 'flowdp-eval: .*truncated\.h5' -- "$EVAL" "$W/truncated.h5"
bad eval_ckpt_bitflip 2 'flowdp-eval: .*flipped\.h5' -- "$EVAL" "$W/flipped.h5" --threads 1
bad eval_ckpt_not_hdf5 2 'flowdp-eval: .*notes\.txt.*not an HDF5 file' -- "$EVAL" "$W/notes.txt"
bad eval_ckpt_directory 2 'flowdp-eval: .*ckdir' -- "$EVAL" "$W/ckdir"
bad sample_ckpt_missing 2 'flowdp-sample: .*missing\.h5.*No such file' -- "$SAMPLE" "$W/missing.h5" -o "$W/s1.png"
bad sample_ckpt_truncated 2 'flowdp-sample: .*truncated\.h5' -- "$SAMPLE" "$W/truncated.h5" -o "$W/s2.png"
bad sample_ckpt_bitflip 2 'flowdp-sample: .*flipped\.h5' -- "$SAMPLE" "$W/flipped.h5" -o "$W/s3.png" --threads 1
bad sample_ckpt_not_hdf5 2 'flowdp-sample: .*notes\.txt.*not an HDF5 file' -- "$SAMPLE" "$W/notes.txt" -o "$W/s4.png"
bad sample_ckpt_directory 2 'flowdp-sample: .*ckdir' -- "$SAMPLE" "$W/ckdir" -o "$W/s5.png"

# ---- under MPI: one line, exit 2 on every rank -------------------------------------------------
bad mpi_eval_ckpt_missing 2 'flowdp-eval: .*missing\.h5.*No such file' -- "${QUIET[@]}" "${MPIEXEC[@]}" "$EVAL" "$W/missing.h5"
bad mpi_eval_ckpt_not_hdf5 2 'flowdp-eval: .*notes\.txt.*not an HDF5 file' -- "${QUIET[@]}" "${MPIEXEC[@]}" "$EVAL" "$W/notes.txt"
bad mpi_eval_ckpt_bitflip 2 'flowdp-eval: .*flipped\.h5' -- "${QUIET[@]}" "${MPIEXEC[@]}" "$EVAL" "$W/flipped.h5" --threads 1
bad mpi_eval_json_is_input 2 "flowdp-eval: --json .*base/ckpt_000000003\.h5: is the input checkpoint" \
    -- "${QUIET[@]}" "${MPIEXEC[@]}" "$EVAL" "$CKPT" --json "$CKPT"
bad mpi_eval_json_missing_dir 2 'flowdp-eval: --json .*no_dir/r\.json: cannot write into .*no_dir: No such file' \
    -- "${QUIET[@]}" "${MPIEXEC[@]}" "$EVAL" "$CKPT" --json "$W/no_dir/r.json"
bad mpi_eval_bad_data 2 'flowdp-eval: .*not_idx\.gz' \
    -- "${QUIET[@]}" "${MPIEXEC[@]}" "$EVAL" "$CKPT" --data "$W/not_idx.gz" --format idx --threads 1
bad mpi_eval_unknown_option 2 "flowdp-eval: unknown or incomplete option '--xyz'" -- "${QUIET[@]}" "${MPIEXEC[@]}" "$EVAL" "$CKPT" --xyz
# without the quiet setting: the program's line once, then Open MPI's 11-line banner
bad mpi_eval_ckpt_missing_banner 2 'flowdp-eval: .*missing\.h5.*No such file' --lines 12 -- "${MPIEXEC[@]}" "$EVAL" "$W/missing.h5"

# ---- option values -----------------------------------------------------------------------------
bad eval_threads_abc2 2 "flowdp-eval: --threads abc: expected" -- "$EVAL" "$CKPT" --threads abc
bad eval_seed_negative 2 "flowdp-eval: --seed -1: expected" -- "$EVAL" "$CKPT" --seed -1
bad eval_iw_zero 2 "flowdp-eval: --importance-samples 0: expected" -- "$EVAL" "$CKPT" --importance-samples 0
bad eval_limit_x 2 "flowdp-eval: --limit x: expected" -- "$EVAL" "$CKPT" --limit x
bad eval_batch_zero 2 "flowdp-eval: --batch 0: expected" -- "$EVAL" "$CKPT" --batch 0
bad eval_unknown_option 2 "^flowdp-eval: unknown or incomplete option '--xyz' \(see --help\)$" -- "$EVAL" "$CKPT" --xyz
bad eval_incomplete_option 2 "^flowdp-eval: unknown or incomplete option '--json' \(see --help\)$" -- "$EVAL" "$CKPT" --json
bad eval_no_checkpoint 2 '^flowdp-eval: no checkpoint given \(see --help\)$' -- "$EVAL" --threads 1
bad eval_extra_argument 2 "^flowdp-eval: unexpected argument 'extra' \(see --help\)$" -- "$EVAL" "$CKPT" extra
bad eval_bad_data 2 'flowdp-eval: .*not_idx\.gz' -- "$EVAL" "$CKPT" --data "$W/not_idx.gz" --format idx --threads 1
bad eval_missing_data 2 'flowdp-eval: .*no_such_data\.gz' -- "$EVAL" "$CKPT" --data "$W/no_such_data.gz" --format idx
bad sample_threads_abc 2 "flowdp-sample: --threads abc: expected" -- "$SAMPLE" "$CKPT" -o "$W/t1.png" --threads abc
bad sample_seed_negative 2 "flowdp-sample: --seed -1: expected" -- "$SAMPLE" "$CKPT" -o "$W/t2.png" --seed -1
bad sample_n_zero 2 "flowdp-sample: -n 0: expected" -- "$SAMPLE" "$CKPT" -o "$W/t3.png" -n 0
bad sample_n_5000 2 "flowdp-sample: -n 5000: expected" -- "$SAMPLE" "$CKPT" -o "$W/t4.png" -n 5000
bad sample_t_negative 2 "flowdp-sample: -t -1: expected" -- "$SAMPLE" "$CKPT" -o "$W/t5.png" -t -1
bad sample_unknown_option 2 "^flowdp-sample: unknown or incomplete option '--xyz' \(see --help\)$" -- "$SAMPLE" "$CKPT" -o "$W/t6.png" --xyz
bad sample_incomplete_option 2 "^flowdp-sample: unknown or incomplete option '-o' \(see --help\)$" -- "$SAMPLE" "$CKPT" -o
bad sample_unknown_short 2 "^flowdp-sample: unknown or incomplete option '-Q' \(see --help\)$" -- "$SAMPLE" "$CKPT" -Q
bad sample_no_checkpoint 2 '^flowdp-sample: no checkpoint given \(see --help\)$' -- "$SAMPLE" -o "$W/t7.png"
bad sample_extra_argument 2 "^flowdp-sample: unexpected argument 'extra' \(see --help\)$" -- "$SAMPLE" "$CKPT" extra -o "$W/t8.png"
bad sample_no_output 2 'flowdp-sample: .*ckpt_000000003\.h5: no output file' -- "$SAMPLE" "$CKPT"
# --interpolate (latent interpolation between test images)
bad sample_interp_steps_one 2 "^flowdp-sample: --steps 1: expected a count from 2 to 64$" \
    --absent "$W/i1.png" -- "$SAMPLE" "$CKPT" -o "$W/i1.png" --interpolate 0 1 --data "$FMNIST/t10k-images-idx3-ubyte.gz" --steps 1
bad sample_interp_no_data 2 "^flowdp-sample: --interpolate needs --data PATH: the test set its indices refer to$" \
    --absent "$W/i2.png" -- "$SAMPLE" "$CKPT" -o "$W/i2.png" --interpolate 0 1
bad sample_interp_index_out_of_range 2 \
    "^flowdp-sample: --interpolate 3 10000: index 10000 is out of range: .*t10k-images-idx3-ubyte\.gz holds 10000 images$" \
    --absent "$W/i3.png" -- "$SAMPLE" "$CKPT" -o "$W/i3.png" --interpolate 0 1 --interpolate 3 10000 --data "$FMNIST/t10k-images-idx3-ubyte.gz" --threads 1
bad sample_interp_not_an_index 2 "^flowdp-sample: --interpolate 0 x: expected two test-set indices \(0-based\)$" \
    --absent "$W/i4.png" -- "$SAMPLE" "$CKPT" -o "$W/i4.png" --interpolate 0 x --data "$FMNIST/t10k-images-idx3-ubyte.gz"
bad sample_interp_one_index 2 "^flowdp-sample: --interpolate 7 : expected two test-set indices \(0-based\)$" \
    --absent "$W/i5.png" -- "$SAMPLE" "$CKPT" -o "$W/i5.png" --data "$FMNIST/t10k-images-idx3-ubyte.gz" --interpolate 7
bad sample_interp_with_t 2 "^flowdp-sample: --interpolate cannot be combined with -t \(it decodes at temperature 1\)$" \
    --absent "$W/i6.png" -- "$SAMPLE" "$CKPT" -o "$W/i6.png" --interpolate 0 1 --data "$FMNIST/t10k-images-idx3-ubyte.gz" -t 0.5
bad sample_interp_with_n 2 "^flowdp-sample: --interpolate cannot be combined with -n \(it decodes at temperature 1\)$" \
    --absent "$W/i7.png" -- "$SAMPLE" "$CKPT" -o "$W/i7.png" -n 4 --interpolate 0 1 --data "$FMNIST/t10k-images-idx3-ubyte.gz"
bad sample_steps_without_interp 2 "^flowdp-sample: --steps is only for --interpolate \(see --help\)$" \
    --absent "$W/i8.png" -- "$SAMPLE" "$CKPT" -o "$W/i8.png" --steps 4
bad sample_interp_data_not_idx 2 "^flowdp-sample: .*not_idx\.gz: wrong magic .* \(not an IDX file\)$" \
    --absent "$W/i9.png" -- "$SAMPLE" "$CKPT" -o "$W/i9.png" --interpolate 0 1 --data "$W/not_idx.gz" --threads 1
bad sample_interp_out_is_data 2 "^flowdp-sample: -o .*notes\.txt: is the test set; choose another file$" \
    -- "$SAMPLE" "$CKPT" -o "$W/notes.txt" --force --interpolate 0 1 --data "$W/notes.txt"
if [ -x "$BENCH" ]; then
    bad bench_unknown_option 2 "^flowdp-bench: unknown or incomplete option '--xyz' \(see --help\)$" -- "$BENCH" --xyz
    bad bench_batch_abc 2 '^flowdp-bench: --batch abc: expected an integer from 1 to 65536$' -- "$BENCH" --batch abc
    bad bench_mid_huge 2 '^flowdp-bench: --mid 2000000000: expected an integer from 1 to 4096$' -- "$BENCH" --mid 2000000000
    bad bench_steps_negative 2 '^flowdp-bench: --steps -3: expected an integer' -- "$BENCH" --steps -3
    bad bench_warmup_ge_steps 2 '^flowdp-bench: --warmup 5: must be below --steps 5$' -- "$BENCH" --steps 5 --warmup 5
    bad bench_translate_nan 2 '^flowdp-bench: --translate nan: expected a number from 0 to 0.5$' -- "$BENCH" --data x --translate nan
fi

# ---- outputs: checked before any work, the system's reason ---------------------------------------
bad sample_out_missing_dir 2 'flowdp-sample: -o .*no_dir/g\.png: cannot write into .*no_dir: No such file or directory' \
    --absent "$W/no_dir" -- "$SAMPLE" "$CKPT" -o "$W/no_dir/g.png"
bad sample_out_readonly 2 'flowdp-sample: -o .*ro/g\.png: cannot write into .*ro: Read-only file system' \
    --absent "$W/ro/g.png" -- "${RO_RUN[@]}" "$W/ro" "$SAMPLE" "$CKPT" -o "$W/ro/g.png"
bad sample_out_directory 2 'flowdp-sample: -o .*outdir: is a directory' -- "$SAMPLE" "$CKPT" -o "$W/outdir"
bad sample_out_parent_is_file 2 'flowdp-sample: -o .*notes\.txt/g\.png: cannot write into .*notes\.txt: Not a directory' \
    -- "$SAMPLE" "$CKPT" -o "$W/notes.txt/g.png"
bad sample_out_is_input 2 'flowdp-sample: -o .*ckpt_000000003\.h5: is the input checkpoint; choose another file' \
    -- "$SAMPLE" "$CKPT" -o "$CKPT"
bad sample_out_is_input_force 2 'flowdp-sample: -o .*ckpt_000000003\.h5: is the input checkpoint; choose another file' \
    -- "$SAMPLE" "$CKPT" -o "$CKPT" --force
bad sample_out_is_input_symlink 2 'flowdp-sample: -o .*ckpt_link\.h5: is the input checkpoint' \
    -- "$SAMPLE" "$CKPT" -o "$W/ckpt_link.h5" --force
bad sample_out_is_input_hardlink 2 'flowdp-sample: -o .*ckpt_hard\.h5: is the input checkpoint' \
    -- "$SAMPLE" "$CKPT" -o "$W/ckpt_hard.h5" --force
bad sample_out_not_png 2 'flowdp-sample: -o .*notes\.txt: exists and is not a PNG file; pass --force to replace it' \
    -- "$SAMPLE" "$CKPT" -o "$W/notes.txt"
bad eval_json_missing_dir 2 'flowdp-eval: --json .*no_dir/r\.json: cannot write into .*no_dir: No such file or directory' \
    --absent "$W/no_dir" -- "$EVAL" "$CKPT" --json "$W/no_dir/r.json"
bad eval_json_readonly 2 'flowdp-eval: --json .*ro/r\.json: cannot write into .*ro: Read-only file system' \
    --absent "$W/ro/r.json" -- "${RO_RUN[@]}" "$W/ro" "$EVAL" "$CKPT" --json "$W/ro/r.json"
bad eval_json_directory 2 'flowdp-eval: --json .*outdir: is a directory' -- "$EVAL" "$CKPT" --json "$W/outdir"
bad eval_json_is_input 2 'flowdp-eval: --json .*ckpt_000000003\.h5: is the input checkpoint; choose another file' \
    -- "$EVAL" "$CKPT" --json "$CKPT" --force
bad eval_json_is_input_symlink 2 'flowdp-eval: --json .*ckpt_link\.h5: is the input checkpoint' \
    -- "$EVAL" "$CKPT" --json "$W/ckpt_link.h5"
bad eval_json_is_data 2 'flowdp-eval: --json .*not_idx\.gz: is the test set' \
    -- "$EVAL" "$CKPT" --data "$W/not_idx.gz" --json "$W/not_idx.gz" --force
bad eval_json_not_json 2 'flowdp-eval: --json .*notes\.txt: exists and is not a JSON file; pass --force to replace it' \
    -- "$EVAL" "$CKPT" --json "$W/notes.txt"

# ---- behaviour checks (not bad input): each wraps a good run and turns "as expected" into
# exit 2 with one line, so they fit the table; any other outcome prints its own diagnosis.
# flowdp-eval --limit 1: no standard error from one image: "n/a" in the text, null in the JSON
bad check_eval_limit1_stderr_na 2 '^ok: limit 1: n/a and null$' -- bash -c '
    "$1" "$2" --limit 1 --threads 1 --json "$3" >"$3.txt" 2>&1 || { echo "exit $?: $(tail -1 "$3.txt")" >&2; exit 1; }
    grep -q "+- n/a" "$3.txt" || { echo "no n/a: $(grep bpd "$3.txt")" >&2; exit 1; }
    grep -q "\"bpd_stderr\": null" "$3" || { echo "no null: $(grep stderr "$3")" >&2; exit 1; }
    echo "ok: limit 1: n/a and null" >&2; exit 2' check "$EVAL" "$CKPT" "$W/limit1.json"
# a batch far larger than the test set means "all at once"
bad check_eval_huge_batch 2 '^ok: huge batch$' -- bash -c '
    "$1" "$2" --limit 16 --threads 1 --batch 2000000000 >"$3" 2>&1 || { echo "exit $?: $(tail -1 "$3")" >&2; exit 1; }
    echo "ok: huge batch" >&2; exit 2' check "$EVAL" "$CKPT" "$W/hugebatch.txt"
# -n 40 -t 0.5 -t 1: 16 columns (16*29-1 = 463 pixels), 2 blocks of 3 rows (3*29-1 = 86) + a 14-pixel gap
bad check_sample_wraps 2 '^ok: 463x186$' -- bash -c '
    "$1" "$2" -n 40 -t 0.5 -t 1 --threads 1 -o "$3" >/dev/null 2>"$3.err" || { echo "exit $?: $(tail -1 "$3.err")" >&2; exit 1; }
    wh=$(od -An -tu1 -j16 -N8 "$3" | awk "{ print \$3 * 256 + \$4 \"x\" \$7 * 256 + \$8 }")
    echo "ok: $wh" >&2; exit 2' check "$SAMPLE" "$CKPT" "$W/wrap.png"
