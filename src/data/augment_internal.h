/* augment_internal: the augmentation with its random choices made explicit.
 *
 * cr_augment_image is draw (Philox words -> parameters) followed by apply
 * (parameters -> uint8 image) and normalisation. The two halves are exposed
 * here so tests can check the draws' statistics and compare apply, byte for
 * byte, with torchvision/PIL on fixed parameters.
 * Not here: normalisation, batches, threads. */
#ifndef CRESNET_AUGMENT_INTERNAL_H
#define CRESNET_AUGMENT_INTERNAL_H

#include "cresnet/data.h"

#include <stdint.h>

typedef struct {
    int pad;      /* zero padding before the crop */
    int crop_x;   /* left edge of the 32x32 crop in the padded image, 0..2*pad */
    int crop_y;   /* top edge, 0..2*pad */
    int flip;     /* 1: mirror left-right after the crop */
    double angle; /* degrees, counter-clockwise, applied last */
} augment_params;

/* The parameters of sample `sample` in `epoch`: words 4s..4s+3 of stream
 * (CR_RNG_AUGMENT, epoch); a disabled step draws nothing that matters and is
 * the identity. */
augment_params augment_draw(const cr_augment *aug, uint64_t seed, int epoch, uint64_t sample);

/* planes: one image in file layout (3 planes of 32x32). out: 32x32x3 uint8,
 * HWC. Pad, crop, flip, then rotate exactly as PIL's Image.rotate(angle,
 * NEAREST, expand=False, fillcolor=0) on the 32x32 RGB image. */
void augment_apply(const uint8_t *planes, const augment_params *p, uint8_t *out);

/* The same augmentation in integer form (backend.h's cr_image_transform):
 * cr_image_transform_source over every pixel gives augment_apply's image. */
cr_image_transform augment_transform(const augment_params *p, int32_t sample);

#endif
