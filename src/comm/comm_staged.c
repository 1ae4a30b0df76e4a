/* MPI on a backend's device memory. MPI reads and writes host memory
 * (unless it is CUDA-aware), so each operation copies the device buffer
 * into a pinned host buffer, runs the host communicator's operation there
 * and copies the result back. A CUDA-aware MPI gets the device pointers
 * themselves, after the backend's stream has caught up with them.
 *
 * This is how several ranks share one GPU (NCCL refuses that), and the
 * communicator for GPUs where NCCL is missing. It is slower than NCCL: the
 * copies and the host-side reduction are on the step's path. Host pointers
 * (the trainer's config digest, checkpoint path) are passed through. */
#include "cresnet/backend.h"
#include "cresnet/comm.h"
#include "cresnet/error.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_IN_FLIGHT = 4096 };

/* A pinned host buffer, reused: every step launches the same buckets. */
typedef struct {
    void *host;
    size_t bytes;
    int busy;
} staging_buffer;

struct cr_comm_request {
    cr_comm_request *inner;  /* the host communicator's request */
    staging_buffer *staging; /* NULL when MPI works on the device buffer */
    float *device;
    size_t count;
};

typedef struct {
    cr_backend *be;
    cr_comm *host; /* owned */
    int direct;    /* a CUDA-aware MPI reads device memory itself */
    int num_buffers;
    cr_comm_ops ops; /* staged_ops, named for what this instance does */
    staging_buffer buffers[MAX_IN_FLIGHT];
    cr_comm_request requests[MAX_IN_FLIGHT];
} staged_context;

static staged_context *ctx_of(cr_comm *comm) { return (staged_context *)comm->context; }

static int host_readable(staged_context *ctx, const void *ptr) {
    cr_backend *be = ctx->be;
    return be->ops->host_accessible && be->ops->host_accessible(be, ptr);
}

/* The smallest free buffer that fits, else a new one. */
static staging_buffer *take_buffer(staged_context *ctx, size_t bytes) {
    staging_buffer *best = NULL;
    for (int i = 0; i < ctx->num_buffers; i++) {
        staging_buffer *b = &ctx->buffers[i];
        if (!b->busy && b->bytes >= bytes && (!best || b->bytes < best->bytes)) best = b;
    }
    if (!best) {
        CR_ASSERT(ctx->num_buffers < MAX_IN_FLIGHT);
        best = &ctx->buffers[ctx->num_buffers++];
        best->bytes = bytes ? bytes : 1;
        best->host = ctx->be->ops->host_alloc ? ctx->be->ops->host_alloc(ctx->be, best->bytes)
                                              : cr_malloc(best->bytes, "staging buffer");
    }
    best->busy = 1;
    return best;
}

static void release_buffer(staged_context *ctx, staging_buffer *b) {
    (void)ctx;
    b->busy = 0;
}

/* Where the host communicator should work on buf: buf itself (host memory,
 * or device memory for a CUDA-aware MPI when `direct_ok`), or a staging copy
 * of it. Open MPI's CUDA support covers blocking collectives, not the
 * non-blocking ones (its FAQ on CUDA-aware builds), so those always stage. */
static void *host_view(staged_context *ctx, void *buf, size_t bytes, int copy_in, int direct_ok,
                       staging_buffer **staging) {
    *staging = NULL;
    if (host_readable(ctx, buf)) return buf;
    if (ctx->direct && direct_ok) {
        ctx->be->ops->synchronize(ctx->be); /* MPI reads what the stream wrote */
        return buf;
    }
    *staging = take_buffer(ctx, bytes);
    if (copy_in) ctx->be->ops->copy_to_host(ctx->be, (*staging)->host, buf, bytes);
    return (*staging)->host;
}

static void write_back(staged_context *ctx, void *buf, staging_buffer *staging, size_t bytes) {
    if (!staging) return;
    ctx->be->ops->copy_to_device(ctx->be, buf, staging->host, bytes);
    release_buffer(ctx, staging);
}

static void staged_allreduce_sum(cr_comm *comm, float *buf, size_t count) {
    staged_context *ctx = ctx_of(comm);
    staging_buffer *staging;
    float *view = host_view(ctx, buf, count * sizeof(float), 1, 1, &staging);
    ctx->host->ops->allreduce_sum(ctx->host, view, count);
    write_back(ctx, buf, staging, count * sizeof(float));
}

static cr_comm_request *staged_allreduce_start(cr_comm *comm, float *buf, size_t count) {
    staged_context *ctx = ctx_of(comm);
    cr_comm_request *r = NULL;
    for (int i = 0; i < MAX_IN_FLIGHT && !r; i++)
        if (!ctx->requests[i].device) r = &ctx->requests[i];
    CR_ASSERT(r != NULL);
    float *view = host_view(ctx, buf, count * sizeof(float), 1, 0, &r->staging);
    r->device = buf;
    r->count = count;
    r->inner = ctx->host->ops->allreduce_start(ctx->host, view, count);
    return r;
}

static void staged_wait(cr_comm *comm, cr_comm_request *r) {
    staged_context *ctx = ctx_of(comm);
    if (!r) return;
    ctx->host->ops->wait(ctx->host, r->inner);
    write_back(ctx, r->device, r->staging, r->count * sizeof(float));
    memset(r, 0, sizeof *r);
}

static void staged_broadcast(cr_comm *comm, void *buf, size_t bytes, int root) {
    staged_context *ctx = ctx_of(comm);
    staging_buffer *staging;
    void *view = host_view(ctx, buf, bytes, comm->rank == root, 1, &staging);
    ctx->host->ops->broadcast(ctx->host, view, bytes, root);
    write_back(ctx, buf, staging, bytes);
}

static void staged_allgather(cr_comm *comm, const void *send, void *recv, size_t bytes) {
    staged_context *ctx = ctx_of(comm);
    staging_buffer *send_staging, *recv_staging;
    void *send_view = host_view(ctx, (void *)send, bytes, 1, 1, &send_staging);
    size_t all = bytes * (size_t)comm->world_size;
    void *recv_view = host_view(ctx, recv, all, 0, 1, &recv_staging);
    ctx->host->ops->allgather(ctx->host, send_view, recv_view, bytes);
    if (send_staging) release_buffer(ctx, send_staging);
    write_back(ctx, recv, recv_staging, all);
}

static void staged_barrier(cr_comm *comm) {
    staged_context *ctx = ctx_of(comm);
    ctx->be->ops->synchronize(ctx->be);
    ctx->host->ops->barrier(ctx->host);
}

static void staged_abort(cr_comm *comm, int exit_code) {
    ctx_of(comm)->host->ops->abort(ctx_of(comm)->host, exit_code);
}

static void staged_destroy(cr_comm *comm) {
    staged_context *ctx = ctx_of(comm);
    for (int i = 0; i < ctx->num_buffers; i++) {
        if (ctx->be->ops->host_free)
            ctx->be->ops->host_free(ctx->be, ctx->buffers[i].host);
        else
            free(ctx->buffers[i].host);
    }
    ctx->host->ops->destroy(ctx->host);
    free(ctx);
    free(comm);
}

static const cr_comm_ops staged_ops = {
    .name = "mpi (device buffers staged through host memory)",
    .destroy = staged_destroy,
    .allreduce_sum = staged_allreduce_sum,
    .allreduce_start = staged_allreduce_start,
    .wait = staged_wait,
    .broadcast = staged_broadcast,
    .allgather = staged_allgather,
    .barrier = staged_barrier,
    .abort = staged_abort,
};

cr_comm *cr_comm_device_create(cr_backend *be, cr_comm *host, int direct) {
    staged_context *ctx = cr_calloc(1, sizeof *ctx, "communicator");
    ctx->be = be;
    ctx->host = host;
    ctx->direct = direct;
    cr_comm *comm = cr_calloc(1, sizeof *comm, "communicator");
    ctx->ops = staged_ops;
    if (direct) ctx->ops.name = "mpi (CUDA-aware: device buffers passed directly)";
    comm->ops = &ctx->ops;
    comm->context = ctx;
    comm->rank = host->rank;
    comm->world_size = host->world_size;
    comm->local_rank = host->local_rank;
    return comm;
}
