/* Private to the model module: the shape of each residual block, shared by
 * the layout, the passes and the summary so they cannot disagree. */
#ifndef CRESNET_MODEL_INTERNAL_H
#define CRESNET_MODEL_INTERNAL_H

#include "cresnet/model.h"

typedef struct {
    int stage, index; /* layer{stage+1}.{index} */
    int in_c, out_c, stride;
    int in_hw, out_hw;
    int has_shortcut; /* 1x1 conv + BN where the shape changes */
} block_geometry;

int model_num_blocks(const cr_model_desc *desc);
block_geometry model_block(const cr_model_desc *desc, int k);

#endif
