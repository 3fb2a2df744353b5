/* flowdp_train.c — flowdp-train: the command line around the training loop
 * (src/train/trainer.c). Runs as one process or as N MPI ranks (mpiexec/srun). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowdp/comm.h"
#include "flowdp/config.h"
#include "flowdp/log.h"
#include "flowdp/trainer.h"

/* --get S.K: the value of key K in section S of the effective configuration, as
 * fdp_config_to_ini writes it, without its quotes. 0, or -1 when there is no such key. */
static int print_key(const fdp_config *cfg, const char *sk) {
    const char *dot = strchr(sk, '.');
    if (!dot || dot == sk || !dot[1]) return -1;
    char *text = fdp_config_to_ini(cfg), *save = NULL;
    int in = 0, found = -1;
    for (char *line = strtok_r(text, "\n", &save); line && found < 0; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '[') {
            in = strncmp(line + 1, sk, (size_t)(dot - sk)) == 0 && line[1 + (dot - sk)] == ']';
            continue;
        }
        size_t kl = strlen(dot + 1);
        if (!in || strncmp(line, dot + 1, kl) != 0 || (line[kl] != ' ' && line[kl] != '=')) continue;
        char *v = strchr(line, '=');
        if (!v) continue;
        for (v++; *v == ' '; v++) {}
        size_t n = strlen(v);
        if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
            v[n - 1] = 0;
            v++;
        }
        printf("%s\n", v);
        found = 0;
    }
    free(text);
    return found;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: flowdp-train --config FILE [--set section.key=value ...] [--resume auto|none|PATH] [--force]\n"
            "       mpiexec -n N flowdp-train ...   |   srun --mpi=pmix flowdp-train ...\n"
            "\n"
            "Trains a normalizing flow ([model] type = realnvp or glow) data-parallel: every rank holds\n"
            "the whole model and trains on its slice of each global batch (global batch =\n"
            "[train] batch_size x ranks); rank 0 writes checkpoints and metrics into\n"
            "[checkpoint] dir. Every output place is checked before the first step (exit 2 when one\n"
            "cannot be written).\n"
            "\n"
            "  --config FILE         INI configuration (see the keys below)\n"
            "  --set S.K=V           override one key, e.g. --set train.lr=3e-4 (repeatable, applied in order)\n"
            "  --resume auto         continue from the newest valid checkpoint in [checkpoint] dir,\n"
            "                        or start from scratch when there is none (default)\n"
            "  --resume none         start from scratch (existing checkpoints of the same step are replaced)\n"
            "  --resume PATH         continue from that checkpoint\n"
            "  --force               let the run replace files that are not of its kind: a [log] metrics\n"
            "                        file that is not a flowdp metrics file (on resume: move it aside), and\n"
            "                        ckpt_*.h5 or best.h5 in [checkpoint] dir that are not HDF5 files\n"
            "                        (without it these are refused: exit 2). Never an input of the run.\n"
            "  --print-config        print the effective configuration (every key) and exit\n"
            "  --get S.K             print the effective value of one key and exit (for job scripts,\n"
            "                        e.g. --get checkpoint.dir to find the STOPPED marker)\n"
            "  --help                this text\n"
            "\n"
            "Exit codes: 0 finished; 1 internal error; 2 bad config, command line, dataset or checkpoint;\n"
            "3 stopped by SIGTERM or the [train] signal after checkpointing (please requeue);\n"
            "4 NaN/Inf in loss or gradients; 5 checkpoint write failed with [checkpoint] on_write_error = stop,\n"
            "or the final or stop-signal checkpoint failed, or the metrics file could not be written at the end.\n"
            "On exit 3 rank 0 also leaves [checkpoint] dir/STOPPED (removed when a run starts): mpiexec\n"
            "itself sent SIGTERM returns 1 whatever the ranks did, so a job script can test for the file.\n"
            "Errors of bad input are one line from one rank. Under mpiexec, add -q (Open MPI) to drop its\n"
            "banner about the non-zero exit.\n"
            "\n");
    fdp_config_print_help(f);
}

int main(int argc, char **argv) {
    /* a write past RLIMIT_FSIZE (ulimit -f) must fail with EFBIG and be reported
     * like any other write error, not kill the process with SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
    fdp_log_set_prog("flowdp-train");
    fdp_comm *comm = NULL;
    fdp_err err = {{0}};
    if (fdp_comm_init(&argc, &argv, &comm, &err) != 0) {
        fprintf(stderr, "flowdp-train: %s\n", err.msg);
        return 1;
    }
    int rank = fdp_comm_rank(comm);
    const char *config_path = NULL, *resume = "auto";
    int print_config = 0, force = 0;
    const char *get = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int nsets = 0;
    static struct option opts[] = {{"config", required_argument, 0, 'c'}, {"set", required_argument, 0, 's'},
                                   {"resume", required_argument, 0, 'r'}, {"print-config", no_argument, 0, 'p'},
                                   {"force", no_argument, 0, 'f'},        {"help", no_argument, 0, 'h'},
                                   {"get", required_argument, 0, 'g'},    {0, 0, 0, 0}};
    int c, rc = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:s:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 's': sets[nsets++] = optarg; break;
        case 'r': resume = optarg; break;
        case 'p': print_config = 1; break;
        case 'f': force = 1; break;
        case 'g': get = optarg; break;
        case 'h':
            if (rank == 0) usage(stdout);
            goto done;
        default:
            if (rank == 0)
                fprintf(stderr, "flowdp-train: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            rc = 2;
            goto done;
        }
    }
    if (optind < argc) {
        if (rank == 0) fprintf(stderr, "flowdp-train: unexpected argument '%s' (see --help)\n", argv[optind]);
        rc = 2;
        goto done;
    }
    if (!config_path) {
        if (rank == 0) fprintf(stderr, "flowdp-train: --config FILE is required (see --help)\n");
        rc = 2;
        goto done;
    }
    fdp_config cfg;
    fdp_config_defaults(&cfg);
    int bad = fdp_config_load_file(&cfg, config_path, &err) != 0;
    for (int i = 0; !bad && i < nsets; i++) bad = fdp_config_set(&cfg, sets[i], &err) != 0;
    if (!bad) bad = fdp_config_validate(&cfg, &err) != 0;
    if (bad) {
        if (rank == 0) fprintf(stderr, "flowdp-train: %s\n", err.msg);
        fdp_config_free(&cfg);
        rc = 2;
        goto done;
    }
    fdp_log_set_level(cfg.log.level);
    if (get) {
        if (rank == 0 && print_key(&cfg, get) != 0) {
            fprintf(stderr, "flowdp-train: --get %s: no such key (expected section.key, see --help)\n", get);
            rc = 2;
        }
        fdp_config_free(&cfg);
        goto done;
    }
    if (print_config) {
        if (rank == 0) {
            char *text = fdp_config_to_ini(&cfg);
            fputs(text, stdout);
            free(text);
        }
        fdp_config_free(&cfg);
        goto done;
    }
    fdp_train_opts o = {&cfg, resume, comm, force};
    rc = fdp_train_run(&o);
    fdp_config_free(&cfg);
done:
    free(sets);
    fdp_comm_finalize(comm);
    return rc;
}
