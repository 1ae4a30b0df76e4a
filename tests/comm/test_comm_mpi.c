/* The MPI communicator under a real mpirun: sums (blocking and started in
 * buckets), broadcasts, all-gathers and ranks as MPI_COMM_WORLD sees them;
 * then the same through the device-memory wrapper (comm_staged.c) over the
 * CPU backend, whose copies stand in for a GPU's. Run with -np 2 and -np 4. */
#include "check.h"
#include "cresnet/backend.h"
#include "cresnet/comm.h"

#include <stdlib.h>

/* Sum of (rank + 1) * (i % 7 + 1) over the ranks. */
static float expected_sum(size_t i, int size) {
    return (float)((i % 7 + 1) * size * (size + 1) / 2);
}

static void exercise(cr_comm *comm, const char *what) {
    int rank = comm->rank, size = comm->world_size;
    CHECK(size >= 2 && rank >= 0 && rank < size, "%s: rank %d of %d", what, rank, size);
    CHECK(comm->local_rank == rank, "%s: one node: local rank %d equals rank", what,
          comm->local_rank);

    const size_t n = 1000003;
    float *buf = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) buf[i] = (float)((rank + 1) * (i % 7 + 1));
    comm->ops->allreduce_sum(comm, buf, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= buf[i] == expected_sum(i, size);
    CHECK(ok, "%s: allreduce sums", what);

    /* Buckets from the end, as the trainer launches them, twice over: the
     * second round reuses what the first allocated. */
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < n; i++) buf[i] = (float)((rank + 1) * (i % 7 + 1));
        cr_comm_request *requests[8];
        size_t bucket = n / 8 + 1, end = n;
        int count = 0;
        for (; end > 0; count++) {
            size_t begin = end > bucket ? end - bucket : 0;
            requests[count] = comm->ops->allreduce_start(comm, buf + begin, end - begin);
            end = begin;
        }
        for (int k = 0; k < count; k++) comm->ops->wait(comm, requests[k]);
        ok = 1;
        for (size_t i = 0; i < n; i++) ok &= buf[i] == expected_sum(i, size);
        CHECK(ok, "%s: bucketed allreduce sums, round %d", what, round + 1);
    }
    free(buf);

    double value = rank == 1 ? 3.25 : -1.0;
    comm->ops->broadcast(comm, &value, sizeof value, 1);
    CHECK(value == 3.25, "%s: broadcast from rank 1: %g", what, value);
    int *ranks = malloc((size_t)size * sizeof(int));
    comm->ops->allgather(comm, &rank, ranks, sizeof rank);
    int in_order = 1;
    for (int r = 0; r < size; r++) in_order &= ranks[r] == r;
    CHECK(in_order, "%s: all-gather collects every rank's value in rank order", what);
    free(ranks);
    comm->ops->barrier(comm);
}

int main(void) {
    CHECK(cr_comm_mpi_launched(), "started by an MPI launcher");
    cr_comm *mpi = cr_comm_mpi_create(600);
    exercise(mpi, "mpi");
    cr_backend *cpu = cr_backend_cpu_create(1, CR_MATH_FP32);
    cr_comm *staged = cr_comm_device_create(cpu, mpi, 0);
    exercise(staged, "staged");
    int failed = check_finish();
    staged->ops->destroy(staged); /* and the MPI communicator it owns */
    cpu->ops->destroy(cpu);
    return failed;
}
