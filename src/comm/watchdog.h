/* watchdog: a thread that ends the job when its communicator stops making
 * progress, the way PyTorch's NCCL watchdog does.
 *
 * A rank whose peer dies is ended by the launcher (mpirun, srun), but a peer
 * that hangs without dying (stopped, stuck on a file system, a GPU kernel
 * that never finishes) leaves the others blocked in a collective for good:
 * inside MPI, or inside a CUDA stream wait that cannot see NCCL's errors.
 * The communicator marks when such a wait begins and ends; the watchdog, on
 * its own thread, prints one error line naming the rank and the wait, asks
 * the communicator to end the rest of the job (MPI_Abort), and exits with
 * the given code.
 * Not here: detecting which peer hung (neither MPI nor NCCL says). */
#ifndef CRESNET_COMM_WATCHDOG_H
#define CRESNET_COMM_WATCHDOG_H

#include <stddef.h>

typedef struct {
    double timeout_s;  /* a wait longer than this ends the process */
    double interval_s; /* how often the thread looks; 0: timeout/10, at most 1 s */
    int rank;          /* named in the error line */
    int exit_code;
    /* Optional, called on the watchdog's thread while a wait is outstanding:
     * nonzero once the work waited for has completed, which ends the wait
     * (for waits the host does not see end, like NCCL's on a stream). */
    int (*settled)(void *context);
    /* Optional, called on the watchdog's thread after the error line: ends
     * the other ranks. The process exits with exit_code after it returns, or
     * after abandon_grace_s (0: 10 s) if it does not. */
    void (*abandon)(void *context, int exit_code);
    double abandon_grace_s;
    void *context;
} cr_watchdog_config;

typedef struct cr_watchdog cr_watchdog;

cr_watchdog *cr_watchdog_start(const cr_watchdog_config *config);
/* A wait for the other ranks begins now (or, called again, has made
 * progress now): the clock restarts. `what` is a string literal. */
void cr_watchdog_waiting(cr_watchdog *dog, const char *what);
/* No wait outstanding: the clock stops. */
void cr_watchdog_done(cr_watchdog *dog);
/* Joins the thread and frees it. NULL is ignored. */
void cr_watchdog_stop(cr_watchdog *dog);

#endif
