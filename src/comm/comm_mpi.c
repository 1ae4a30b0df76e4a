/* The MPI communicator: one process per rank, started by mpirun or srun.
 *
 * Buffers are host memory (the CPU backend's). Every MPI call is checked;
 * errors return to us (MPI_ERRORS_RETURN) so the message names the call and
 * MPI's own text before the job is aborted with SPEC's exit code 6. A fatal
 * error anywhere (cr_fatal) aborts the whole job through the abort hook, so
 * no rank is left waiting in a collective. When mpirun loses a rank it
 * terminates the others with SIGTERM: they exit with code 6 and say so. A
 * peer that hangs without dying is the watchdog's (watchdog.h): with several
 * ranks it times every blocking call and aborts the job after timeout_s. */
#define _POSIX_C_SOURCE 200809L
#include "cresnet/comm.h"
#include "cresnet/error.h"
#include "watchdog.h"

#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h> /* Open MPI: MPIX_Query_cuda_support */
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    MPI_Comm world, node;
    cr_watchdog *watchdog; /* NULL for one rank */
    /* MPI may be called from a thread other than main's (the watchdog's
     * MPI_Abort) only if the library gave MPI_THREAD_MULTIPLE. */
    int any_thread;
    pthread_t main_thread;
    int singleton; /* started without a launcher: this process is the job */
} mpi_context;

#define CR_MPI(call)                                                                               \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MPI_SUCCESS) mpi_fail(#call, rc_, __FILE__, __LINE__);                          \
    } while (0)

static _Noreturn void mpi_fail(const char *call, int rc, const char *file, int line) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0, rank = -1;
    MPI_Error_string(rc, text, &len);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char where[32];
    snprintf(where, sizeof where, "rank %d", rank);
    cr_fatal_at(CR_EXIT_COMM, file, line, where, "%s failed: %s", call, text);
}

static mpi_context *ctx_of(cr_comm *comm) { return (mpi_context *)comm->context; }

/* Every blocking call is watched: MPI itself waits for a hung peer forever. */
#define WATCHED(comm, what, call)                                                                  \
    do {                                                                                           \
        cr_watchdog_waiting(ctx_of(comm)->watchdog, what);                                         \
        CR_MPI(call);                                                                              \
        cr_watchdog_done(ctx_of(comm)->watchdog);                                                  \
    } while (0)

static void mpi_allreduce_sum(cr_comm *comm, float *buf, size_t count) {
    /* MPI counts are int: large buffers go in pieces. */
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < count; off += piece) {
        int n = (int)(count - off < piece ? count - off : piece);
        WATCHED(comm, "MPI all-reduce",
                MPI_Allreduce(MPI_IN_PLACE, buf + off, n, MPI_FLOAT, MPI_SUM, ctx_of(comm)->world));
    }
}

/* One MPI request per bucket; buckets are far below MPI's int count limit
 * (dist.bucket_mb), larger buffers take the blocking path. */
struct cr_comm_request {
    MPI_Request request;
};

static cr_comm_request *mpi_allreduce_start(cr_comm *comm, float *buf, size_t count) {
    if (count > (size_t)1 << 30) {
        mpi_allreduce_sum(comm, buf, count);
        return NULL;
    }
    cr_comm_request *r = cr_malloc(sizeof *r, "all-reduce request");
    CR_MPI(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, ctx_of(comm)->world,
                          &r->request));
    return r;
}

static void mpi_wait(cr_comm *comm, cr_comm_request *r) {
    if (!r) return;
    WATCHED(comm, "MPI gradient all-reduce", MPI_Wait(&r->request, MPI_STATUS_IGNORE));
    free(r);
}

static void mpi_broadcast(cr_comm *comm, void *buf, size_t bytes, int root) {
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < bytes; off += piece) {
        int n = (int)(bytes - off < piece ? bytes - off : piece);
        WATCHED(comm, "MPI broadcast",
                MPI_Bcast((char *)buf + off, n, MPI_BYTE, root, ctx_of(comm)->world));
    }
}

static void mpi_allgather(cr_comm *comm, const void *send, void *recv, size_t bytes) {
    if (bytes > (size_t)1 << 30)
        cr_fatal(CR_EXIT_INTERNAL, "mpi", "all-gather of %zu bytes per rank is too large", bytes);
    WATCHED(
        comm, "MPI all-gather",
        MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, ctx_of(comm)->world));
}

static void mpi_barrier(cr_comm *comm) {
    WATCHED(comm, "MPI barrier", MPI_Barrier(ctx_of(comm)->world));
}

static void mpi_abort(cr_comm *comm, int exit_code) {
    mpi_context *ctx = ctx_of(comm);
    /* Nothing else to end, and Open MPI's MPI_Abort in a singleton prints
     * a garbled banner under the one-line error. */
    if (ctx->singleton) _exit(exit_code);
    if (ctx->any_thread || pthread_equal(pthread_self(), ctx->main_thread))
        MPI_Abort(MPI_COMM_WORLD, exit_code);
    /* MPI_Abort does not return; this is for a broken MPI, or a watchdog
     * that may not call MPI (the launcher then ends the others, as when a
     * rank dies: mpirun does, srun only with --kill-on-bad-exit). */
    _exit(exit_code);
}

static void mpi_destroy(cr_comm *comm) {
    mpi_context *ctx = ctx_of(comm);
    cr_set_abort_hook(NULL, NULL);
    MPI_Comm_free(&ctx->node);
    /* Finalize waits for every rank too. */
    cr_watchdog_waiting(ctx->watchdog, "MPI finalize");
    MPI_Finalize();
    cr_watchdog_done(ctx->watchdog);
    cr_watchdog_stop(ctx->watchdog);
    free(comm->context);
    free(comm);
}

static const cr_comm_ops mpi_ops = {
    .name = "mpi",
    .destroy = mpi_destroy,
    .allreduce_sum = mpi_allreduce_sum,
    .allreduce_start = mpi_allreduce_start,
    .wait = mpi_wait,
    .broadcast = mpi_broadcast,
    .allgather = mpi_allgather,
    .barrier = mpi_barrier,
    .abort = mpi_abort,
};

/* A fatal error on one rank must end all of them: abort the job. */
static void abort_job(int exit_code, void *context) {
    if (exit_code != CR_EXIT_OK) mpi_abort((cr_comm *)context, exit_code);
}

/* The watchdog's way to end the job. */
static void abandon_job(void *context, int exit_code) { mpi_abort((cr_comm *)context, exit_code); }

/* mpirun sends SIGTERM to the survivors when a rank dies or aborts, and
 * Slurm to every rank when the job is cancelled. A rank already ending on
 * an error of its own (the same bad config on every rank) has said why.
 * Only async-signal-safe calls here. */
static void on_terminate(int sig) {
    (void)sig;
    int reported = cr_fatal_reported();
    if (reported) _exit(reported);
    static const char msg[] = "cresnet: error: mpi: job terminated by the launcher (SIGTERM): "
                              "another rank failed or was lost, or the job was cancelled\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    _exit(CR_EXIT_COMM);
}

int cr_comm_mpi_cuda_aware(void) {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
    return MPIX_Query_cuda_support();
#else
    return 0;
#endif
}

int cr_comm_mpi_launched(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

cr_comm *cr_comm_mpi_create(double timeout_s) {
    int provided, singleton = !cr_comm_mpi_launched(); /* before MPI_Init sets those */
    /* Only the main thread calls MPI (FUNNELED would do), except for the
     * watchdog's MPI_Abort, for which MULTIPLE is asked. */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
        cr_fatal(CR_EXIT_COMM, "mpi", "MPI_Init_thread failed");
    mpi_context *ctx = cr_calloc(1, sizeof *ctx, "communicator");
    ctx->any_thread = provided == MPI_THREAD_MULTIPLE;
    ctx->main_thread = pthread_self();
    ctx->world = MPI_COMM_WORLD;
    CR_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    cr_comm *comm = cr_calloc(1, sizeof *comm, "communicator");
    comm->ops = &mpi_ops;
    comm->context = ctx;
    CR_MPI(MPI_Comm_rank(ctx->world, &comm->rank));
    CR_MPI(MPI_Comm_size(ctx->world, &comm->world_size));
    /* A launcher unknown to cr_comm_mpi_launched (srun --mpi=none over
     * Slurm's PMI) still shows in the size: several ranks always abort. */
    ctx->singleton = singleton && comm->world_size == 1;
    /* Ranks sharing a node: the local rank picks the GPU. */
    CR_MPI(MPI_Comm_split_type(ctx->world, MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL,
                               &ctx->node));
    CR_MPI(MPI_Comm_rank(ctx->node, &comm->local_rank));
    cr_set_abort_hook(abort_job, comm);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_terminate;
    sigaction(SIGTERM, &sa, NULL);
    if (comm->world_size > 1) {
        cr_watchdog_config watch = {.timeout_s = timeout_s,
                                    .rank = comm->rank,
                                    .exit_code = CR_EXIT_COMM,
                                    .abandon = abandon_job,
                                    .context = comm};
        ctx->watchdog = cr_watchdog_start(&watch);
    }
    return comm;
}
