/* Private to the model module: the shape of each residual block, shared by
 * the layout, the passes and the summary so they cannot disagree. */
#ifndef CRESNET_MODEL_INTERNAL_H
#define CRESNET_MODEL_INTERNAL_H

#include "cresnet/model.h"

#include <stdio.h>

typedef struct {
    int stage, index; /* layer{stage+1}.{index} */
    int in_c, out_c, stride;
    int in_hw, out_hw;
    int has_shortcut; /* 1x1 conv + BN where the shape changes */
} block_geometry;

int model_num_blocks(const cr_model_desc *desc);
block_geometry model_block(const cr_model_desc *desc, int k);

/* device.debug's probe (debug.c): after each layer of a training step it
 * waits for the backend, charges the time since the previous probe to the
 * layer, and checks what the layer wrote for NaN/Inf; the first bad one
 * stops the job with exit 5 naming the layer, the pass and the step. */
typedef struct model_debug model_debug;
model_debug *model_debug_create(cr_backend *be);
void model_debug_free(model_debug *d);
/* Starts a pass (forward: 0, backward: 1) of training step `step`. */
void model_debug_begin(model_debug *d, int backward, long step);
/* layer wrote count values of value_bytes each (4: float, 2: bfloat16) at
 * data (the device's memory); what: "output", "weight gradient", "input
 * gradient", ... */
void model_debug_probe(model_debug *d, const char *layer, const char *what, const void *data,
                       size_t count, int value_bytes);
/* The table of time per layer since the last call, then starts afresh. */
void model_debug_print(model_debug *d, FILE *out);

#endif
