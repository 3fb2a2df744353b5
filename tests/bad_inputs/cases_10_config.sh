# shellcheck shell=bash
# cases_10_config.sh — the configuration and flowdp-train's command line: every row exits 2 with
# ONE stderr line naming the file and line (or the --set) and the key. The quoted values that
# work (dir = "/scratch/my run") are unit-tested in tests/test_config.c.

# a copy of the tiny config with one line replaced or added: cfg_with NAME 'SED-SCRIPT'
cfg_with() { sed -e "$2" "$CONFIG" >"$W/$1.ini"; }

# ---- 1. quotes: an unbalanced quote is an error naming file, line and key; no stray directory
printf '[checkpoint]\ndir = "%s/quoted_dir\n' "$W" >"$W/quote_open.ini"
bad config_quote_unbalanced 2 'quote_open\.ini:2: \[checkpoint\] dir = ".*unbalanced quote' \
    --absent "$PWD/\"" --absent "$W/quoted_dir" --absent "$W/\"" -- "$TRAIN" --config "$W/quote_open.ini"
cfg_with quote_close "s|^dir = .*|dir = $W/ck_quote_close'|"
bad config_quote_trailing 2 "quote_close\.ini:[0-9]+: \[checkpoint\] dir = .*ck_quote_close': unbalanced quote" \
    --absent "$W/ck_quote_close'" -- "$TRAIN" --config "$W/quote_close.ini"
bad config_quote_set 2 "^flowdp-train: --set: \[checkpoint\] dir = \"/x: unbalanced quote" \
    --absent "$PWD/\"" --absent "/x" -- "$TRAIN" --config "$CONFIG" --set 'checkpoint.dir="/x'

# ---- 2. upper bounds on sizes and counts, checked when the config is read
cfg_with big_eval 's/^eval_batch_size = .*/eval_batch_size = 2000000000/'
bad config_eval_batch_huge 2 'big_eval\.ini:[0-9]+: \[train\] eval_batch_size = 2000000000: out of range \(must be in \[1, 65536\]\)' \
    --absent "$W/ck_config_eval_batch_huge" -- "${TR[@]}" --config "$W/big_eval.ini"
bad config_prefetch_huge 2 '^flowdp-train: --set: \[data\] prefetch = 2000000000: out of range \(must be in \[0, 1024\]\)' \
    --absent @CK@ -- "${TR[@]}" --set data.prefetch=2000000000
cfg_with big_mid 's/^mid_channels = .*/mid_channels = 2000000000/'
bad config_mid_channels_huge 2 'big_mid\.ini:6: \[model\] mid_channels = 2000000000: out of range \(must be in \[1, 4096\]\)' \
    --absent @CK@ -- "${TR[@]}" --config "$W/big_mid.ini"
bad config_batch_huge 2 '--set: \[train\] batch_size = 65537: out of range \(must be in \[1, 65536\]\)' \
    --absent @CK@ -- "${TR[@]}" --set train.batch_size=65537
bad config_num_blocks_huge 2 '--set: \[model\] num_blocks = 100000: out of range \(must be in \[1, 256\]\)' \
    --absent @CK@ -- "${TR[@]}" --set model.num_blocks=100000
bad config_num_scales_huge 2 '--set: \[model\] num_scales = 40: out of range \(must be in \[1, 16\]\)' \
    --absent @CK@ -- "${TR[@]}" --set model.num_scales=40
bad config_glow_width_huge 2 '--set: \[model\] width = 100000: out of range \(must be in \[1, 4096\]\)' \
    --absent @CK@ -- "${TR[@]}" --set model.type=glow --set model.width=100000
bad config_glow_depth_huge 2 '--set: \[model\] depth = 5000: out of range \(must be in \[1, 1024\]\)' \
    --absent @CK@ -- "${TR[@]}" --set model.depth=5000
bad config_glow_levels_huge 2 '--set: \[model\] n_levels = 64: out of range \(must be in \[1, 16\]\)' \
    --absent @CK@ -- "${TR[@]}" --set model.n_levels=64
bad config_steps_huge 2 '--set: \[train\] steps = 99999999999999999999: out of range \(must be in \[0, 1000000000\]\)' \
    --absent @CK@ -- "${TR[@]}" --set train.steps=99999999999999999999
bad config_ckpt_every_huge 2 '--set: \[checkpoint\] every = 1000000001: out of range' \
    --absent @CK@ -- "${TR[@]}" --set checkpoint.every=1000000001
bad config_keep_last_huge 2 '--set: \[checkpoint\] keep_last = 2000000000: out of range \(must be in \[1, 10000\]\)' \
    --absent @CK@ -- "${TR[@]}" --set checkpoint.keep_last=2000000000
bad config_limit_huge 2 '--set: \[data\] train_limit = 99999999999: out of range \(must be in \[0, 10000000000\]\)' \
    --absent @CK@ -- "${TR[@]}" --set data.train_limit=99999999999
bad config_log_every_huge 2 '--set: \[log\] every = 9000000000: out of range' \
    --absent @CK@ -- "${TR[@]}" --set log.every=9000000000
# a product: one activation tensor of batch x mid_channels x 28x28 floats (more than 2^31)
bad config_batch_x_image 2 '^flowdp-train: .*--set train\.batch_size=65536: 65536 images x 3211264 floats per image .*lower the batch size' \
    --absent @CK@/ckpt_000000000.h5 -- "${TR[@]}" --set train.batch_size=65536 --set model.mid_channels=4096

# ---- 3. threads: an upper bound (error) and, above the online CPUs, one warning line
bad config_threads_huge 2 '--set: \[train\] threads = 5000: out of range \(must be in \[0, 1024\]\)' \
    --absent @CK@ -- "${TR[@]}" --set train.threads=5000
# more threads than online CPUs (the machines that run this have fewer than 1000): allowed, but one
# warning line; --print-config stops right after the config is read (exit 0, nothing written)
bad config_threads_warn 0 'warning: --set train\.threads=1000: more threads per rank than the [0-9]+ online CPUs' \
    -- "${TR[@]}" --set train.threads=1000 --print-config

# ---- 4. geometry errors name where the key's value came from, counting from 1
bad config_scales_geometry_set 2 '^flowdp-train: .*--set model\.num_scales=4: scale 3 of 4 would get a 7x7 image, which cannot be squeezed' \
    --absent @CK@/ckpt_000000000.h5 -- "${TR[@]}" --set model.num_scales=4
cfg_with scales4 's/^num_scales = .*/num_scales = 4/'
bad config_scales_geometry_file 2 'scales4\.ini:5: \[model\] num_scales = 4: scale 3 of 4 would get a 7x7 image' \
    --absent @CK@/ckpt_000000000.h5 -- "${TR[@]}" --config "$W/scales4.ini"
bad config_glow_levels_geometry 2 '--set model\.n_levels=3: level 3 of 3 would get a 7x7 image, which cannot be squeezed' \
    --absent @CK@/ckpt_000000000.h5 -- "${TR[@]}" --set model.type=glow --set model.n_levels=3 --set model.depth=1 --set model.width=4

# ---- classes handled before: sections, keys, values
cfg_with unknown_section '1i [optimiser]\nlr = 1'
bad config_unknown_section 2 'unknown_section\.ini:1: unknown section \[optimiser\]' -- "$TRAIN" --config "$W/unknown_section.ini"
cfg_with unknown_key2 's/^batch_size = /btach_size = /'
bad config_unknown_key2 2 'unknown_key2\.ini:[0-9]+: unknown key \[train\] btach_size \(did you mean batch_size\?\)' \
    -- "$TRAIN" --config "$W/unknown_key2.ini"
cfg_with dup_key 's/^lr = .*/lr = 1e-3\nlr = 2e-3/'
bad config_duplicate_key 2 'dup_key\.ini:[0-9]+: duplicate key \[train\] lr \(first set on line [0-9]+\)' \
    -- "$TRAIN" --config "$W/dup_key.ini"
cfg_with bad_number 's/^lr = .*/lr = 1e-3x/'
bad config_bad_number 2 'bad_number\.ini:[0-9]+: \[train\] lr = 1e-3x: not a number' -- "$TRAIN" --config "$W/bad_number.ini"
cfg_with negative 's/^batch_size = .*/batch_size = -8/'
bad config_negative 2 'negative\.ini:[0-9]+: \[train\] batch_size = -8: out of range' -- "$TRAIN" --config "$W/negative.ini"
cfg_with neg_limit 's/^train_limit = .*/train_limit = -1/'
bad config_negative_limit 2 'neg_limit\.ini:[0-9]+: \[data\] train_limit = -1: out of range' -- "$TRAIN" --config "$W/neg_limit.ini"
cfg_with empty_value 's/^steps = .*/steps =/'
bad config_empty_value 2 'empty_value\.ini:[0-9]+: \[train\] steps = : empty value' -- "$TRAIN" --config "$W/empty_value.ini"
# the [model] header missing: its keys are outside any section
sed -e '/^\[model\]/d' -e '1,2d' "$CONFIG" >"$W/no_model.ini"
bad config_missing_model_section 2 'no_model\.ini:1: key type is outside any section \(put it under \[model\]\)' \
    -- "$TRAIN" --config "$W/no_model.ini"
cfg_with model_type 's/^type = .*/type = nice/'
bad config_unknown_model_type 2 'model_type\.ini:[0-9]+: \[model\] type = nice: not one of realnvp\|glow' \
    -- "$TRAIN" --config "$W/model_type.ini"
mkdir -p "$W/cfgdir.ini"
bad config_is_directory 2 'cfgdir\.ini.*(Is a directory|not a config)' -- "$TRAIN" --config "$W/cfgdir.ini"
head -c 3000 "$SRC/configs/tiny_test.ini" >"$W/binary.ini"
printf '\0\1\2\3' >>"$W/binary.ini"
bad config_binary 2 'binary\.ini: contains a NUL byte' -- "$TRAIN" --config "$W/binary.ini"
: >"$W/empty.ini"
bad config_empty_file 2 'no_such|\[data\] train is not set' --absent "$PWD/run" -- "$TRAIN" --config "$W/empty.ini" --set checkpoint.dir=@CK@
bad config_set_no_equals 2 "^flowdp-train: --set 'train\.lr': expected section\.key=value" -- "${TR[@]}" --set train.lr
bad config_set_unknown_key 2 '^flowdp-train: --set: unknown key \[train\] btach_size \(did you mean batch_size\?\)' \
    -- "${TR[@]}" --set train.btach_size=3
bad config_set_bad_value 2 '^flowdp-train: --set: \[train\] lr = abc: not a number' -- "${TR[@]}" --set train.lr=abc

# ---- flowdp-train's command line
bad train_cli_unknown_option 2 "^flowdp-train: unknown or incomplete option '--frobnicate'" -- "$TRAIN" --frobnicate
bad train_cli_missing_config 2 '^flowdp-train: --config FILE is required' -- "$TRAIN" --set train.lr=1
bad train_cli_stray_argument 2 "^flowdp-train: unexpected argument 'extra\.ini'" -- "$TRAIN" --config "$CONFIG" extra.ini
bad train_cli_resume_missing 2 'no_such_ckpt\.h5' --absent @CK@/ckpt_000000000.h5 -- "${TR[@]}" --resume "$W/no_such_ckpt.h5"
