# shellcheck shell=bash
# cases_00_smoke.sh — classes that held before the hardening issue: configs and CLI values.
printf '[train]\nbtach_size = 8\n' >"$W/unknown_key.ini"
bad config_unknown_key 2 'unknown_key\.ini:2:.*btach_size' -- "$TRAIN" --config "$W/unknown_key.ini"
bad config_missing 2 'no_such\.ini' -- "$TRAIN" --config "$W/no_such.ini"
bad train_unknown_option 2 'no-such-option' -- "${TR[@]}" --no-such-option
bad eval_threads_abc 2 'threads.*abc' -- "$EVAL" "$CKPT" --threads abc
