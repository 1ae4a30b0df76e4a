/* train: the programs a researcher runs, built from the other modules.
 *
 * cr_train runs a config end to end: data, model, the per-step loop
 * (forward, backward, gradient all-reduce, SGD with the schedule's lr and
 * momentum), test-set evaluation each epoch, metrics and checkpoints in
 * log.dir, resume. On SIGUSR1 (and SIGTERM in a single process) it
 * finishes the step, writes a checkpoint and returns CR_EXIT_PREEMPTED, so
 * a batch system can requeue the job and resume where it stopped.
 * cr_eval re-evaluates a checkpoint; cr_bench measures training throughput. Each returns a SPEC
 * exit code (fatal errors exit directly through cr_fatal).
 *
 * Checkpoints are safetensors files with PyTorch names and layouts (so
 * `load_state_dict` takes them), the momentum buffers as
 * `optimizer.<name>.momentum_buffer`, and metadata: epoch, step, seed (all
 * the random state there is: every draw is keyed by seed, epoch and
 * sample), config digest, world size, and an FNV-1a checksum of the payload.
 * A damaged or mismatched checkpoint is refused (exit 4), never half-loaded.
 * Not here: how ops run (backend) or reach other ranks (comm). */
#ifndef CRESNET_TRAIN_H
#define CRESNET_TRAIN_H

#include "cresnet/config.h"
#include "cresnet/model.h"

#include <stddef.h>
#include <stdint.h>

int cr_train(const cr_config *cfg);
int cr_eval(const cr_config *cfg, const char *checkpoint_path);
int cr_bench(const cr_config *cfg, int steps, int warmup);

typedef struct {
    int epoch; /* epochs completed */
    long step; /* optimizer steps completed */
    uint64_t seed, config_digest;
    int world_size;
} cr_checkpoint_meta;

/* Writes the model (params, buffers, momentum) atomically; exits 4 on failure. */
void cr_checkpoint_save(const char *path, cr_model *m, cr_backend *be,
                        const cr_checkpoint_meta *meta);
/* Loads into m. 0 on success, else -1 with the reason in err (m untouched). */
int cr_checkpoint_load(const char *path, cr_model *m, cr_backend *be, cr_checkpoint_meta *meta,
                       char *err, size_t err_len);
/* The newest checkpoint in dir into path: `epoch_EEEE.safetensors` (after E
 * epochs) or `epoch_EEEE_step_SSSSSS.safetensors` (written on preemption, S
 * steps into the next epoch). 0 if found, -1 if none. */
int cr_checkpoint_newest(const char *dir, char *path, size_t path_len);

#endif
