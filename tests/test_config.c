/* test_config.c — the INI config: defaults, loading, every kind of error with
 * its one-line message (file, line, section, key), --set overrides, validation,
 * the to_ini round trip, and the help text listing every key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/config.h"
#include "testutil.h"

/* every key the design names, by section: help and to_ini must list them all */
static const char *const ALL_KEYS[][2] = {
    {"model", "type"}, {"model", "num_scales"}, {"model", "mid_channels"}, {"model", "num_blocks"},
    {"model", "data_constraint"}, {"model", "n_bits_x"}, {"model", "n_levels"}, {"model", "depth"},
    {"model", "width"}, {"model", "flow_permutation"}, {"model", "flow_coupling"}, {"model", "learntop"},
    {"data", "format"}, {"data", "train"}, {"data", "test"}, {"data", "test_limit"}, {"data", "prefetch"},
    {"data", "hflip"}, {"data", "translate"}, {"data", "verify"},
    {"train", "device"}, {"train", "threads"}, {"train", "batch_size"}, {"train", "steps"}, {"train", "epochs"},
    {"train", "seed"}, {"train", "optimizer"}, {"train", "lr"}, {"train", "adam_beta1"}, {"train", "adam_beta2"},
    {"train", "adam_eps"}, {"train", "weight_decay"}, {"train", "max_grad_norm"}, {"train", "warmup_steps"},
    {"train", "lr_decay"}, {"train", "lr_min"}, {"train", "lr_decay_rate"}, {"train", "ema"},
    {"train", "eval_every"}, {"train", "eval_batch_size"}, {"train", "on_nonfinite"},
    {"train", "rebuild_activations"}, {"train", "bucket_mb"}, {"train", "check_every"}, {"train", "signal"},
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
        "steps = 10000000000\n"
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
    assert_true(c.train.steps == 10000000000LL);
    assert_int_equal(c.train.seed, 42);
    assert_int_equal(c.train.signal, FDP_STOP_SIGUSR1);
    assert_true(c.train.rebuild_activations);
    assert_true(c.train.ema == 0.999);
    assert_string_equal(c.log.metrics, "");
    assert_int_equal(c.log.level, FDP_LOG_DEBUG);
    assert_int_equal(c.model.num_scales, 2); /* untouched keys keep their defaults */
    assert_string_equal(c.source_text, text);
    assert_string_equal(c.source_path, "quick.ini");
    /* rebuild_activations is RealNVP only: with glow it is an error, not silently ignored */
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_string_equal(err.msg, "quick.ini: [train] rebuild_activations = true is not implemented for [model] type = "
                                 "glow (RealNVP only); set it to false");
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
                        "configs/x.ini:2: [train] batch_size = 0: out of range (must be >= 1)");
    assert_string_equal(load_error("[train]\nbatch_size = 99999999999\n"),
                        "configs/x.ini:2: [train] batch_size = 99999999999: out of range (must be <= 2147483647)");
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
                        "configs/x.ini:2: [model] type = flow: not one of realnvp|glow");
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
    snprintf(want, sizeof want, "%s:3: [train] batch_size = -4: out of range (must be >= 1)", bad);
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
    assert_non_null(strstr(err.msg, "Is a directory"));
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
    assert_string_equal(set_error("data.train=a ;b"),
                        "--set: [data] train = a ;b: ';' or '#' at the start or after whitespace would be read back as "
                        "a comment");
}

static void test_validate(void **state) {
    (void)state;
    fdp_config c;
    fdp_err err = {{0}};
    fdp_config_defaults(&c);
    assert_int_equal(fdp_config_set(&c, "train.epochs=0", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_string_equal(err.msg, "config: [train] steps = 0 and [train] epochs = 0: nothing to train (set one of them)");
    assert_int_equal(fdp_config_set(&c, "train.steps=100", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), 0);
    assert_int_equal(fdp_config_set(&c, "train.warmup_steps=200", &err), 0);
    assert_int_equal(fdp_config_validate(&c, &err), -1);
    assert_string_equal(err.msg, "config: [train] warmup_steps = 200 is larger than [train] steps = 100");
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
    assert_string_equal(err.msg, "config: [train] batch_size = 0: out of range (must be >= 1)");
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
                          "data.test=t#1", "data.test_limit=123456789012", "data.translate=0.1",
                          "train.adam_eps=1e-300", "train.epochs=2.5",
                          "train.lr_decay_rate=0.9999951", "train.seed=9007199254740993", "train.signal=none",
                          "train.device=cuda", "checkpoint.dir=runs/glow c10", "log.level=warn", "log.metrics=m.h5"};
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),  cmocka_unit_test(test_load_string),
        cmocka_unit_test(test_long_lines), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_files),     cmocka_unit_test(test_set),
        cmocka_unit_test(test_validate),  cmocka_unit_test(test_to_ini_round_trip),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
