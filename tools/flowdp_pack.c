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
            "  -S, --size S            output side for image folders (required there); for other inputs\n"
            "                          a check that the images are SxS (they are not resized)\n"
            "  -l, --limit N           pack only the first N images (default all)\n"
            "  -j, --threads T         pack T inputs (npz/cifar10/idx) or shards (image folders) at a time\n"
            "                          (default: the number of online CPUs)\n"
            "      --progress          progress bar on stderr even when it is not a terminal\n"
            "      --no-progress       no progress bar (default: shown when stderr is a terminal)\n"
            "      --force             replace an existing index and shards of the same names\n"
            "      --verify INDEX      check every shard listed in INDEX (structure and checksum) and exit\n"
            "  -h, --help              this text\n"
            "Exit status: 0 done, 2 bad input (one line on stderr naming the file and the problem).\n"
            "Nothing half-written is left: shards and the index are written to temporary names and renamed,\n"
            "and a failed run removes the shards it wrote.\n");
}

static long long parse_pos(const char *s, long long max) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 1 || v > max) return -1;
    return v;
}

int main(int argc, char **argv) {
    fdp_pack_opts o = {.split = "train", .format = "auto", .per_shard = 10000, .threads = 0};
    o.progress = isatty(STDERR_FILENO);
    const char *verify = NULL;
    enum { OPT_PROGRESS = 1000, OPT_NO_PROGRESS, OPT_FORCE, OPT_VERIFY };
    static struct option opts[] = {{"out", required_argument, 0, 'o'},       {"split", required_argument, 0, 's'},
                                   {"format", required_argument, 0, 'f'},    {"per-shard", required_argument, 0, 'n'},
                                   {"shards", required_argument, 0, 'N'},    {"size", required_argument, 0, 'S'},
                                   {"limit", required_argument, 0, 'l'},     {"threads", required_argument, 0, 'j'},
                                   {"progress", no_argument, 0, OPT_PROGRESS},
                                   {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
                                   {"force", no_argument, 0, OPT_FORCE},     {"verify", required_argument, 0, OPT_VERIFY},
                                   {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    int c;
    long long v;
    opterr = 0; /* bad options get one line from us, not getopt's line plus the usage */
    while ((c = getopt_long(argc, argv, ":o:s:f:n:N:S:l:j:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': o.out_dir = optarg; break;
        case 's': o.split = optarg; break;
        case 'f': o.format = optarg; break;
        case 'n':
        case 'N':
        case 'S':
        case 'l':
        case 'j':
            v = parse_pos(optarg, c == 'n' || c == 'l' ? (1LL << 40) : c == 'S' ? 65536 : 1000000);
            if (v < 0) {
                fprintf(stderr, "flowdp-pack: -%c %s: expected a positive integer%s\n", c, optarg,
                        c == 'S' ? " up to 65536" : "");
                return 2;
            }
            if (c == 'n') o.per_shard = v;
            if (c == 'N') o.shards = (int)v;
            if (c == 'S') o.size = (int)v;
            if (c == 'l') o.limit = v;
            if (c == 'j') o.threads = (int)v;
            break;
        case OPT_PROGRESS: o.progress = 1; break;
        case OPT_NO_PROGRESS: o.progress = 0; break;
        case OPT_FORCE: o.force = 1; break;
        case OPT_VERIFY: verify = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, "flowdp-pack: %s needs a value (see --help)\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "flowdp-pack: unknown option %s (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    fdp_err err = {{0}};
    if (verify) {
        if (optind != argc) {
            fprintf(stderr, "flowdp-pack: --verify takes only the index (see --help)\n");
            return 2;
        }
        fdp_shards *s = NULL;
        if (fdp_shards_open(verify, 1, 0, &s, &err) != 0 || fdp_shards_verify(s, 0, 1, &err) != 0) {
            fprintf(stderr, "flowdp-pack: %s\n", err.msg);
            fdp_shards_close(s);
            return 2;
        }
        int ch, h, w;
        fdp_shards_shape(s, &ch, &h, &w);
        printf("%s: %d shard(s), %lld images of %dx%dx%d (HxWxC), structure and checksums OK\n", verify,
               fdp_shards_num(s), (long long)fdp_shards_count(s), h, w, ch);
        fdp_shards_close(s);
        return 0;
    }
    if (optind >= argc || !o.out_dir) {
        fprintf(stderr, "flowdp-pack: need --out DIR and at least one INPUT (see --help)\n");
        return 2;
    }
    if (o.threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = n > 0 ? (int)n : 1;
    }
    fdp_pack_result r;
    if (fdp_pack((const char *const *)argv + optind, argc - optind, &o, &r, &err) != 0) {
        fprintf(stderr, "flowdp-pack: %s\n", err.msg);
        return 2;
    }
    if (r.skipped_files > 0)
        fprintf(stderr, "flowdp-pack: skipped %lld file(s) whose names are not .jpg/.jpeg/.png\n",
                (long long)r.skipped_files);
    printf("packed %lld images of %dx%dx%d (HxWxC) into %d shard(s) in %.1f s (%.0f images/s): %s\n",
           (long long)r.images, r.h, r.w, r.c, r.shards, r.seconds, r.seconds > 0 ? (double)r.images / r.seconds : 0.0,
           r.index_path);
    return 0;
}
