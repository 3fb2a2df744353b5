/* mpi_test_abort.c — a job that must die, for tests/mpi_expect_abort.sh (not a
 * cmocka test): proves that one failing rank ends the whole job quickly with a
 * non-zero exit code and a message naming it (docs/ARCHITECTURE.md, invariant 6).
 *
 *   mpi_test_abort fatal     rank 1 calls FDP_FATAL while rank 0 waits in a
 *                            barrier: the abort hook (MPI_Abort) ends both.
 *   mpi_test_abort exit      rank 1 calls exit(3) without MPI_Finalize while
 *                            rank 0 waits in a barrier: mpiexec ends the job.
 *   mpi_test_abort watchdog  rank 1 is stuck outside MPI (sleeps 300 s) while
 *                            rank 0 waits in a barrier: rank 0's watchdog (2 s)
 *                            prints "rank 0: no progress ..." and aborts.
 * Every mode hangs forever if the mechanism it tests is broken (the script's
 * timeout catches that). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flowdp/comm.h"
#include "flowdp/error.h"

int main(int argc, char **argv) {
    fdp_comm *c = NULL;
    fdp_err err = {{0}};
    if (fdp_comm_init(&argc, &argv, &c, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const char *mode = argc > 1 ? argv[1] : "";
    if (fdp_comm_size(c) < 2 ||
        (strcmp(mode, "fatal") != 0 && strcmp(mode, "exit") != 0 && strcmp(mode, "watchdog") != 0)) {
        fprintf(stderr, "usage: mpiexec -n 2 mpi_test_abort fatal|exit|watchdog\n");
        fdp_comm_finalize(c);
        return 2;
    }
    fdp_comm_barrier(c); /* both ranks are up */
    if (strcmp(mode, "watchdog") == 0) {
        fdp_comm_watchdog_start(c, 2.0);
        fdp_comm_set_phase(c, "abort test: waiting for a stuck peer");
    }
    if (fdp_comm_rank(c) == 1) {
        if (strcmp(mode, "fatal") == 0) FDP_FATAL("deliberate failure on rank 1 (abort test)");
        if (strcmp(mode, "exit") == 0) exit(3);
        struct timespec ts = {300, 0};
        nanosleep(&ts, NULL); /* stuck in local work, never reaches the barrier */
    } else {
        fdp_comm_barrier(c); /* never completes */
    }
    fprintf(stderr, "mpi_test_abort: rank %d got past the point of no return: the job did not abort\n",
            fdp_comm_rank(c));
    fdp_comm_finalize(c);
    return 0;
}
