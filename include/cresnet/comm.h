/* comm: the one interface between a rank and the other ranks.
 *
 * The trainer and the model reach other processes only through this table
 * (sum all-reduce, broadcast, barrier, abort). Implementations: `none` for a
 * single process, `mpi` (src/comm/comm_mpi.c, host buffers: the CPU
 * backend's memory), `mpi` over device memory (comm_staged.c) and `nccl`
 * (comm_nccl.c) for the CUDA backend's buffers. Buffers are memory of the
 * backend in use.
 * Not here: which process owns which GPU (launch), what is reduced (model,
 * train). */
#ifndef CRESNET_COMM_H
#define CRESNET_COMM_H

#include <stddef.h>

typedef struct cr_comm cr_comm;
typedef struct cr_comm_request cr_comm_request; /* an all-reduce in flight */

typedef struct {
    const char *name;
    void (*destroy)(cr_comm *comm);
    /* In place: buf becomes the element-wise sum over all ranks. */
    void (*allreduce_sum)(cr_comm *comm, float *buf, size_t count);
    /* The same, started now and finished by wait: the gradient buckets
     * overlap the rest of the backward pass. buf must not be touched until
     * wait returns. May return NULL when there is nothing to wait for. */
    cr_comm_request *(*allreduce_start)(cr_comm *comm, float *buf, size_t count);
    void (*wait)(cr_comm *comm, cr_comm_request *request);
    void (*broadcast)(cr_comm *comm, void *buf, size_t bytes, int root);
    /* recv[r * bytes ...] = rank r's send, for every rank r (recv holds
     * world_size * bytes). */
    void (*allgather)(cr_comm *comm, const void *send, void *recv, size_t bytes);
    void (*barrier)(cr_comm *comm);
    /* Ends every rank of the job with exit_code; never returns. */
    void (*abort)(cr_comm *comm, int exit_code);
} cr_comm_ops;

struct cr_comm {
    const cr_comm_ops *ops;
    void *context;
    int rank, world_size, local_rank;
};

/* One process, nothing to talk to: every operation is the identity. */
cr_comm *cr_comm_none_create(void);

/* MPI (builds with CRESNET_MPI): whether this process was started by an MPI
 * launcher (mpirun, srun), and the communicator over MPI_COMM_WORLD. Local
 * rank: the rank among the processes of this node. With several ranks, a
 * collective that waits longer than timeout_s (dist.timeout_s) for the
 * others ends this rank with exit code 6 and a line saying so (a watchdog
 * thread: a peer that hangs without dying would otherwise hang the job). */
int cr_comm_mpi_launched(void);
cr_comm *cr_comm_mpi_create(double timeout_s);

/* NCCL (builds with CRESNET_NCCL and CRESNET_CUDA, which defines
 * CRESNET_HAVE_NCCL; without CRESNET_MPI it runs one process): buffers are
 * the CUDA backend's device memory, one rank per GPU. Takes ownership of
 * `mpi` (from cr_comm_mpi_create, or cr_comm_none_create for one process):
 * it carries NCCL's unique id from rank 0, the few host buffers, and the
 * job's abort; ranks are copied from it and destroy destroys it. Collectives are
 * ordered on the backend's stream. An NCCL failure or a stall seen while
 * this thread waits (120 s at start, timeout_s in an operation) aborts the
 * communicator and the job with exit code 6; a stall where the host waits
 * elsewhere (a stream sync in the backend: timeout_s from the last
 * collective queued until it completes) is the watchdog's, which ends the
 * job through MPI without an NCCL call. */
struct cr_backend;
cr_comm *cr_comm_nccl_create(struct cr_backend *cuda_backend, cr_comm *mpi, double timeout_s);

/* A host communicator (MPI) made to work on a backend's device memory
 * (src/comm/comm_staged.c): each operation copies through pinned host
 * buffers, or, with direct (a CUDA-aware MPI), hands MPI the device pointer
 * once the backend has caught up with it. Host pointers pass straight
 * through. Takes ownership of host. Several ranks may share a GPU this way. */
cr_comm *cr_comm_device_create(struct cr_backend *be, cr_comm *host, int direct);
/* Whether the MPI library says it reads CUDA device memory (Open MPI's
 * MPIX_Query_cuda_support); 0 where it cannot say. */
int cr_comm_mpi_cuda_aware(void);

#endif
