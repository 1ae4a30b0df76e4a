/* model: the ResNets of the report, as a layout of tensors and a sequence of
 * backend calls.
 *
 * A model description (widths and blocks per stage) fixes the parameter
 * layout: every trainable tensor is a view into one flat `params` buffer (and
 * the same offsets into `grads` and `momentum`), every BatchNorm running
 * statistic a view into one flat `buffers` buffer, in PyTorch's state_dict
 * order and with its names, so one all-reduce and one optimizer pass cover
 * all parameters. Convolution weights are stored OHWI; cr_tensor_to_torch and
 * cr_tensor_from_torch convert at checkpoint boundaries.
 *
 * The forward and backward passes call the backend only, and the
 * communicator only for SyncBN (BatchNorm statistics summed over ranks).
 * Not here: data, the optimizer's schedule, the gradient all-reduce (train). */
#ifndef CRESNET_MODEL_H
#define CRESNET_MODEL_H

#include "cresnet/backend.h"
#include "cresnet/comm.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { CR_MAX_STAGES = 8, CR_MAX_WIDTH = 4096, CR_MAX_BLOCKS = 64 };
enum { CR_IMAGE_SIZE = 32, CR_IMAGE_CHANNELS = 3, CR_NUM_CLASSES = 10 };

#define CR_BN_EPS 1e-5f
#define CR_BN_MOMENTUM 0.1f

typedef struct {
    int num_stages;
    int widths[CR_MAX_STAGES];
    int blocks[CR_MAX_STAGES];
} cr_model_desc;

/* small | medium | large. Returns 0, or -1 for an unknown name. */
int cr_model_preset(const char *arch, cr_model_desc *desc);

/* A description from a config's model section: a preset name, or "custom"
 * with widths per stage and blocks per stage (num_blocks 0: one each).
 * Returns 0, or -1 with a one-line reason in err. */
int cr_model_describe(const char *arch, const int *widths, int num_widths, const int *blocks,
                      int num_blocks, cr_model_desc *desc, char *err, size_t err_len);

typedef enum {
    CR_TENSOR_CONV_WEIGHT,
    CR_TENSOR_BN_WEIGHT,
    CR_TENSOR_BN_BIAS,
    CR_TENSOR_LINEAR_WEIGHT,
    CR_TENSOR_LINEAR_BIAS,
    CR_TENSOR_BN_RUNNING_MEAN, /* buffers from here on */
    CR_TENSOR_BN_RUNNING_VAR,
} cr_tensor_kind;

typedef struct {
    char name[96]; /* PyTorch state_dict name */
    cr_tensor_kind kind;
    int ndim, shape[4]; /* PyTorch shape: OIHW, [out, in], [C] */
    size_t offset;      /* in params (or buffers, for running statistics) */
    size_t count;
    int fan_in; /* conv and linear: inputs per output, for initialisation */
} cr_tensor_info;

/* The layout a description implies: names, shapes, offsets. No device memory. */
typedef struct {
    cr_model_desc desc;
    int num_params, num_buffers;
    cr_tensor_info *params, *buffers;
    size_t param_count, buffer_count; /* floats in each flat buffer */
} cr_model_layout;

cr_model_layout cr_model_layout_make(const cr_model_desc *desc);
void cr_model_layout_free(cr_model_layout *layout);
/* The tensor of that name in params or buffers, or NULL. */
const cr_tensor_info *cr_model_layout_find(const cr_model_layout *layout, const char *name);

/* PyTorch's default initialisation, drawn from the counter-based generator:
 * conv and linear weights kaiming-uniform with a = sqrt(5) (bound
 * 1/sqrt(fan_in)), linear bias uniform(+-1/sqrt(fan_in)), BN weight 1, bias
 * 0, running mean 0, variance 1. Element i of tensor p (in PyTorch order) is
 * a function of (seed, p, i) alone. Host memory. */
void cr_model_init(const cr_model_layout *layout, uint64_t seed, float *params, float *buffers);

/* Layout conversion of one tensor between ours (OHWI) and PyTorch's (OIHW);
 * the identity for everything but conv weights. */
void cr_tensor_to_torch(const cr_tensor_info *t, const float *ours, float *torch);
void cr_tensor_from_torch(const cr_tensor_info *t, const float *torch, float *ours);

typedef struct cr_model cr_model;

/* Allocates params, grads, momentum, buffers and activations for up to
 * max_batch images per call on the backend, and initialises with `seed`. */
cr_model *cr_model_create(cr_backend *be, const cr_model_desc *desc, int max_batch, uint64_t seed);
void cr_model_free(cr_model *m);

/* device.debug: every layer of a training step waits for the backend, is
 * timed, and has its output (forward) and gradients (backward) checked for
 * NaN/Inf; the first bad one ends the job with exit 5 naming the layer.
 * print_layer_times writes the time per layer since the previous call. */
void cr_model_set_debug(cr_model *m, int on);
void cr_model_print_layer_times(cr_model *m, FILE *out);

const cr_model_layout *cr_model_get_layout(const cr_model *m);
/* Device pointers to the flat buffers (floats: layout->param_count etc.). */
float *cr_model_params(cr_model *m);
float *cr_model_grads(cr_model *m);
float *cr_model_momentum(cr_model *m);
float *cr_model_buffers(cr_model *m);
/* Device pointer to the logits [batch, 10] of the last forward. */
const float *cr_model_logits(cr_model *m);
/* BatchNorm's num_batches_tracked (the same for every layer). */
int64_t cr_model_batches_tracked(const cr_model *m);
void cr_model_set_batches_tracked(cr_model *m, int64_t count);

typedef struct {
    float loss_sum;           /* sum of per-image losses on this rank */
    int correct;              /* images whose argmax equals the label */
    const int32_t *predicted; /* device [batch] */
} cr_forward_result;

/* Forward pass on `batch` NHWC images (device) and its loss against labels
 * (device int32). training: batch statistics and running-statistics update;
 * else running statistics. With a communicator of several ranks, BatchNorm
 * statistics are over all ranks' batches (SyncBN, as
 * torch.nn.SyncBatchNorm: the ranks' slices may differ in size); with NULL,
 * over this rank's batch alone. When grad_scale > 0 the loss gradient (scaled by it, e.g.
 * 1/global batch) is kept for cr_model_backward. */
cr_forward_result cr_model_forward(cr_model *m, const float *images, const int32_t *labels,
                                   int batch, int training, float grad_scale, cr_comm *comm);

/* cr_model_forward in two halves: the pass, queued on the backend without
 * waiting for it or reading anything back (so that, on one rank, it can be
 * recorded in a backend graph), and its result, which waits for it. */
void cr_model_forward_enqueue(cr_model *m, const float *images, const int32_t *labels, int batch,
                              int training, float grad_scale, cr_comm *comm);
cr_forward_result cr_model_result(cr_model *m);
/* The host-side part of cr_model_forward_enqueue alone (batch size, mode,
 * inputs, the batch count): what a replayed recording of the pass needs
 * done on the host, since the replay itself does only the device work. */
void cr_model_prepare(cr_model *m, const float *images, int batch, int training, cr_comm *comm);

/* Told during the backward pass that grads[first .. param_count) are final:
 * parameters are laid out in forward order and the backward pass finishes
 * them from the end, so `first` only decreases. */
typedef struct {
    void (*ready)(void *context, size_t first);
    void *context;
} cr_grad_hook;

/* Backward pass of the last forward (comm: as given to it): overwrites
 * grads with this rank's gradients; the caller all-reduces them, bucket by
 * bucket as `hook` (may be NULL) reports them ready. */
void cr_model_backward(cr_model *m, cr_comm *comm, const cr_grad_hook *hook);

/* torchsummary's table for the description, as the report prints it. */
void cr_model_print_summary(const cr_model_desc *desc, FILE *out);

/* Floating-point operations of one training image (2 per multiply-add) in
 * the convolutions and the linear layer, the convention of MFU figures:
 * forward, gradient of the weights, and gradient of the inputs everywhere
 * but the images. BatchNorm, ReLU and pooling are not counted. */
double cr_model_train_flops(const cr_model_desc *desc);

#endif
