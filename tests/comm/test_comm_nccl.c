/* The NCCL communicator under mpirun, one rank per GPU: sums, overlapped
 * all-reduces and their ordering against the compute stream, broadcasts,
 * all-gathers (device buffers, and the host buffers that go over MPI),
 * barrier. Values are exact for any number of ranks (small integers in
 * floats), so the same program serves -np 1 and -np N on an N-GPU node.
 * In a build without MPI it runs as one process, NCCL bootstrapped over the
 * single-process communicator. With one rank it then runs the same checks
 * on the staged communicator (device buffers through pinned host memory)
 * over the single-process one: the MPI-on-device path's copies, on a GPU.
 *
 * Without a CUDA device it prints "SKIPPED: no CUDA device" and passes; so it
 * does when some rank of the job has no GPU of its own (NCCL refuses two
 * ranks on one GPU). */
#include "check.h"
#include "cresnet/backend.h"
#include "cresnet/comm.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    cr_backend *be;
    cr_comm *comm;
} setup;

static float *device_floats(setup *s, const float *host, size_t n) {
    float *dev = s->be->ops->alloc(s->be, n * sizeof(float));
    s->be->ops->copy_to_device(s->be, dev, host, n * sizeof(float));
    return dev;
}

/* Rank r holds (r + 1) * (i % 7 + 1); the sum over ranks is
 * (i % 7 + 1) * W * (W + 1) / 2, times `scale`. */
static void fill_rank_pattern(float *x, size_t n, int rank) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((rank + 1) * (int)(i % 7 + 1));
}

static int is_rank_sum(const float *x, size_t n, int world, float scale) {
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= x[i] == scale * (float)((int)(i % 7 + 1) * world * (world + 1) / 2);
    return ok;
}

static void test_allreduce(setup *s) {
    const size_t n = ((size_t)1 << 20) + 3; /* not a multiple of anything NCCL likes */
    float *host = malloc(n * sizeof(float));
    fill_rank_pattern(host, n, s->comm->rank);
    float *dev = device_floats(s, host, n);
    s->comm->ops->allreduce_sum(s->comm, dev, n);
    s->be->ops->copy_to_host(s->be, host, dev, n * sizeof(float));
    CHECK(is_rank_sum(host, n, s->comm->world_size, 1.0f), "allreduce_sum over %d ranks",
          s->comm->world_size);
    s->be->ops->free(s->be, dev);
    free(host);
}

/* The overlapped path as the trainer drives it: a compute-stream op writes
 * the buffer just before allreduce_start (the all-reduce must see it), and
 * one scales it right after wait (it must see the sums). Buckets are taken
 * from the end, several in flight at once, twice so requests are reused. */
static void test_allreduce_overlap(setup *s) {
    const size_t n = 300001, bucket = 65536;
    float *host = malloc(n * sizeof(float));
    fill_rank_pattern(host, n, s->comm->rank);
    float *dev = device_floats(s, host, n);
    for (int round = 0; round < 2; round++) {
        cr_comm_request *requests[16];
        int count = 0;
        for (size_t end = n; end > 0; end = end > bucket ? end - bucket : 0) {
            size_t begin = end > bucket ? end - bucket : 0;
            s->be->ops->scale(s->be, dev + begin, end - begin, 2.0f);
            requests[count++] = s->comm->ops->allreduce_start(s->comm, dev + begin, end - begin);
        }
        for (int i = 0; i < count; i++) s->comm->ops->wait(s->comm, requests[i]);
        s->be->ops->scale(s->be, dev, n, 3.0f);
    }
    s->be->ops->copy_to_host(s->be, host, dev, n * sizeof(float));
    /* Round one: 2x, summed, 3x; round two: the same again on the result. */
    float w = (float)s->comm->world_size;
    CHECK(is_rank_sum(host, n, s->comm->world_size, 36.0f * w),
          "allreduce_start/wait ordered with the compute stream");
    s->be->ops->free(s->be, dev);
    free(host);
}

static void test_broadcast(setup *s) {
    int rank = s->comm->rank, root = s->comm->world_size - 1;
    enum { N = 1001 };
    unsigned char host[N];
    for (int i = 0; i < N; i++) host[i] = (unsigned char)(rank * 31 + i);
    unsigned char *dev = s->be->ops->alloc(s->be, N);
    s->be->ops->copy_to_device(s->be, dev, host, N);
    s->comm->ops->broadcast(s->comm, dev, N, root);
    s->be->ops->copy_to_host(s->be, host, dev, N);
    int ok = 1;
    for (int i = 0; i < N; i++) ok &= host[i] == (unsigned char)(root * 31 + i);
    CHECK(ok, "device broadcast from rank %d", root);
    s->be->ops->free(s->be, dev);

    /* Host memory (the trainer's config digest and checkpoint path). */
    char path[64];
    snprintf(path, sizeof path, "%s", rank == 0 ? "checkpoints/epoch_3.safetensors" : "");
    s->comm->ops->broadcast(s->comm, path, sizeof path, 0);
    CHECK(strcmp(path, "checkpoints/epoch_3.safetensors") == 0, "host broadcast: '%s'", path);
}

static void test_allgather(setup *s) {
    int rank = s->comm->rank, world = s->comm->world_size;
    enum { K = 3 };
    int mine[K] = {rank * 10, rank * 10 + 1, rank * 10 + 2};
    int *all = calloc((size_t)world * K, sizeof(int));
    int *send = s->be->ops->alloc(s->be, sizeof mine);
    int *recv = s->be->ops->alloc(s->be, (size_t)world * sizeof mine);
    s->be->ops->copy_to_device(s->be, send, mine, sizeof mine);
    s->comm->ops->allgather(s->comm, send, recv, sizeof mine);
    s->be->ops->copy_to_host(s->be, all, recv, (size_t)world * sizeof mine);
    int ok = 1;
    for (int r = 0; r < world; r++)
        for (int k = 0; k < K; k++) ok &= all[r * K + k] == r * 10 + k;
    CHECK(ok, "device all-gather in rank order");
    s->be->ops->free(s->be, send);
    s->be->ops->free(s->be, recv);

    memset(all, 0, (size_t)world * sizeof mine);
    s->comm->ops->allgather(s->comm, mine, all, sizeof mine);
    ok = 1;
    for (int r = 0; r < world; r++)
        for (int k = 0; k < K; k++) ok &= all[r * K + k] == r * 10 + k;
    CHECK(ok, "host all-gather in rank order");
    free(all);
}

/* Every rank must have a GPU of its own, or none may start NCCL. */
static int every_rank_has_a_gpu(cr_comm *mpi, int gpus) {
    float lacking = mpi->local_rank >= gpus ? 1.0f : 0.0f;
    mpi->ops->allreduce_sum(mpi, &lacking, 1);
    return lacking == 0.0f;
}

static void run_suite(setup *s) {
    test_allreduce(s);
    test_allreduce_overlap(s);
    test_broadcast(s);
    test_allgather(s);
    s->comm->ops->barrier(s->comm);
    CHECK(1, "%s: barrier returned", s->comm->ops->name);
}

int main(void) {
    int gpus = cr_cuda_device_count();
    if (gpus == 0) {
        printf("SKIPPED: no CUDA device\n");
        return 0;
    }
#ifdef CRESNET_HAVE_MPI
    cr_comm *mpi = cr_comm_mpi_create(600);
#else
    cr_comm *mpi = cr_comm_none_create();
#endif
    if (!every_rank_has_a_gpu(mpi, gpus)) {
        if (mpi->rank == 0)
            printf("SKIPPED: no CUDA device for every rank (%d ranks, %d GPUs here)\n",
                   mpi->world_size, gpus);
        mpi->ops->destroy(mpi);
        return 0;
    }
    int rank = mpi->rank, world = mpi->world_size, local = mpi->local_rank;
    setup s = {.be = cr_backend_cuda_create(local, &(cr_cuda_options){.math = CR_MATH_FP32})};
    s.comm = cr_comm_nccl_create(s.be, mpi, 600);
    CHECK(strcmp(s.comm->ops->name, "nccl") == 0, "name %s", s.comm->ops->name);
    CHECK(s.comm->rank == rank && s.comm->world_size == world && s.comm->local_rank == local,
          "ranks copied from MPI: %d/%d/%d", s.comm->rank, s.comm->world_size, s.comm->local_rank);
    run_suite(&s);
    s.comm->ops->destroy(s.comm);
    if (world == 1) {
        setup staged = {.be = s.be, .comm = cr_comm_device_create(s.be, cr_comm_none_create(), 0)};
        printf("-- the staged communicator over one process --\n");
        run_suite(&staged);
        staged.comm->ops->destroy(staged.comm);
    }
    int failed = check_finish();
    s.be->ops->destroy(s.be);
    return failed;
}
