/* flowdp_pack.c — flowdp-pack: converts datasets (downsampled-ImageNet .npz,
 * JPEG/PNG folders, CIFAR-10 binary, IDX) into packed HDF5 shards plus an index
 * (format: include/flowdp/shards.h, README "Packed datasets"), and checks packed
 * shards (--verify). The work is in src/data/pack.c. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flowdp/log.h"
#include "flowdp/pack.h"
#include "flowdp/shards.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: flowdp-pack --out DIR [options] INPUT...\n"
            "       flowdp-pack --verify INDEX\n"
            "Packs images into HDF5 shards DIR/<split>-NNNNN-of-MMMMM.h5 and the index DIR/<split>.index\n"
            "that [data] format = hdf5 (flowdp-train, flowdp-eval) reads.\n"
            "INPUT (all of one format; samples are packed in the order given):\n"
            "  FILE.npz        downsampled ImageNet (Imagenet32_train_npz/train_data_batch_1.npz, ...):\n"
            "                  data uint8 (N, 3*S*S) in CHW order, labels 1-based (stored 0-based)\n"
            "  DIR or FILE.bin CIFAR-10 binary version (split test: test_batch.bin, else data_batch_1..5)\n"
            "  IDX images file or DIR with train-/t10k-images-idx3-ubyte(.gz) (labels beside it)\n"
            "  DIR of images   one sub-folder per class (labels: sorted sub-folder names), *.jpg *.jpeg\n"
            "                  *.png decoded, centre-cropped to a square and area-averaged to SxS\n"
            "Options:\n"
            "  -o, --out DIR           output directory (created when missing)\n"
            "  -s, --split NAME        split name: file names and NAME.index (default train)\n"
            "  -f, --format F          auto (default: by name/content), npz, cifar10, idx, images\n"
            "  -n, --per-shard N       images per shard (default 10000)\n"
            "  -N, --shards K          aim for K shards instead (per shard = ceil(total / K)); a shard\n"
            "                          never spans two input files, so K may be exceeded by inputs - 1\n"
            "  -S, --size S            output side for image folders (required there; 1 to 1024); for other\n"
            "                          inputs a check that the images are SxS (they are not resized). Images\n"
            "                          smaller than S are enlarged (upscaled): one warning gives their count\n"
            "  -l, --limit N           pack only the first N images (default all)\n"
            "  -j, --threads T         pack T inputs (npz/cifar10/idx) or shards (image folders) at a time\n"
            "                          (default: the number of online CPUs)\n"
            "      --progress          progress bar on stderr even when it is not a terminal\n"
            "      --no-progress       no progress bar (default: shown when stderr is a terminal)\n"
            "      --force             replace an existing index and shards of the same names\n"
            "      --skip-bad          image folders: skip damaged JPEG/PNG files (truncated data, CRC errors,\n"
            "                          any libjpeg/libpng warning) and report their count at the end (one\n"
            "                          line); each image is then decoded twice. Default: refuse them\n"
            "      --verify INDEX      check every shard listed in INDEX (structure and checksum) and exit\n"
            "  -h, --help              this text\n"
            "Exit status: 0 done, 2 bad input (one line on stderr naming the file and the problem).\n"
            "Nothing half-written is left: shards are written to temporary names and renamed when all are\n"
            "done, the index last; a failed run removes its temporaries and changes no file that existed.\n");
}

static long long parse_pos(const char *s, long long max) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 1 || v > max) return -1;
    return v;
}

/* the option as the user typed it for the value just parsed: "--per-shard", "--per" (an
 * abbreviation), "-n" (also for "-n0" and "--per-shard=0") */
static void typed_option(char **argv, int optind_now, const char *value, char *out, size_t len) {
    const char *arg = argv[optind_now - 1];
    if (arg == value && optind_now >= 2) { /* "--per-shard 0" or "-n 0": the option is the word before */
        snprintf(out, len, "%s", argv[optind_now - 2]);
        return;
    }
    if (arg[0] == '-' && arg[1] == '-') { /* --per-shard=0 */
        const char *eq = strchr(arg, '=');
        snprintf(out, len, "%.*s", eq ? (int)(eq - arg) : (int)strlen(arg), arg);
        return;
    }
    snprintf(out, len, "%.2s", arg); /* -n0 */
}

typedef struct cli {
    fdp_pack_opts o;
    const char *verify;
    int per_shard_given;
} cli;

/* one numeric option; 0 or 2 (after printing the one line) */
static int numeric_option(cli *c, int opt, char **argv) {
    char name[64];
    typed_option(argv, optind, optarg, name, sizeof name);
    long long max = opt == 'n' || opt == 'l' ? (1LL << 40) : opt == 'S' ? FDP_PACK_MAX_SIZE : 1000000;
    long long v = parse_pos(optarg, max);
    if (v < 0) {
        fprintf(stderr, "flowdp-pack: %s %s: expected an integer from 1 to %lld%s\n", name, optarg, max,
                opt == 'S' ? " (the output side; larger sizes are refused)" : "");
        return 2;
    }
    if (opt == 'n') c->o.per_shard = v, c->per_shard_given = 1;
    if (opt == 'N') c->o.shards = (int)v;
    if (opt == 'S') c->o.size = (int)v;
    if (opt == 'l') c->o.limit = v;
    if (opt == 'j') c->o.threads = (int)v;
    return 0;
}

/* the command line into c; 0, 1 (--help printed) or 2 (one line printed) */
static int parse_cli(int argc, char **argv, cli *c) {
    enum { OPT_PROGRESS = 1000, OPT_NO_PROGRESS, OPT_FORCE, OPT_VERIFY, OPT_SKIP_BAD };
    static struct option opts[] = {{"out", required_argument, 0, 'o'},       {"split", required_argument, 0, 's'},
                                   {"format", required_argument, 0, 'f'},    {"per-shard", required_argument, 0, 'n'},
                                   {"shards", required_argument, 0, 'N'},    {"size", required_argument, 0, 'S'},
                                   {"limit", required_argument, 0, 'l'},     {"threads", required_argument, 0, 'j'},
                                   {"progress", no_argument, 0, OPT_PROGRESS},
                                   {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
                                   {"force", no_argument, 0, OPT_FORCE},     {"verify", required_argument, 0, OPT_VERIFY},
                                   {"skip-bad", no_argument, 0, OPT_SKIP_BAD},
                                   {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    int opt;
    opterr = 0; /* bad options get one line from us, not getopt's line plus the usage */
    while ((opt = getopt_long(argc, argv, ":o:s:f:n:N:S:l:j:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'o': c->o.out_dir = optarg; break;
        case 's': c->o.split = optarg; break;
        case 'f': c->o.format = optarg; break;
        case 'n':
        case 'N':
        case 'S':
        case 'l':
        case 'j':
            if (numeric_option(c, opt, argv) != 0) return 2;
            break;
        case OPT_PROGRESS: c->o.progress = 1; break;
        case OPT_NO_PROGRESS: c->o.progress = 0; break;
        case OPT_FORCE: c->o.force = 1; break;
        case OPT_SKIP_BAD: c->o.skip_bad = 1; break;
        case OPT_VERIFY: c->verify = optarg; break;
        case 'h': usage(stdout); return 1;
        case ':':
            fprintf(stderr, "flowdp-pack: %s needs a value (see --help)\n", argv[optind - 1]);
            return 2;
        default:
            if (optopt && optopt < 256) fprintf(stderr, "flowdp-pack: unknown option -%c (see --help)\n", optopt);
            else fprintf(stderr, "flowdp-pack: unknown option %s (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (c->o.shards > 0 && c->per_shard_given) {
        fprintf(stderr, "flowdp-pack: --shards and --per-shard exclude each other: give one (see --help)\n");
        return 2;
    }
    return 0;
}

static int verify_index(const char *index) {
    fdp_err err = {{0}};
    fdp_shards *s = NULL;
    if (fdp_shards_open(index, 1, 0, &s, &err) != 0 || fdp_shards_verify(s, 0, 1, &err) != 0) {
        fprintf(stderr, "flowdp-pack: %s\n", err.msg);
        fdp_shards_close(s);
        return 2;
    }
    int ch, h, w;
    fdp_shards_shape(s, &ch, &h, &w);
    printf("%s: %d shard(s), %lld images of %dx%dx%d (HxWxC), structure and checksums OK\n", index,
           fdp_shards_num(s), (long long)fdp_shards_count(s), h, w, ch);
    fdp_shards_close(s);
    return 0;
}

int main(int argc, char **argv) {
    fdp_log_set_prog("flowdp-pack");
    cli c = {.o = {.split = "train", .format = "auto", .per_shard = 10000, .threads = 0}};
    c.o.progress = isatty(STDERR_FILENO);
    int rc = parse_cli(argc, argv, &c);
    if (rc != 0) return rc == 1 ? 0 : rc;
    if (c.verify) {
        if (optind != argc) {
            fprintf(stderr, "flowdp-pack: --verify takes only the index (see --help)\n");
            return 2;
        }
        return verify_index(c.verify);
    }
    if (!c.o.out_dir) {
        fprintf(stderr, "flowdp-pack: need --out DIR (see --help)\n");
        return 2;
    }
    if (optind >= argc) {
        fprintf(stderr, "flowdp-pack: need at least one INPUT after the options (see --help)\n");
        return 2;
    }
    if (c.o.threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c.o.threads = n > 0 ? (int)n : 1;
    }
    fdp_err err = {{0}};
    fdp_pack_result r;
    if (fdp_pack((const char *const *)argv + optind, argc - optind, &c.o, &r, &err) != 0) {
        fprintf(stderr, "flowdp-pack: %s\n", err.msg);
        return 2;
    }
    if (r.skipped_files > 0)
        fdp_warn("skipped %lld file(s) whose names are not .jpg/.jpeg/.png", (long long)r.skipped_files);
    if (r.bad_images > 0)
        fdp_warn("--skip-bad: skipped %lld damaged image(s); the first: %s", (long long)r.bad_images, r.first_bad);
    if (r.upscaled > 0)
        fdp_warn("%lld of %lld image(s) are smaller than --size %d and were enlarged (upscaled)", (long long)r.upscaled,
                 (long long)r.images, r.h);
    printf("packed %lld images of %dx%dx%d (HxWxC) into %d shard(s) in %.1f s (%.0f images/s): %s\n",
           (long long)r.images, r.h, r.w, r.c, r.shards, r.seconds, r.seconds > 0 ? (double)r.images / r.seconds : 0.0,
           r.index_path);
    return 0;
}
