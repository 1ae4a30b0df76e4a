/* Where a step's time goes: a clock that splits each training step into
 * phases (data, forward, backward, waiting on communication, optimizer),
 * sums them per epoch for the end-of-epoch line, and, with log.timeline,
 * writes every phase as a Chrome trace event (Perfetto, chrome://tracing).
 * Each phase ends with a backend synchronize, so on a GPU a phase is the
 * device work it launched, not just the launch; on the CUDA backend the
 * phases are also NVTX ranges for Nsight Systems.
 * Internal to the train module. */
#ifndef CRESNET_TRAIN_PHASES_H
#define CRESNET_TRAIN_PHASES_H

#include "cresnet/backend.h"

#include <stdio.h>

typedef enum {
    PHASE_DATA, /* waiting for the loader, copying the batch to the device */
    PHASE_FORWARD,
    PHASE_BACKWARD, /* includes the gradient all-reduces it overlaps with */
    PHASE_COMM,     /* waiting for the all-reduces still in flight after backward */
    PHASE_OPTIMIZER,
    PHASE_GRAPH,      /* forward, backward and optimizer replayed as one backend graph */
    PHASE_STEP_COUNT, /* the phases above make up a training step */
    PHASE_EVALUATE = PHASE_STEP_COUNT,
    PHASE_CHECKPOINT,
    PHASE_COUNT
} phase_id;

typedef struct {
    cr_backend *be;
    FILE *trace; /* NULL without log.timeline */
    char trace_path[1100];
    int rank;
    double origin;               /* the clock's zero, seconds */
    double seconds[PHASE_COUNT]; /* summed since phase_clock_reset */
    long steps;                  /* training steps since phase_clock_reset */
    phase_id open;
    double opened_at;
} phase_clock;

/* timeline: log.timeline ("" = no trace); rank R > 0 writes timeline.rankR. */
void phase_clock_init(phase_clock *c, cr_backend *be, const char *timeline, int rank);
void phase_clock_close(phase_clock *c);
void phase_clock_reset(phase_clock *c);
void phase_begin(phase_clock *c, phase_id phase);
/* Synchronizes the backend, then adds the time since phase_begin. */
void phase_end(phase_clock *c);
const char *phase_name(phase_id phase);

#endif
