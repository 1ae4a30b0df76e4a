/* The MPI communicator under a real mpirun: sums, broadcasts and ranks as
 * MPI_COMM_WORLD sees them. Run with -np 2 and -np 4. */
#include "check.h"
#include "cresnet/comm.h"

#include <stdlib.h>

int main(void) {
    CHECK(cr_comm_mpi_launched(), "started by an MPI launcher");
    cr_comm *comm = cr_comm_mpi_create();
    int rank = comm->rank, size = comm->world_size;
    CHECK(size >= 2 && rank >= 0 && rank < size, "rank %d of %d", rank, size);
    CHECK(comm->local_rank == rank, "one node: local rank %d equals rank", comm->local_rank);

    /* Sum of (rank + 1) * (i + 1) over ranks = (i + 1) * size * (size + 1) / 2. */
    const size_t n = 1000003;
    float *buf = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) buf[i] = (float)((rank + 1) * (i % 7 + 1));
    comm->ops->allreduce_sum(comm, buf, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= buf[i] == (float)((i % 7 + 1) * size * (size + 1) / 2);
    CHECK(ok, "allreduce sums");

    double value = rank == 1 ? 3.25 : -1.0;
    comm->ops->broadcast(comm, &value, sizeof value, 1);
    CHECK(value == 3.25, "broadcast from rank 1: %g", value);
    int *ranks = malloc((size_t)size * sizeof(int));
    comm->ops->allgather(comm, &rank, ranks, sizeof rank);
    int in_order = 1;
    for (int r = 0; r < size; r++) in_order &= ranks[r] == r;
    CHECK(in_order, "all-gather collects every rank's value in rank order");
    free(ranks);
    comm->ops->barrier(comm);
    free(buf);
    int failed = check_finish();
    comm->ops->destroy(comm);
    return failed;
}
