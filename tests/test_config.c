/* test_config.c — the INI config: defaults, loading, every kind of error with
 * its one-line message (file, line, section, key), --set overrides, validation,
 * the to_ini round trip, and the help text listing every key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <unistd.h>

#include "flowdp/config.h"
#include "flowdp/model.h"
#include "testutil.h"

/* every key the design names, by section: help and to_ini must list them all */
static const char *const ALL_KEYS[][2] = {
    {"model", "type"}, {"model", "num_scales"}, {"model", "mid_channels"}, {"model", "num_blocks"},
    {"model", "data_constraint"}, {"model", "n_bits_x"}, {"model", "n_levels"}, {"model", "depth"},
    {"model", "width"}, {"model", "flow_permutation"}, {"model", "flow_coupling"}, {"model", "learntop"},
    {"model", "tutorial_arch"}, {"model", "c_hidden"}, {"model", "c_hidden_scale2"}, {"model", "c_hidden_scale3"},
    {"data", "format"}, {"data", "train"}, {"data", "test"}, {"data", "train_limit"}, {"data", "test_limit"}, {"data", "prefetch"},
    {"data", "hflip"}, {"data", "translate"}, {"data", "verify"},
    {"train", "device"}, {"train", "threads"}, {"train", "batch_size"}, {"train", "steps"}, {"train", "epochs"},
    {"train", "seed"}, {"train", "optimizer"}, {"train", "lr"}, {"train", "adam_beta1"}, {"train", "adam_beta2"},
    {"train", "adam_eps"}, {"train", "weight_decay"}, {"train", "max_grad_norm"}, {"train", "warmup_steps"},
    {"train", "lr_decay"}, {"train", "lr_min"}, {"train", "lr_decay_rate"}, {"train", "ema"},
    {"train", "eval_every"}, {"train", "eval_batch_size"}, {"train", "on_nonfinite"},
    {"train", "rebuild_activations"}, {"train", "bucket_mb"}, {"train", "check_every"}, {"train", "watchdog_s"},
    {"train", "signal"},
    {"checkpoint", "dir"}, {"checkpoint", "every"}, {"checkpoint", "keep_last"}, {"checkpoint", "keep_best"},
    {"checkpoint", "on_write_error"},
    {"log", "every"}, {"log", "level"}, {"log", "metrics"}, {"log", "progress"},
};
#define N_ALL_KEYS ((int)(sizeof ALL_KEYS / sizeof ALL_KEYS[0]))

/* load text onto defaults; expect failure; return the message (static) and
 * check that the config did not change */
static const char *load_error(const char *text) {
    static fdp_err err;
    fdp_config c, before;
    fdp_config_defaults(&c);
    fdp_config_defaults(&before);
    memset(err.msg, 0, sizeof err.msg);
    int rc = fdp_config_load_string(&c, text, "configs/x.ini", &err);
    assert_int_equal(rc, -1);
    assert_true(strlen(err.msg) > 0);
    assert_null(strchr(err.msg, '\n')); /* one line */
    assert_true(fdp_config_equal(&c, &before)); /* all or nothing */
    assert_null(c.source_text);
    fdp_config_free(&c);
    return err.msg;
}

static const char *set_error(const char *assignment) {
    static fdp_err err;
    fdp_config c, before;
    fdp_config_defaults(&c);
    fdp_config_defaults(&before);
    assert_int_equal(fdp_config_set(&c, assignment, &err), -1);
    assert_null(strchr(err.msg, '\n'));
    assert_true(fdp_config_equal(&c, &before));
    return err.msg;
}

static void test_defaults(void **state) {
    (void)state;
    fdp_config c;
    fdp_err err;
    fdp_config_defaults(&c);
    assert_int_equal(c.model.type, FDP_MODEL_REALNVP);
    assert_int_equal(c.model.num_scales, 2);
    assert_int_equal(c.model.mid_channels, 64);
    assert_int_equal(c.model.num_blocks, 8);
    assert_true(c.model.data_constraint == 0.9);
    assert_int_equal(c.model.n_bits_x, 8);
    assert_int_equal(c.model.n_levels, 3);
    assert_int_equal(c.model.depth, 32);
    assert_int_equal(c.model.width, 512);
    assert_int_equal(c.model.flow_permutation, FDP_PERM_INVCONV_LU);
    assert_int_equal(c.model.flow_coupling, FDP_COUPLING_AFFINE);
    assert_true(c.model.learntop);
    assert_int_equal(c.data.format, FDP_DATA_IDX);
    assert_string_equal(c.data.train, "");
    assert_int_equal(c.data.prefetch, 2);
    assert_false(c.data.hflip);
    assert_int_equal(c.train.device, FDP_DEVICE_CPU);
    assert_int_equal(c.train.batch_size, 64);
    assert_int_equal(c.train.steps, 0);
    assert_true(c.train.epochs == 1.0);
    assert_true(c.train.lr == 1e-3);
    assert_true(c.train.adam_eps == 1e-8);
    assert_true(c.train.weight_decay == 5e-5);
    assert_true(c.train.max_grad_norm == 100);
    assert_true(c.train.lr_decay_rate == 0.999995);
    assert_int_equal(c.train.optimizer, FDP_OPT_ADAM);
    assert_int_equal(c.train.lr_decay, FDP_LR_DECAY_NONE);
    assert_int_equal(c.train.on_nonfinite, FDP_NONFINITE_STOP);
    assert_int_equal(c.train.signal, FDP_STOP_SIGUSR2);
    assert_int_equal(c.train.check_every, 100);
    assert_true(c.train.bucket_mb == 25);
    assert_int_equal(c.train.eval_batch_size, 500);
    assert_string_equal(c.checkpoint.dir, "run");
    assert_int_equal(c.checkpoint.every, 500);
    assert_int_equal(c.checkpoint.keep_last, 3);
    assert_true(c.checkpoint.keep_best);
    assert_int_equal(c.checkpoint.on_write_error, FDP_ON_WRITE_ERROR_CONTINUE);
    assert_int_equal(c.log.every, 10);
    assert_int_equal(c.log.level, FDP_LOG_INFO);
    assert_string_equal(c.log.metrics, "");
    assert_true(c.log.progress);
    assert_null(c.source_text);
    assert_null(c.source_path);
    assert_int_equal(fdp_config_validate(&c, &err), 0);
    assert_string_equal(fdp_config_enum_name("model", "type", FDP_MODEL_GLOW), "glow");
    assert_string_equal(fdp_config_enum_name("train", "signal", FDP_STOP_NONE), "none");
    assert_null(fdp_config_enum_name("train", "lr", 0));
    assert_null(fdp_config_enum_name("model", "type", 7));
}

static void test_load_string(void **state) {
    (void)state;
    const char *text =
        "\xEF\xBB\xBF; a quickstart config\n"
        "# another comment style\n"
        "[model]\n"
        "type = Glow            ; inline ; comment\n"
        "n_levels = 2  # hash comment\n"
        "  depth = 4\n"             /* indentation means nothing: not a continuation */
        "  width = 16\n"
        "flow_coupling: additive\n" /* name: value works too */
        "learntop = off\r\n"        /* CRLF */
        "\n"
        "[data]\n"
        "format = cifar10\n"
        "train = /data/cifar-10-batches-bin\n"
        "test = data dir/with space#not-a-comment\n"
        "hflip = YES\n"
        "translate = 0.125\n"
        "[train]\n"
        "lr = 1e-3 ; comment\n"
        "batch_size = 32\n"
        "steps = 1000000000\n"
        "seed = 42\n"
        "signal = sigusr1\n"
        "rebuild_activations = 1\n"
        "[log]\n"
        "metrics =\n"
        "level = debug\n"
        "[train]\n" /* a section may be reopened */
        "ema = 0.999\n";
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    int rc = fdp_config_load_string(&c, text, "quick.ini", &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(c.model.type, FDP_MODEL_GLOW);
    assert_int_equal(c.model.n_levels, 2);
    assert_int_equal(c.model.depth, 4);
    assert_int_equal(c.model.width, 16);
    assert_int_equal(c.model.flow_coupling, FDP_COUPLING_ADDITIVE);
    assert_false(c.model.learntop);
    assert_int_equal(c.data.format, FDP_DATA_CIFAR10);
    assert_string_equal(c.data.train, "/data/cifar-10-batches-bin");
    assert_string_equal(c.data.test, "data dir/with space#not-a-comment");
    assert_true(c.data.hflip);
    assert_true(c.data.translate == 0.125);
    assert_true(c.train.lr == 1e-3);
    assert_int_equal(c.train.batch_size, 32);
    assert_true(c.train.steps == 1000000000LL);
    assert_int_equal(c.train.seed, 42);
    assert_int_equal(c.train.signal, FDP_STOP_SIGUSR1);
    assert_true(c.train.rebuild_activations);
    assert_true(c.train.ema == 0.999);
    assert_string_equal(c.log.metrics, "");
    assert_int_equal(c.log.level, FDP_LOG_DEBUG);
    assert_int_equal(c.model.num_scales, 2); /* untouched keys keep their defaults */
    assert_string_equal(c.source_text, text);
    assert_string_equal(c.source_path, "quick.ini");
    /* rebuild_activations is valid with both models */
    assert_int_equal(fdp_config_validate(&c, &err), 0);
    c.train.rebuild_activations = false;
    assert_int_equal(fdp_config_validate(&c, &err), 0);
    c.model.type = FDP_MODEL_REALNVP;
    c.train.rebuild_activations = true;
    assert_int_equal(fdp_config_validate(&c, &err), 0);
    fdp_config_free(&c);
    assert_null(c.source_text);
}

static void test_long_lines(void **state) {
    (void)state;
    /* lines far beyond inih's 200-byte buffer: a long path and a long comment */
    char path[1500], text[8000];
    memset(path, 0, sizeof path);
    strcpy(path, "/scratch");
    while (strlen(path) < 1200) strcat(path, "/very_long_directory_name");
    char comment[600];
    memset(comment, 'c', sizeof comment - 1);
    comment[sizeof comment - 1] = '\0';
    snprintf(text, sizeof text, "; %s\n[data]\ntrain = %s   ; comment after a long value\n  # %s\ntest = %s\n",
             comment, path, comment, path);
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    int rc = fdp_config_load_string(&c, text, "long.ini", &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(c.data.train, path);
    assert_string_equal(c.data.test, path);
    fdp_config_free(&c);

    /* errors on long lines still name the line */
    snprintf(text, sizeof text, "[data]\n\nfoo = %s\n", path);
    assert_string_equal(load_error(text), "configs/x.ini:3: unknown key [data] foo");
    snprintf(text, sizeof text, "[data]\ntrain = %s\ntest = x\ntrain = %s\n", path, path);
    assert_string_equal(load_error(text), "configs/x.ini:4: duplicate key [data] train (first set on line 2)");
    snprintf(text, sizeof text, "[data]\n%s\n", path);
    assert_non_null(strstr(load_error(text), "configs/x.ini:2: cannot parse"));
}

static void test_errors(void **state) {
    (void)state;
    /* the two examples of the design, word for word */
    assert_string_equal(load_error("[model]\ntype = glow\n\n[train]\nseed = 1\n\nlr = abc\n"),
                        "configs/x.ini:7: [train] lr = abc: not a number");
    assert_string_equal(load_error("; c\n[train]\nbtach_size = 32\n"),
                        "configs/x.ini:3: unknown key [train] btach_size (did you mean batch_size?)");
    /* unknown section: reported at its header line */
    assert_string_equal(load_error("[trian]\n\nlr = 1\n"),
                        "configs/x.ini:1: unknown section [trian] (did you mean [train]?)");
    assert_string_equal(load_error("[optimizer]\nlr = 1\n"), "configs/x.ini:1: unknown section [optimizer]");
    /* unknown key: no suggestion, or the key of another section */
    assert_string_equal(load_error("[train]\nzzzzzzzz = 1\n"), "configs/x.ini:2: unknown key [train] zzzzzzzz");
    assert_string_equal(load_error("[model]\nlr = 1\n"),
                        "configs/x.ini:2: unknown key [model] lr (did you mean [train] lr?)");
    assert_string_equal(load_error("lr = 1\n[train]\n"),
                        "configs/x.ini:1: key lr is outside any section (put it under [train])");
    /* bad values */
    assert_string_equal(load_error("[train]\nbatch_size = 3.5\n"),
                        "configs/x.ini:2: [train] batch_size = 3.5: not an integer");
    assert_string_equal(load_error("[train]\nbatch_size = 0\n"),
                        "configs/x.ini:2: [train] batch_size = 0: out of range (must be in [1, 65536])");
    assert_string_equal(load_error("[train]\nbatch_size = 99999999999\n"),
                        "configs/x.ini:2: [train] batch_size = 99999999999: out of range (must be in [1, 65536])");
    assert_string_equal(load_error("[train]\nbatch_size =\n"),
                        "configs/x.ini:2: [train] batch_size = : empty value (expected an integer)");
    assert_string_equal(load_error("[model]\ndata_constraint = 1\n"),
                        "configs/x.ini:2: [model] data_constraint = 1: out of range (must be in (0, 1))");
    assert_string_equal(load_error("[model]\nn_bits_x = 9\n"),
                        "configs/x.ini:2: [model] n_bits_x = 9: out of range (must be in [1, 8])");
    assert_string_equal(load_error("[train]\nlr = 0\n"), "configs/x.ini:2: [train] lr = 0: out of range (must be > 0)");
    assert_string_equal(load_error("[train]\nlr = nan\n"), "configs/x.ini:2: [train] lr = nan: not a finite number");
    assert_string_equal(load_error("[train]\nlr = 1e-3x\n"), "configs/x.ini:2: [train] lr = 1e-3x: not a number");
    assert_string_equal(load_error("[model]\ntype = flow\n"),
                        "configs/x.ini:2: [model] type = flow: not one of realnvp|glow|tutorial");
    assert_string_equal(load_error("[train]\nsignal = SIGKILL\n"),
                        "configs/x.ini:2: [train] signal = SIGKILL: not one of SIGUSR2|SIGUSR1|SIGTERM|none");
    assert_string_equal(load_error("[data]\nhflip = maybe\n"),
                        "configs/x.ini:2: [data] hflip = maybe: not a boolean (true|false|1|0|yes|no|on|off)");
    /* duplicate key in one file */
    assert_string_equal(load_error("[train]\nlr = 1e-3\nbatch_size = 3\n[model]\n[train]\nlr = 2e-3\n"),
                        "configs/x.ini:6: duplicate key [train] lr (first set on line 2)");
    /* syntax errors */
    assert_string_equal(load_error("[train]\nlr 1e-3\n"),
                        "configs/x.ini:2: cannot parse 'lr 1e-3': expected [section] or key = value");
    assert_string_equal(load_error("[train\nlr = 1\n"),
                        "configs/x.ini:1: cannot parse '[train': missing ']' after the section name");
    /* the first error wins, whatever its kind */
    assert_string_equal(load_error("[train]\nlr = x\nfoo\n"), "configs/x.ini:2: [train] lr = x: not a number");
    assert_string_equal(load_error("[train]\nfoo\nlr = x\n"),
                        "configs/x.ini:2: cannot parse 'foo': expected [section] or key = value");
}

static void test_files(void **state) {
    (void)state;
    char dir[256], path[512];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/run.ini", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[train]\nbatch_size = 16\n[checkpoint]\ndir = out/run1\n", f);
    fclose(f);
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    assert_int_equal(fdp_config_load_file(&c, path, &err), 0);
    assert_int_equal(c.train.batch_size, 16);
    assert_string_equal(c.checkpoint.dir, "out/run1");
    assert_string_equal(c.source_path, path);
    assert_string_equal(c.source_text, "[train]\nbatch_size = 16\n[checkpoint]\ndir = out/run1\n");

    /* errors in a file name the file */
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.ini", dir);
    f = fopen(bad, "w");
    fputs("[train]\n\nbatch_size = -4\n", f);
    fclose(f);
    assert_int_equal(fdp_config_load_file(&c, bad, &err), -1);
    char want[1024];
    snprintf(want, sizeof want, "%s:3: [train] batch_size = -4: out of range (must be in [1, 65536])", bad);
    assert_string_equal(err.msg, want);
    assert_int_equal(c.train.batch_size, 16); /* unchanged */
    assert_string_equal(c.source_path, path);

    /* a missing file: the path and strerror */
    snprintf(bad, sizeof bad, "%s/missing.ini", dir);
    assert_int_equal(fdp_config_load_file(&c, bad, &err), -1);
    snprintf(want, sizeof want, "cannot open config %s: No such file or directory", bad);
    assert_string_equal(err.msg, want);
    /* a directory */
    assert_int_equal(fdp_config_load_file(&c, dir, &err), -1);
    assert_non_null(strstr(err.msg, dir));
    assert_non_null(strstr(err.msg, "is a directory"));
    /* a FIFO without a writer: one line, no hang (a pipe with a writer, `--config <(...)`, is read) */
    char fifo[1100];
    snprintf(fifo, sizeof fifo, "%s/cfg.fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(fdp_config_load_file(&c, fifo, &err), -1);
    assert_non_null(strstr(err.msg, "a FIFO with nothing to read"));
    remove(fifo);
    fdp_config_free(&c);
    remove(path);
    snprintf(bad, sizeof bad, "%s/bad.ini", dir);
    remove(bad);
    remove(dir);
}

static void test_set(void **state) {
    (void)state;
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    assert_int_equal(fdp_config_load_string(&c, "[train]\nlr = 1e-3\n", "a.ini", &err), 0);
    assert_int_equal(fdp_config_set(&c, "train.lr=3e-4", &err), 0);
    assert_true(c.train.lr == 3e-4);
    assert_int_equal(fdp_config_set(&c, " train.lr = 5e-4 ", &err), 0); /* later overrides win */
    assert_true(c.train.lr == 5e-4);
    assert_int_equal(fdp_config_set(&c, "model.type=glow", &err), 0);
    assert_int_equal(c.model.type, FDP_MODEL_GLOW);
    assert_int_equal(fdp_config_set(&c, "data.train=/a b/c=d", &err), 0); /* value may contain '=' */
    assert_string_equal(c.data.train, "/a b/c=d");
    assert_int_equal(fdp_config_set(&c, "log.metrics=", &err), 0);
    assert_string_equal(c.log.metrics, "");
    assert_string_equal(c.source_path, "a.ini"); /* --set does not change the source */
    fdp_config_free(&c);

    assert_string_equal(set_error("train.lr"), "--set 'train.lr': expected section.key=value (e.g. train.lr=3e-4)");
    assert_string_equal(set_error("lr=1"), "--set 'lr=1': expected section.key=value (did you mean train.lr?)");
    assert_string_equal(set_error("train.btach_size=3"),
                        "--set: unknown key [train] btach_size (did you mean batch_size?)");
    assert_string_equal(set_error("trian.lr=3"), "--set: unknown section [trian] (did you mean [train]?)");
    assert_string_equal(set_error("train.lr=abc"), "--set: [train] lr = abc: not a number");
    assert_string_equal(set_error("train.optimizer=sgd"), "--set: [train] optimizer = sgd: not one of adam|adamax");
    assert_string_equal(set_error("data.train=\"/a"),
                        "--set: [data] train = \"/a: unbalanced quote (a quoted value must start and end with the same "
                        "quote character)");
}

static void test_validate(void **state) {
    (void)state;
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    assert_int_equal(fdp_config_set(&c, "train.epochs=0", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_string_equal(err.msg,
                        "--set train.epochs=0: [train] steps = 0 and [train] epochs = 0: nothing to train (set one of them)");
    assert_int_equal(fdp_config_set(&c, "train.steps=100", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), 0);
    assert_int_equal(fdp_config_set(&c, "train.warmup_steps=200", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_string_equal(err.msg, "--set train.warmup_steps=200: [train] warmup_steps = 200 is larger than [train] steps = 100");
    assert_int_equal(fdp_config_set(&c, "train.warmup_steps=10", &err), 0);
    assert_int_equal(fdp_config_set(&c, "train.lr_decay=cosine", &err), 0);
    assert_int_equal(fdp_config_set(&c, "train.lr_min=0.1", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "[train] lr_min = 0.1 is larger than [train] lr = 0.001"));
    assert_int_equal(fdp_config_set(&c, "train.lr_min=1e-5", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), 0);
    /* fields set directly by code are checked against the table too */
    c.train.batch_size = 0;
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_string_equal(err.msg, "config: [train] batch_size = 0: out of range (must be in [1, 65536])");
    c.train.batch_size = 8;
    c.model.type = (fdp_model_type)5;
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "[model] type"));
    c.model.type = FDP_MODEL_GLOW;
    strcpy(c.checkpoint.dir, " run");
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_non_null(strstr(err.msg, "[checkpoint] dir"));
}

static void test_to_ini_round_trip(void **state) {
    (void)state;
    fdp_config a, b;
    fdp_err err = {{0}};
    fdp_config_defaults(&a);
    /* change every kind of field, with values that are awkward to print */
    const char *sets[] = {"model.type=glow", "model.data_constraint=0.95", "model.learntop=no",
                          "model.flow_permutation=shuffle", "data.format=hdf5", "data.train=/d/im net/train.h5",
                          "data.test=t#1", "data.test_limit=9876543210", "data.translate=0.1",
                          "train.adam_eps=1e-300", "train.epochs=2.5",
                          "train.lr_decay_rate=0.9999951", "train.seed=9007199254740993", "train.signal=none",
                          "train.device=cuda", "checkpoint.dir=runs/glow c10", "log.level=warn", "log.metrics=m.h5",
                          "data.train='\"q\" ;x'"}; /* quotes of its own and a ';' after a blank: written quoted */
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        int rc = fdp_config_set(&a, sets[i], &err);
        if (rc) fprintf(stderr, "%s\n", err.msg);
        assert_int_equal(rc, 0);
    }
    a.train.ema = 1.0 / 3.0;
    a.train.lr = 0.1 + 0.2;
    char longpath[700] = "/p";
    while (strlen(longpath) < 600) strcat(longpath, "/abcdefghij");
    strcpy(a.log.metrics, longpath);
    char *ini = fdp_config_to_ini(&a);
    assert_non_null(ini);
    for (int i = 0; i < N_ALL_KEYS; i++) { /* every key is written */
        char line[64];
        snprintf(line, sizeof line, "\n%s =", ALL_KEYS[i][1]);
        assert_non_null(strstr(ini, line));
    }
    assert_non_null(strstr(ini, "\nlr = 0.30000000000000004\n"));
    assert_non_null(strstr(ini, "\nlr_decay_rate = 0.9999951\n"));
    assert_non_null(strstr(ini, "\ndata_constraint = 0.95\n"));
    fdp_config_defaults(&b);
    assert_false(fdp_config_equal(&a, &b));
    int rc = fdp_config_load_string(&b, ini, "checkpoint", &err);
    if (!fdp_config_equal(&a, &b)) fprintf(stderr, "[%s] [%s]\n%s\n", a.data.train, b.data.train, ini);
    if (rc) fprintf(stderr, "%s\n%s\n", err.msg, ini);
    assert_int_equal(rc, 0);
    assert_true(fdp_config_equal(&a, &b));
    assert_string_equal(b.log.metrics, longpath);
    /* and again: to_ini of the loaded config is the same text */
    char *ini2 = fdp_config_to_ini(&b);
    assert_string_equal(ini, ini2);
    /* the defaults round-trip too */
    fdp_config d, e;
    fdp_config_defaults(&d);
    fdp_config_defaults(&e);
    char *ini3 = fdp_config_to_ini(&d);
    assert_int_equal(fdp_config_set(&e, "train.lr=0.5", &err), 0);
    assert_int_equal(fdp_config_load_string(&e, ini3, "defaults", &err), 0);
    assert_true(fdp_config_equal(&d, &e));
    b.train.bucket_mb += 1e-9;
    assert_false(fdp_config_equal(&a, &b));
    free(ini);
    free(ini2);
    free(ini3);
    fdp_config_free(&b);
    fdp_config_free(&e);
}

static void test_help(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    fdp_config_print_help(f);
    fclose(f);
    assert_true(len > 1000);
    for (int i = 0; i < N_ALL_KEYS; i++) {
        char sec[64], key[64];
        snprintf(sec, sizeof sec, "\n[%s]", ALL_KEYS[i][0]);
        snprintf(key, sizeof key, "\n  %s ", ALL_KEYS[i][1]);
        const char *s = strstr(buf, sec);
        assert_non_null(s);
        const char *k = strstr(s + 1, key);
        if (!k) fprintf(stderr, "help lacks [%s] %s\n", ALL_KEYS[i][0], ALL_KEYS[i][1]);
        assert_non_null(k);
        const char *next = strstr(s + 1, "\n[");
        assert_true(next == NULL || k < next); /* listed in its own section */
    }
    assert_non_null(strstr(buf, "one of realnvp|glow"));
    assert_non_null(strstr(buf, "one of reverse|shuffle|invconv|invconv_lu"));
    assert_non_null(strstr(buf, "float in (0, 1)"));
    assert_non_null(strstr(buf, "default invconv_lu"));
    free(buf);
}

/* quoted values: a value wholly enclosed in matching quotes is unquoted, in files and --set */
static void test_quotes(void **state) {
    (void)state;
    const char *text = "[checkpoint]\n"
                       "dir = \"/scratch/my run\"\n"
                       "[data]\n"
                       "train = 'a;b' ; a comment after the closing quote\n"
                       "test = \"x ;y #z\" # another\n"
                       "[log]\n"
                       "metrics = \"\"\n"
                       "[train]\n"
                       "lr = \"3e-4\"\n"
                       "optimizer = 'adamax'\n";
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    int rc = fdp_config_load_string(&c, text, "q.ini", &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(c.checkpoint.dir, "/scratch/my run");
    assert_string_equal(c.data.train, "a;b");
    assert_string_equal(c.data.test, "x ;y #z");
    assert_string_equal(c.log.metrics, "");
    assert_true(c.train.lr == 3e-4);
    assert_int_equal(c.train.optimizer, FDP_OPT_ADAMAX);
    /* quotes inside a value, or an inner quote before the real closing one, are literal */
    assert_int_equal(fdp_config_load_string(&c, "[data]\ntrain = \"a\"b\"\ntest = it's\n", "q2.ini", &err), 0);
    assert_string_equal(c.data.train, "a\"b");
    assert_string_equal(c.data.test, "it's");
    /* a quoted value longer than inih's line buffer */
    char big[1400], want[700] = "/p";
    while (strlen(want) < 600) strcat(want, "/x y ;z");
    snprintf(big, sizeof big, "[data]\ntrain = \"%s\" ; c\n", want);
    assert_int_equal(fdp_config_load_string(&c, big, "q3.ini", &err), 0);
    assert_string_equal(c.data.train, want);
    /* --set */
    assert_int_equal(fdp_config_set(&c, "checkpoint.dir=\"/a b\"", &err), 0);
    assert_string_equal(c.checkpoint.dir, "/a b");
    assert_int_equal(fdp_config_set(&c, "checkpoint.dir='\"x\"'", &err), 0);
    assert_string_equal(c.checkpoint.dir, "\"x\"");
    fdp_config_free(&c);

    /* unbalanced: one line naming the file, the line and the key; nothing changes */
    const char *uq = "unbalanced quote (a quoted value must start and end with the same quote character)";
    char want_msg[512];
    snprintf(want_msg, sizeof want_msg, "configs/x.ini:2: [checkpoint] dir = \"/scratch/run: %s", uq);
    assert_string_equal(load_error("[checkpoint]\ndir = \"/scratch/run\n"), want_msg);
    snprintf(want_msg, sizeof want_msg, "configs/x.ini:3: [checkpoint] dir = run': %s", uq);
    assert_string_equal(load_error("[checkpoint]\n\ndir = run'   ; c\n"), want_msg);
    snprintf(want_msg, sizeof want_msg, "configs/x.ini:2: [checkpoint] dir = \"abc': %s", uq);
    assert_string_equal(load_error("[checkpoint]\ndir = \"abc'\n"), want_msg);
    snprintf(want_msg, sizeof want_msg, "configs/x.ini:2: [checkpoint] dir = \": %s", uq);
    assert_string_equal(load_error("[checkpoint]\ndir = \"\n"), want_msg);
    snprintf(want_msg, sizeof want_msg, "configs/x.ini:2: [checkpoint] dir = \"a: %s", uq); /* inih's " ;" cut */
    assert_string_equal(load_error("[checkpoint]\ndir = \"a ;b\n"), want_msg);
    snprintf(want_msg, sizeof want_msg, "configs/x.ini:2: [train] lr = \"1e-3: %s", uq);
    assert_string_equal(load_error("[train]\nlr = \"1e-3\n"), want_msg);
    /* the unknown key is reported before the value */
    assert_string_equal(load_error("[checkpoint]\ndri = \"x\n"),
                        "configs/x.ini:2: unknown key [checkpoint] dri (did you mean dir?)");
    snprintf(want_msg, sizeof want_msg, "--set: [checkpoint] dir = '/a: %s", uq);
    assert_string_equal(set_error("checkpoint.dir='/a"), want_msg);
}

/* every size and count has an upper bound, checked when the value is read */
static void test_bounds(void **state) {
    (void)state;
    static const char *const cases[][2] = {
        {"train.eval_batch_size=2000000000", "[train] eval_batch_size = 2000000000: out of range (must be in [1, 65536])"},
        {"data.prefetch=2000000000", "[data] prefetch = 2000000000: out of range (must be in [0, 1024])"},
        {"model.mid_channels=2000000000", "[model] mid_channels = 2000000000: out of range (must be in [1, 4096])"},
        {"model.num_blocks=257", "[model] num_blocks = 257: out of range (must be in [1, 256])"},
        {"model.num_scales=17", "[model] num_scales = 17: out of range (must be in [1, 16])"},
        {"model.n_levels=17", "[model] n_levels = 17: out of range (must be in [1, 16])"},
        {"model.depth=1025", "[model] depth = 1025: out of range (must be in [1, 1024])"},
        {"model.width=4097", "[model] width = 4097: out of range (must be in [1, 4096])"},
        {"train.batch_size=65537", "[train] batch_size = 65537: out of range (must be in [1, 65536])"},
        {"train.threads=1025", "[train] threads = 1025: out of range (must be in [0, 1024])"},
        {"train.steps=1000000001", "[train] steps = 1000000001: out of range (must be in [0, 1000000000])"},
        {"train.steps=99999999999999999999", "[train] steps = 99999999999999999999: out of range (must be in [0, "
                                              "1000000000])"},
        {"train.warmup_steps=1000000001", "[train] warmup_steps = 1000000001: out of range (must be in [0, 1000000000])"},
        {"train.eval_every=1000000001", "[train] eval_every = 1000000001: out of range (must be in [0, 1000000000])"},
        {"train.check_every=1000000001", "[train] check_every = 1000000001: out of range (must be in [0, 1000000000])"},
        {"train.epochs=1e7", "[train] epochs = 1e7: out of range (must be in [0, 1e+06])"},
        {"train.bucket_mb=5000", "[train] bucket_mb = 5000: out of range (must be in (0, 4096])"},
        {"train.watchdog_s=1e8", "[train] watchdog_s = 1e8: out of range (must be in [0, 1e+07])"},
        {"checkpoint.every=1000000001", "[checkpoint] every = 1000000001: out of range (must be in [0, 1000000000])"},
        {"checkpoint.keep_last=10001", "[checkpoint] keep_last = 10001: out of range (must be in [1, 10000])"},
        {"log.every=1000000001", "[log] every = 1000000001: out of range (must be in [1, 1000000000])"},
        {"data.train_limit=10000000001", "[data] train_limit = 10000000001: out of range (must be in [0, 10000000000])"},
        {"data.test_limit=10000000001", "[data] test_limit = 10000000001: out of range (must be in [0, 10000000000])"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[256];
        snprintf(want, sizeof want, "--set: %s", cases[i][1]);
        assert_string_equal(set_error(cases[i][0]), want);
    }
    /* in a file: the file, the line, the key, the value and the range */
    assert_string_equal(load_error("[train]\nthreads = 5000\n"),
                        "configs/x.ini:2: [train] threads = 5000: out of range (must be in [0, 1024])");
    assert_string_equal(load_error("[model]\nmid_channels = 2000000000\n"),
                        "configs/x.ini:2: [model] mid_channels = 2000000000: out of range (must be in [1, 4096])");
    /* the bounds themselves are allowed */
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    const char *ok[] = {"model.mid_channels=4096", "train.batch_size=65536", "data.prefetch=1024", "train.threads=1024",
                        "train.steps=1000000000", "model.num_scales=16", "train.eval_batch_size=65536"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) assert_int_equal(fdp_config_set(&c, ok[i], &err), 0);
    /* and validate checks fields set by code against the same bounds */
    c.data.prefetch = 2000000000;
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_string_equal(err.msg,
                        "--set data.prefetch=1024: [data] prefetch = 2000000000: out of range (must be in [0, 1024])");
    /* --help prints the ranges */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fdp_config_print_help(f);
    fclose(f);
    assert_non_null(strstr(buf, "int in [1, 4096]"));
    assert_non_null(strstr(buf, "int in [1, 65536]"));
    assert_non_null(strstr(buf, "int64 in [0, 1000000000]"));
    free(buf);
}

/* stderr of fn(c) into out (for the fdp_warn line) */
static void capture_stderr(void (*fn)(const fdp_config *), const fdp_config *c, char *out, size_t n) {
    fflush(stderr);
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    fn(c);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t got = fread(out, 1, n - 1, tmp);
    out[got] = '\0';
    fclose(tmp);
}

static void validate_ok(const fdp_config *c) {
    fdp_err err = {{0}};
    assert_int_equal(fdp_config_validate(c, &err), 0);
}

static void test_threads_warning(void **state) {
    (void)state;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    assert_int_equal(fdp_config_load_string(&c, "[train]\n\nthreads = 1024\n", "t.ini", &err), 0);
    char out[1024];
    capture_stderr(validate_ok, &c, out, sizeof out);
    if (ncpu >= 1 && ncpu < 1024) {
        char want[512];
        snprintf(want, sizeof want,
                 "flowdp: warning: t.ini:3: [train] threads = 1024: more threads per rank than the %ld online CPUs of "
                 "this machine (oversubscribed threads run slowly; 0 = all cores)\n", ncpu);
        assert_string_equal(out, want); /* exactly one line */
    }
    c.train.threads = 1;
    capture_stderr(validate_ok, &c, out, sizeof out);
    assert_string_equal(out, "");
    fdp_config_free(&c);
}

/* where each value came from: the file and line, the --set, or a default */
static void test_origins(void **state) {
    (void)state;
    fdp_config c;
    fdp_err err = {{0}};
    char buf[512];
    fdp_config_defaults(&c);
    assert_string_equal(fdp_config_where(&c, "model", "num_scales", buf, sizeof buf), "config: [model] num_scales = 2");
    assert_int_equal(fdp_config_load_string(&c, "[model]\nmid_channels = 8\n\nnum_scales = 4\n", "cfg.ini", &err), 0);
    assert_string_equal(fdp_config_where(&c, "model", "num_scales", buf, sizeof buf), "cfg.ini:4: [model] num_scales = 4");
    assert_string_equal(fdp_config_where(&c, "model", "num_blocks", buf, sizeof buf), "cfg.ini: [model] num_blocks = 8");
    assert_int_equal(fdp_config_set(&c, " model.num_scales = 3 ", &err), 0);
    assert_string_equal(fdp_config_where(&c, "model", "num_scales", buf, sizeof buf), "--set model.num_scales=3");
    assert_int_equal(fdp_config_key_error(&c, &err, "model", "num_scales", "scale %d of %d", 3, 3), -1);
    assert_string_equal(err.msg, "--set model.num_scales=3: scale 3 of 3");
    assert_int_equal(fdp_config_key_error(&c, &err, "model", "mid_channels", "too wide"), -1);
    assert_string_equal(err.msg, "cfg.ini:2: [model] mid_channels = 8: too wide");
    /* a later file: keys it does not set no longer have a line */
    assert_int_equal(fdp_config_load_string(&c, "[train]\nlr = 1\n", "second.ini", &err), 0);
    assert_string_equal(fdp_config_where(&c, "model", "mid_channels", buf, sizeof buf),
                        "second.ini: [model] mid_channels = 8");
    assert_string_equal(fdp_config_where(&c, "model", "num_scales", buf, sizeof buf), "--set model.num_scales=3");
    /* a long --set is shortened */
    char set[400] = "data.train=/";
    while (strlen(set) < 300) strcat(set, "abcdefghij");
    assert_int_equal(fdp_config_set(&c, set, &err), 0);
    fdp_config_where(&c, "data", "train", buf, sizeof buf);
    assert_int_equal(strlen(buf), FDP_CONFIG_ORIGIN_MAX - 1);
    assert_non_null(strstr(buf, "..."));
    /* validate names the origin of the key at fault */
    assert_int_equal(fdp_config_set(&c, "train.steps=10", &err), 0);
    assert_int_equal(fdp_config_load_string(&c, "[train]\nsteps = 10\n\nwarmup_steps = 20\n", "w.ini", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_string_equal(err.msg, "w.ini:4: [train] warmup_steps = 20 is larger than [train] steps = 10");
    fdp_config_free(&c);
}

/* geometry errors about a key name where its value came from, and count from 1 */
static void test_model_geometry(void **state) {
    (void)state;
    fdp_config c;
    fdp_err err = {{0}};
    fdp_model *m = NULL;
    fdp_config_defaults(&c);
    assert_int_equal(fdp_config_load_string(&c, "[model]\nmid_channels = 4\nnum_blocks = 1\n", "cfg.ini", &err), 0);
    assert_int_equal(fdp_config_set(&c, "model.num_scales=4", &err), 0);
    assert_int_equal(fdp_model_create(&c, 1, 28, 28, NULL, 0, &m, &err), -1);
    assert_null(m);
    assert_string_equal(err.msg, "--set model.num_scales=4: scale 3 of 4 would get a 7x7 image, which cannot be "
                                 "squeezed (odd height); with 4 scales the image size (28x28) must be divisible by 8");
    assert_int_equal(fdp_config_load_string(&c, "[model]\n\nnum_scales = 3\n", "cfg.ini", &err), 0);
    assert_int_equal(fdp_model_create(&c, 3, 6, 6, NULL, 0, &m, &err), -1);
    assert_string_equal(err.msg, "cfg.ini:3: [model] num_scales = 3: scale 2 of 3 would get a 3x3 image, which cannot "
                                 "be squeezed (odd height); with 3 scales the image size (6x6) must be divisible by 4");
    /* Glow: levels */
    assert_int_equal(fdp_config_load_string(&c, "[model]\ntype = glow\nn_levels = 3\n", "g.ini", &err), 0);
    assert_int_equal(fdp_model_create(&c, 1, 28, 28, NULL, 0, &m, &err), -1);
    assert_string_equal(err.msg, "g.ini:3: [model] n_levels = 3: level 3 of 3 would get a 7x7 image, which cannot be "
                                 "squeezed (odd height); with 3 levels the image size (28x28) must be divisible by 8");
    assert_int_equal(fdp_config_set(&c, "model.n_levels=1", &err), 0);
    assert_int_equal(fdp_model_create(&c, 3, 6, 5, NULL, 0, &m, &err), -1);
    assert_string_equal(err.msg, "--set model.n_levels=1: level 1 of 1 would get a 6x5 image, which cannot be squeezed "
                                 "(odd width); with 1 level the image size (6x5) must be divisible by 2");
    /* products: one activation tensor of batch x width x image */
    assert_int_equal(fdp_config_set(&c, "train.batch_size=65536", &err), 0);
    assert_int_equal(fdp_config_set(&c, "model.width=4096", &err), 0);
    assert_int_equal(fdp_model_create(&c, 3, 64, 64, NULL, 0, &m, &err), -1);
    assert_non_null(strstr(err.msg, "--set train.batch_size=65536: 65536 images x 4194304 floats per image"));
    assert_non_null(strstr(err.msg, "lower the batch size"));
    fdp_config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),  cmocka_unit_test(test_load_string),
        cmocka_unit_test(test_long_lines), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_files),     cmocka_unit_test(test_set),
        cmocka_unit_test(test_validate),  cmocka_unit_test(test_to_ini_round_trip),
        cmocka_unit_test(test_help),      cmocka_unit_test(test_quotes),
        cmocka_unit_test(test_bounds),    cmocka_unit_test(test_threads_warning),
        cmocka_unit_test(test_origins),   cmocka_unit_test(test_model_geometry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
