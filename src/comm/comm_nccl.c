/* The NCCL communicator: device buffers of the CUDA backend, one process per
 * GPU, started by mpirun or srun like the MPI communicator, which it wraps.
 *
 * MPI stays underneath for three things NCCL cannot do itself: handing rank
 * 0's unique id to the others (the only synchronisation at start), moving
 * the few host values the trainer shares (config digest, checkpoint path),
 * and ending the whole job (MPI_Abort) after ncclCommAbort.
 *
 * Ordering. Collectives that the caller treats as blocking (SyncBN sums,
 * broadcasts, all-gathers) run on the backend's stream, so they sit between
 * the ops that produce and consume their buffers with no host sync.
 * allreduce_start runs on a side stream that first waits for the compute
 * stream to reach the call, and returns an event recorded after the
 * all-reduce; wait makes the compute stream wait on it, the host does not.
 * One thread issues every call, in the same order on every rank, as NCCL
 * requires of one communicator's collectives. NCCL does not promise that
 * collectives of one communicator on two streams progress at once: with
 * dist.sync_bn a backward SyncBN all-reduce may wait on the device behind
 * the gradient buckets issued before it, which shortens the overlap (not
 * measured: that takes two GPUs).
 *
 * Failures. The communicator is non-blocking (config.blocking = 0): every
 * call may return ncclInProgress, and errors of operations in flight (a peer
 * gone, a broken link) surface only in ncclCommGetAsyncError while the
 * kernels themselves may spin forever. So wherever the host waits for NCCL
 * it polls that state with a deadline; an NCCL failure or a timeout aborts
 * the communicator and the job with exit code 6, naming the rank (a failing
 * CUDA call exits 70, as in the backend). The host also waits for NCCL where
 * it cannot see it: a stream sync in the backend (after SyncBN, a tally)
 * waits for a collective queued earlier. A watchdog thread (watchdog.h)
 * covers those waits: from each collective queued until an event recorded
 * after it has completed, the clock runs, and after dist.timeout_s the
 * watchdog ends the job through MPI. It makes no NCCL call itself: NCCL
 * allows one thread at a time on a communicator, and ncclCommAbort from
 * another thread frees what this one may be using. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include "cresnet/backend.h"
#include "cresnet/clock.h"
#include "cresnet/comm.h"
#include "cresnet/error.h"
#include "watchdog.h"

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Every rank must reach create within INIT_TIMEOUT_S (launchers start
 * ranks within seconds of each other); an operation may wait the context's
 * timeout_s (dist.timeout_s) for the slowest rank, which can legitimately be
 * late by a checkpoint write or an evaluation pass. */
#define INIT_TIMEOUT_S 120.0

/* One all-reduce in flight. Requests are recycled through the context's
 * free list: a bucketed backward pass starts dozens per step. */
struct cr_comm_request {
    cudaEvent_t done; /* recorded on the side stream after the all-reduce */
    cr_comm_request *next;
};

typedef struct {
    ncclComm_t nccl;       /* NULL once destroyed or aborted */
    cr_comm *mpi;          /* owned: bootstrap, host buffers, the job's abort */
    cudaStream_t compute;  /* the backend's: every op of the model runs on it */
    cudaStream_t side;     /* the overlapped all-reduces of allreduce_start */
    cudaEvent_t mark;      /* a point on the compute stream, for the side stream or the host */
    cudaEvent_t last;      /* recorded after the last collective queued, for the watchdog */
    int device;            /* the backend's GPU, for the watchdog's thread */
    pthread_t main_thread; /* the one that creates and calls it: NCCL allows one */
    float *scratch;        /* one device float for the barrier's all-reduce */
    cr_comm_request *free_requests;
    double timeout_s;      /* dist.timeout_s: the longest wait for the other ranks */
    cr_watchdog *watchdog; /* NULL for one rank */
} nccl_context;

static nccl_context *ctx_of(cr_comm *comm) { return (nccl_context *)comm->context; }

/* Between polls: short enough not to delay a step, long enough to leave the
 * core to the data loader's threads. */
static void nap(void) {
    struct timespec ts = {0, 50 * 1000};
    nanosleep(&ts, NULL);
}

/* ---- checks: every CUDA and NCCL call goes through one ---- */

static void where_of(const cr_comm *comm, char *where, size_t len) {
    snprintf(where, len, "rank %d", comm->rank);
}

/* The failure is reported first (ncclGetLastError reads the communicator),
 * then cr_fatal_at's abort hook aborts NCCL and the job. */
static _Noreturn void nccl_fail(cr_comm *comm, const char *call, ncclResult_t rc, const char *file,
                                int line) {
    const char *detail = ncclGetLastError(ctx_of(comm)->nccl);
    char where[32];
    where_of(comm, where, sizeof where);
    cr_fatal_at(CR_EXIT_COMM, file, line, where, "%s failed: %s%s%s", call, ncclGetErrorString(rc),
                detail && detail[0] ? ": " : "", detail ? detail : "");
}

static _Noreturn void cuda_fail(cr_comm *comm, const char *call, cudaError_t err, const char *file,
                                int line) {
    char where[32];
    where_of(comm, where, sizeof where);
    cr_fatal_at(CR_EXIT_INTERNAL, file, line, where, "%s failed: %s", call,
                cudaGetErrorString(err));
}

static _Noreturn void timed_out(cr_comm *comm, const char *what, double seconds, const char *file,
                                int line) {
    char where[32];
    where_of(comm, where, sizeof where);
    cr_fatal_at(CR_EXIT_COMM, file, line, where,
                "NCCL %s did not complete within %.0f s: a rank stopped taking part or the network "
                "stalled (NCCL_DEBUG=WARN tells more); aborting the communicator",
                what, seconds);
}

/* NCCL's error state, read without blocking. ncclInProgress is not an
 * error: a non-blocking call is still being carried out. */
static ncclResult_t async_state(cr_comm *comm, const char *file, int line) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t rc = ncclCommGetAsyncError(ctx_of(comm)->nccl, &state);
    if (rc != ncclSuccess) nccl_fail(comm, "ncclCommGetAsyncError", rc, file, line);
    if (state != ncclSuccess && state != ncclInProgress)
        nccl_fail(comm, "an NCCL operation in flight", state, file, line);
    return state;
}

/* A non-blocking call returns ncclInProgress until its work is handed to
 * the stream (or the communicator is up); only then may the next NCCL call
 * or an event record follow it. */
static void nccl_check(cr_comm *comm, ncclResult_t rc, const char *call, double timeout_s,
                       const char *file, int line) {
    if (rc != ncclSuccess && rc != ncclInProgress) nccl_fail(comm, call, rc, file, line);
    double deadline = cr_now_seconds() + timeout_s;
    while (rc == ncclInProgress) {
        if (cr_now_seconds() > deadline) timed_out(comm, call, timeout_s, file, line);
        nap();
        rc = async_state(comm, file, line);
    }
}

#define NCCL_CHECK(comm, call)                                                                     \
    nccl_check((comm), (call), #call, ctx_of(comm)->timeout_s, __FILE__, __LINE__)

#define CUDA_CHECK(comm, call)                                                                     \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess) cuda_fail((comm), #call, err_, __FILE__, __LINE__);               \
    } while (0)

/* The host waits for `event`, watching NCCL's error state as it does: a
 * plain cudaEventSynchronize would hang for good on a collective whose peer
 * is gone. */
static void await_event(cr_comm *comm, cudaEvent_t event, const char *what, const char *file,
                        int line) {
    double timeout_s = ctx_of(comm)->timeout_s;
    double deadline = cr_now_seconds() + timeout_s;
    for (;;) {
        cudaError_t err = cudaEventQuery(event);
        if (err == cudaSuccess) return;
        if (err != cudaErrorNotReady) cuda_fail(comm, "cudaEventQuery", err, file, line);
        async_state(comm, file, line);
        if (cr_now_seconds() > deadline) timed_out(comm, what, timeout_s, file, line);
        nap();
    }
}

/* The host waits until the compute stream has done everything queued so far. */
static void await_compute(cr_comm *comm, const char *what, const char *file, int line) {
    nccl_context *ctx = ctx_of(comm);
    CUDA_CHECK(comm, cudaEventRecord(ctx->mark, ctx->compute));
    await_event(comm, ctx->mark, what, file, line);
}

/* A collective is queued on `stream`: the watchdog's clock restarts and
 * runs until `last` shows it complete (a communicator's collectives
 * complete in order). The record comes first: the watchdog must not see the
 * new wait with the previous record. */
static void queued(cr_comm *comm, cudaStream_t stream, const char *what) {
    nccl_context *ctx = ctx_of(comm);
    if (!ctx->watchdog) return;
    CUDA_CHECK(comm, cudaEventRecord(ctx->last, stream));
    cr_watchdog_waiting(ctx->watchdog, what);
}

/* No collective goes into a CUDA graph: NCCL requires a capture to be the
 * same on every rank, and the trainer's step graph (graph_fits) is per rank,
 * so it records only with one rank, whose step calls no collective. This
 * makes lifting that condition fail loudly rather than hang a job. */
static void refuse_capture(cr_comm *comm, const char *what) {
    nccl_context *ctx = ctx_of(comm);
    enum cudaStreamCaptureStatus status;
    CUDA_CHECK(comm, cudaStreamIsCapturing(ctx->compute, &status));
    if (status != cudaStreamCaptureStatusNone)
        CR_FAIL(CR_EXIT_INTERNAL, "nccl", "%s while the compute stream records a CUDA graph", what);
}

/* NCCL moves device memory only; the trainer also shares a few host values
 * (the config digest, the checkpoint path), which then go over MPI. */
static int on_device(cr_comm *comm, const void *ptr) {
    struct cudaPointerAttributes attr;
    CUDA_CHECK(comm, cudaPointerGetAttributes(&attr, ptr));
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

/* ---- the table ---- */

static void nccl_allreduce_sum(cr_comm *comm, float *buf, size_t count) {
    nccl_context *ctx = ctx_of(comm);
    refuse_capture(comm, "NCCL all-reduce");
    /* On the compute stream: SyncBN's sums are made and used there. */
    NCCL_CHECK(comm, ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, ctx->nccl, ctx->compute));
    queued(comm, ctx->compute, "NCCL all-reduce");
}

static cr_comm_request *take_request(cr_comm *comm) {
    nccl_context *ctx = ctx_of(comm);
    cr_comm_request *r = ctx->free_requests;
    if (r) {
        ctx->free_requests = r->next;
        return r;
    }
    r = cr_calloc(1, sizeof *r, "all-reduce request");
    CUDA_CHECK(comm, cudaEventCreateWithFlags(&r->done, cudaEventDisableTiming));
    return r;
}

static cr_comm_request *nccl_allreduce_start(cr_comm *comm, float *buf, size_t count) {
    nccl_context *ctx = ctx_of(comm);
    refuse_capture(comm, "NCCL gradient all-reduce");
    cr_comm_request *r = take_request(comm);
    /* The bucket is final where the compute stream stands now; the side
     * stream starts from there while the compute stream goes on. */
    CUDA_CHECK(comm, cudaEventRecord(ctx->mark, ctx->compute));
    CUDA_CHECK(comm, cudaStreamWaitEvent(ctx->side, ctx->mark, 0));
    NCCL_CHECK(comm, ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, ctx->nccl, ctx->side));
    CUDA_CHECK(comm, cudaEventRecord(r->done, ctx->side));
    queued(comm, ctx->side, "NCCL gradient all-reduce");
    return r;
}

static void nccl_wait(cr_comm *comm, cr_comm_request *r) {
    nccl_context *ctx = ctx_of(comm);
    if (!r) return;
    /* The device order is what makes the sums safe to read: later ops on the
     * compute stream start after the all-reduce. The host does not wait: a
     * peer lost meanwhile is the watchdog's to catch. The event may be
     * recorded again once the request is reused; the wait already queued
     * keeps this record. */
    CUDA_CHECK(comm, cudaStreamWaitEvent(ctx->compute, r->done, 0));
    r->next = ctx->free_requests;
    ctx->free_requests = r;
}

static void nccl_broadcast(cr_comm *comm, void *buf, size_t bytes, int root) {
    nccl_context *ctx = ctx_of(comm);
    refuse_capture(comm, "NCCL broadcast");
    if (!on_device(comm, buf)) {
        ctx->mpi->ops->broadcast(ctx->mpi, buf, bytes, root);
        return;
    }
    NCCL_CHECK(comm, ncclBroadcast(buf, buf, bytes, ncclUint8, root, ctx->nccl, ctx->compute));
    queued(comm, ctx->compute, "NCCL broadcast");
}

static void nccl_allgather(cr_comm *comm, const void *send, void *recv, size_t bytes) {
    nccl_context *ctx = ctx_of(comm);
    refuse_capture(comm, "NCCL all-gather");
    int device = on_device(comm, send);
    if (device != on_device(comm, recv))
        CR_FAIL(CR_EXIT_INTERNAL, "nccl", "all-gather between host and device memory");
    if (!device) {
        ctx->mpi->ops->allgather(ctx->mpi, send, recv, bytes);
        return;
    }
    NCCL_CHECK(comm, ncclAllGather(send, recv, bytes, ncclUint8, ctx->nccl, ctx->compute));
    queued(comm, ctx->compute, "NCCL all-gather");
}

/* Every rank has reached the barrier once the all-reduce of one float has
 * completed here; the float's value does not matter. */
static void nccl_barrier(cr_comm *comm) {
    nccl_context *ctx = ctx_of(comm);
    refuse_capture(comm, "NCCL barrier");
    NCCL_CHECK(comm, ncclAllReduce(ctx->scratch, ctx->scratch, 1, ncclFloat, ncclSum, ctx->nccl,
                                   ctx->compute));
    queued(comm, ctx->compute, "NCCL barrier");
    await_compute(comm, "barrier", __FILE__, __LINE__);
}

/* Kernels of an aborted communicator stop, so MPI_Abort is not held up by
 * a GPU spinning on a peer that is gone. */
static void nccl_abort(cr_comm *comm, int exit_code) {
    nccl_context *ctx = ctx_of(comm);
    cr_set_abort_hook(NULL, NULL);
    /* From another thread (a data loader worker's or the watchdog's fatal
     * error) no NCCL call: the main thread may be inside one, and
     * ncclCommAbort frees what it uses. MPI's abort calls MPI_Abort where
     * MPI lets this thread call it, else ends this rank alone, and the
     * launcher or the other ranks' watchdogs end the rest. */
    if (!pthread_equal(pthread_self(), ctx->main_thread)) {
        ctx->mpi->ops->abort(ctx->mpi, exit_code);
        return;
    }
    /* Joined first: it may be ending the job itself, which wins. */
    cr_watchdog_stop(ctx->watchdog);
    ctx->watchdog = NULL;
    if (ctx->nccl) {
        ncclComm_t nccl = ctx->nccl;
        ctx->nccl = NULL;
        (void)ncclCommAbort(nccl); /* the job ends whatever it returns */
    }
    ctx->mpi->ops->abort(ctx->mpi, exit_code);
}

static void nccl_destroy(cr_comm *comm) {
    nccl_context *ctx = ctx_of(comm);
    /* Finalize flushes the communicator's work and waits for every rank to
     * get there; destroy then frees the local rest without blocking. */
    await_compute(comm, "work before destroy", __FILE__, __LINE__);
    NCCL_CHECK(comm, ncclCommFinalize(ctx->nccl));
    if (ctx->watchdog) {
        cr_watchdog_stop(ctx->watchdog);
        ctx->watchdog = NULL;
        CUDA_CHECK(comm, cudaEventDestroy(ctx->last));
    }
    ncclComm_t nccl = ctx->nccl;
    ctx->nccl = NULL; /* no polling, and no abort, of a handle being freed */
    ncclResult_t rc = ncclCommDestroy(nccl);
    if (rc != ncclSuccess && rc != ncclInProgress)
        nccl_fail(comm, "ncclCommDestroy", rc, __FILE__, __LINE__);
    for (cr_comm_request *r = ctx->free_requests, *next; r; r = next) {
        next = r->next;
        CUDA_CHECK(comm, cudaEventDestroy(r->done));
        free(r);
    }
    CUDA_CHECK(comm, cudaFree(ctx->scratch));
    CUDA_CHECK(comm, cudaEventDestroy(ctx->mark));
    CUDA_CHECK(comm, cudaStreamDestroy(ctx->side));
    cr_set_abort_hook(NULL, NULL);
    ctx->mpi->ops->destroy(ctx->mpi);
    free(ctx);
    free(comm);
}

static const cr_comm_ops nccl_ops = {
    .name = "nccl",
    .destroy = nccl_destroy,
    .allreduce_sum = nccl_allreduce_sum,
    .allreduce_start = nccl_allreduce_start,
    .wait = nccl_wait,
    .broadcast = nccl_broadcast,
    .allgather = nccl_allgather,
    .barrier = nccl_barrier,
    .abort = nccl_abort,
};

/* A fatal error on one rank must end all of them: NCCL first, then MPI. */
static void abort_job(int exit_code, void *context) {
    if (exit_code != CR_EXIT_OK) nccl_abort((cr_comm *)context, exit_code);
}

/* From the watchdog's thread: CUDA calls are safe there, NCCL's are not. */
static int collectives_complete(void *context) {
    nccl_context *ctx = context;
    if (cudaSetDevice(ctx->device) != cudaSuccess) return 0;
    return cudaEventQuery(ctx->last) == cudaSuccess;
}

/* The job ends through MPI, whose abort the watchdog's thread may call
 * (else the rank just exits and leaves the rest to the launcher). The
 * driver stops this process's NCCL kernels when it exits. */
static void abandon_job(void *context, int exit_code) {
    nccl_context *ctx = context;
    ctx->mpi->ops->abort(ctx->mpi, exit_code);
}

static void start_watchdog(cr_comm *comm) {
    nccl_context *ctx = ctx_of(comm);
    CUDA_CHECK(comm, cudaGetDevice(&ctx->device));
    CUDA_CHECK(comm, cudaEventCreateWithFlags(&ctx->last, cudaEventDisableTiming));
    cr_watchdog_config watch = {.timeout_s = ctx->timeout_s,
                                .rank = comm->rank,
                                .exit_code = CR_EXIT_COMM,
                                .settled = collectives_complete,
                                .abandon = abandon_job,
                                .context = ctx};
    ctx->watchdog = cr_watchdog_start(&watch);
}

/* Rank 0's id reaches the others over MPI, the one synchronisation before
 * NCCL's own; init is non-blocking so that a rank that never arrives ends
 * in a timeout instead of a hang. */
static void connect_ranks(cr_comm *comm) {
    nccl_context *ctx = ctx_of(comm);
    ncclUniqueId id = {{0}};
    if (comm->rank == 0) NCCL_CHECK(comm, ncclGetUniqueId(&id));
    ctx->mpi->ops->broadcast(ctx->mpi, &id, sizeof id, 0);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t rc = ncclCommInitRankConfig(&ctx->nccl, comm->world_size, id, comm->rank, &config);
    nccl_check(comm, rc, "ncclCommInitRankConfig (communicator start)", INIT_TIMEOUT_S, __FILE__,
               __LINE__);
}

cr_comm *cr_comm_nccl_create(cr_backend *cuda_backend, cr_comm *mpi, double timeout_s) {
    nccl_context *ctx = cr_calloc(1, sizeof *ctx, "nccl communicator");
    ctx->mpi = mpi;
    ctx->timeout_s = timeout_s;
    ctx->main_thread = pthread_self();
    ctx->compute = (cudaStream_t)cr_backend_cuda_stream(cuda_backend);
    cr_comm *comm = cr_calloc(1, sizeof *comm, "nccl communicator");
    comm->ops = &nccl_ops;
    comm->context = ctx;
    comm->rank = mpi->rank;
    comm->world_size = mpi->world_size;
    comm->local_rank = mpi->local_rank;
    /* From here a fatal error anywhere aborts NCCL before the MPI job. */
    cr_set_abort_hook(abort_job, comm);
    /* Non-blocking like the compute stream: never ordered behind the legacy
     * default stream. */
    CUDA_CHECK(comm, cudaStreamCreateWithFlags(&ctx->side, cudaStreamNonBlocking));
    CUDA_CHECK(comm, cudaEventCreateWithFlags(&ctx->mark, cudaEventDisableTiming));
    CUDA_CHECK(comm, cudaMalloc((void **)&ctx->scratch, sizeof(float)));
    connect_ranks(comm);
    if (comm->world_size > 1) start_watchdog(comm);
    return comm;
}
