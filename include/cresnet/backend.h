/* backend: the one interface between the model and the hardware.
 *
 * A backend is a table of operations (struct cr_backend_ops) plus its private
 * context, in the manner of ggml's backends: the CPU backend (src/backend/cpu,
 * oneDNN convolutions and fused OpenMP kernels) and the CUDA backend
 * (src/backend/cuda, cuDNN and own kernels) each fill one table. Nothing above
 * this header knows which one it is talking to.
 *
 * Conventions, the same for every backend:
 *  - activations are NHWC; a [N,H,W,C] tensor is `rows` = N*H*W rows of C
 *    contiguous channels, stored as float32 or, in a backend made for
 *    bf16, as bfloat16 (`cr_activation_bytes` says which; the pointers are
 *    void * where the op takes activations). Parameters, gradients,
 *    BatchNorm statistics and sums, the pooled features, logits and the
 *    loss are float32 in every backend;
 *  - convolution weights are OHWI ([out][kh][kw][in]); PyTorch's OIHW appears
 *    only at checkpoint boundaries (see model.h);
 *  - every pointer passed to an op is device memory from `alloc`;
 *  - ops are asynchronous with respect to the host; `synchronize` waits, and
 *    `copy_to_host` returns only once the data are there.
 *
 * BatchNorm in training mode is split in three so that a communicator
 * all-reduce can sit between the halves (SyncBN): local sums, finalize (mean,
 * inverse std, running statistics from possibly all-reduced sums), apply.
 * Backward is split the same way.
 * Not here: the order of layers (model), all-reduce (comm), schedules (optim). */
#ifndef CRESNET_BACKEND_H
#define CRESNET_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <string.h> /* memcpy: bit casts on the host */

typedef struct cr_backend cr_backend;
typedef struct cr_conv_plan cr_conv_plan; /* a backend's prepared convolution */

typedef struct {
    int batch, in_h, in_w, in_c;
    int out_c, kernel, stride, pad;
    int out_h, out_w; /* derived by cr_conv_shape_make */
} cr_conv_shape;

cr_conv_shape cr_conv_shape_make(int batch, int in_h, int in_w, int in_c, int out_c, int kernel,
                                 int stride, int pad);

/* One BatchNorm layer applied to a [rows, channels] activation. */
typedef struct {
    long rows;
    int channels;
    const float *mean, *invstd; /* [C] each: batch (train) or running (eval) statistics */
    const float *gamma, *beta;  /* [C] each */
} cr_bn_view;

/* The arithmetic of a backend: fp32 throughout; TF32 tensor cores
 * (convolution and GEMM inputs rounded to a 10-bit mantissa, products
 * accumulated in fp32; everything else stays fp32); or bf16 activations
 * (stored with an 8-bit mantissa, convolutions on bf16 inputs and bf16
 * copies of the weights, accumulated in fp32; BatchNorm statistics, the
 * head, weight gradients once converted, master weights and the optimizer
 * stay fp32), as PyTorch's autocast to bfloat16 does. */
typedef enum { CR_MATH_FP32, CR_MATH_TF32, CR_MATH_BF16 } cr_math;

/* Code both compilers build: the C one and nvcc, for host and device. */
#ifdef __CUDACC__
#define CR_HOST_DEVICE __host__ __device__
#else
#define CR_HOST_DEVICE
#endif

/* bfloat16: the upper half of a float's bits. From float by rounding to
 * nearest, ties to even (as torch and CUDA's __float2bfloat16_rn); a NaN
 * stays a NaN. Shared by the backends so they round alike. */
typedef uint16_t cr_bf16;

static inline CR_HOST_DEVICE uint32_t cr_float_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

static inline CR_HOST_DEVICE float cr_float_from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

static inline CR_HOST_DEVICE float cr_bf16_to_float(cr_bf16 h) {
    return cr_float_from_bits((uint32_t)h << 16);
}

static inline CR_HOST_DEVICE cr_bf16 cr_bf16_from_float(float f) {
    uint32_t u = cr_float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (cr_bf16)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (cr_bf16)(u >> 16);
}

/* One augmented 32x32 image in integer form: the data module's augmentation
 * (crop with zero padding, flip, rotation exactly as PIL) with its random
 * draws made and the rotation turned into PIL's 16.16 fixed-point affine
 * map (data.h: cr_augment_transform). A backend that holds the uint8 images
 * builds a batch from these without any floating-point geometry, so every
 * backend picks the same source pixels. */
typedef struct {
    int32_t sample;         /* which image of the resident set */
    int32_t pad;            /* zero padding before the crop */
    int32_t crop_x, crop_y; /* the crop's corner in the padded image, 0..2*pad */
    int32_t flip;           /* mirror left-right after the crop */
    int32_t rotate;         /* 0: no rotation, fix[] unused */
    int32_t fix[6];         /* a0..a5 of PIL's affine_fixed, output -> cropped pixel */
} cr_image_transform;

/* The source of output pixel (x, y): y*32 + x offset into one plane of the
 * image in file layout, or -1 where the output is 0 (padding, or outside
 * the rotated image). PIL accumulates a2 += a1 per row and xx += a0 per
 * column in int; the closed form here is the same integer sum. */
static inline CR_HOST_DEVICE int cr_image_transform_source(const cr_image_transform *t, int x,
                                                           int y) {
    if (t->rotate) {
        int32_t xx = t->fix[2] + y * t->fix[1] + x * t->fix[0];
        int32_t yy = t->fix[5] + y * t->fix[4] + x * t->fix[3];
        if (xx < 0 || yy < 0) return -1;
        x = xx >> 16;
        y = yy >> 16;
        if (x >= 32 || y >= 32) return -1;
    }
    /* (x, y) in the cropped, flipped image -> the original. */
    int sx = (t->flip ? 31 - x : x) + t->crop_x - t->pad, sy = y + t->crop_y - t->pad;
    if (sx < 0 || sx >= 32 || sy < 0 || sy >= 32) return -1;
    return sy * 32 + sx;
}

/* Momentum SGD, the update of torch.optim.SGD. With momentum buffers that
 * start at zero it equals PyTorch's first step (buffer = gradient) only when
 * dampening is 0, which is what the trainer uses. */
typedef struct {
    float lr, momentum, dampening, weight_decay;
    int nesterov;
    /* NULL, or backend memory holding {lr, momentum}, read when the step
     * runs in place of the two fields: a recorded step (graph_begin) then
     * takes each step's schedule from there. */
    const float *schedule;
} cr_sgd_args;

typedef struct cr_graph cr_graph; /* a backend's recorded sequence of ops */

typedef struct {
    const char *name;
    void (*destroy)(cr_backend *be);

    /* Memory. */
    void *(*alloc)(cr_backend *be, size_t bytes);
    void (*free)(cr_backend *be, void *ptr);
    void (*zero)(cr_backend *be, void *ptr, size_t bytes);
    void (*copy)(cr_backend *be, void *dst, const void *src, size_t bytes);
    void (*copy_to_device)(cr_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*copy_to_host)(cr_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*synchronize)(cr_backend *be);
    /* Optional (NULL: none): named ranges around a stretch of work, for a
     * profiler's timeline (NVTX on CUDA, seen in Nsight Systems). */
    void (*range_push)(cr_backend *be, const char *name);
    void (*range_pop)(cr_backend *be);
    /* What it runs on, for summaries and tables, e.g. "NVIDIA H100 80GB HBM3"
     * or "Intel(R) Xeon(R) Platinum 8488C, 2 threads". */
    void (*describe)(cr_backend *be, char *out, size_t len);
    /* Optional, for communicators that stage device buffers through host
     * memory: page-locked host memory (NULL: malloc), and whether the host
     * can read ptr directly (NULL: no, everything is staged). */
    void *(*host_alloc)(cr_backend *be, size_t bytes);
    void (*host_free)(cr_backend *be, void *ptr);
    int (*host_accessible)(cr_backend *be, const void *ptr);
    /* Optional: bytes of device memory in use now beyond those in use when
     * the backend was created (a GPU's allocations, for benchmarks; the
     * device's own count, so another process's allocations meanwhile count
     * too). */
    size_t (*device_memory_used)(cr_backend *be);
    /* 1 where alloc returns memory the host cannot use (a GPU's): there the
     * trainer keeps the images on the device and augments them with
     * augment_batch by default, and several ranks need a communicator that
     * reaches device memory (NCCL, or MPI through host staging). */
    int device_memory;
    /* Optional (NULL: every op runs as it is called). Between graph_begin
     * and graph_end the ops are recorded, not run; graph_end returns the
     * recording, or NULL when the backend could not make one (nothing
     * recorded has run: the caller runs the ops again itself). graph_launch
     * runs the recorded ops again on the same pointers, reading what the
     * buffers hold by then. Never recorded: synchronize, copies to or from
     * the host, and allocations (such a call while recording is an error
     * that ends the run; NULL is for a recording that cannot be
     * instantiated). (CUDA graphs: the launches of a training
     * step cost one launch.) */
    void (*graph_begin)(cr_backend *be);
    cr_graph *(*graph_end)(cr_backend *be);
    void (*graph_launch)(cr_backend *be, cr_graph *graph);
    void (*graph_free)(cr_backend *be, cr_graph *graph);
    /* Optional (NULL: batches are built on the host). images[i] (NHWC) =
     * (v/255 - mean[c]) / std[c], v the pixel transforms[i] selects from the
     * uint8 images in file layout at `pixels` (0 where it selects none).
     * pixels and transforms are device memory. */
    void (*augment_batch)(cr_backend *be, const uint8_t *pixels,
                          const cr_image_transform *transforms, int n, const float mean[3],
                          const float std[3], float *images);

    /* Convolution without bias. Plans are made once per shape and reused.
     * backward_weight overwrites dw. */
    cr_conv_plan *(*conv_plan)(cr_backend *be, const cr_conv_shape *shape);
    void (*conv_plan_free)(cr_backend *be, cr_conv_plan *plan);
    void (*conv_forward)(cr_backend *be, cr_conv_plan *plan, const void *x, const float *w,
                         void *y);
    void (*conv_backward_data)(cr_backend *be, cr_conv_plan *plan, const void *dy, const float *w,
                               void *dx);
    void (*conv_backward_weight)(cr_backend *be, cr_conv_plan *plan, const void *x, const void *dy,
                                 float *dw);

    /* BatchNorm, training forward. sums[0..C) = sum(x - shift), sums[C..2C) =
     * sum((x - shift)^2): shifting by a value near the mean (the running mean)
     * keeps the variance free of cancellation. */
    void (*bn_sums)(cr_backend *be, const void *x, long rows, int channels, const float *shift,
                    float *sums);
    /* From sums over `count` values per channel: mean, invstd = 1/sqrt(var+eps)
     * with the biased variance; running stats move by `momentum` towards the
     * mean and the unbiased variance, as torch.nn.BatchNorm2d. */
    void (*bn_finalize)(cr_backend *be, const float *sums, double count, int channels,
                        const float *shift, float eps, float momentum, float *mean, float *invstd,
                        float *running_mean, float *running_var);
    /* Eval mode: mean = running_mean, invstd = 1/sqrt(running_var + eps). */
    void (*bn_running_stats)(cr_backend *be, const float *running_mean, const float *running_var,
                             int channels, float eps, float *mean, float *invstd);
    /* y = gamma * (x - mean) * invstd + beta (+ residual) (then ReLU if relu).
     * residual may be NULL. */
    void (*bn_apply)(cr_backend *be, const cr_bn_view *bn, const void *x, const void *residual,
                     int relu, void *y);
    /* Backward sums. The gradient at the output is dy (+ dy2 when not NULL: a
     * block's output gradient arrives in two halves, main path and shortcut,
     * and is summed here rather than in a pass of its own); with relu, it is
     * masked by y > 0, giving dz. sums[0..C) = sum(dz * xhat), sums[C..2C) =
     * sum(dz): the gradients of gamma and beta, in that order, as laid out in
     * the parameter buffer. */
    void (*bn_backward_sums)(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                             const void *dy, const void *dy2, int relu, float *sums);
    /* dx from dz (recomputed as in bn_backward_sums). In training mode, with
     * sums over `count` values: dx = gamma*invstd*(dz - sum(dz)/count -
     * xhat*sum(dz*xhat)/count); in eval mode (training == 0): dx =
     * gamma*invstd*dz. d_residual (may be NULL) receives dz. dx may alias dy
     * and d_residual may alias dy2: each element is read before it is written. */
    void (*bn_backward_apply)(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                              const void *dy, const void *dy2, int relu, const float *sums,
                              double count, int training, void *dx, void *d_residual);

    /* Head. x [batch, hw, C] (activations) -> y [batch, C] (float), mean
     * over hw. */
    void (*avgpool_forward)(cr_backend *be, const void *x, int batch, int hw, int channels,
                            float *y);
    /* dx (activations) = dy/hw broadcast over the hw positions (dx is
     * overwritten). */
    void (*avgpool_backward)(cr_backend *be, const float *dy, int batch, int hw, int channels,
                             void *dx);
    /* y[batch, out] = x[batch, in] w[out, in]^T + b. */
    void (*linear_forward)(cr_backend *be, const float *x, const float *w, const float *b,
                           int batch, int in, int out, float *y);
    /* dx (may be NULL), dw and db are overwritten. */
    void (*linear_backward)(cr_backend *be, const float *x, const float *w, const float *dy,
                            int batch, int in, int out, float *dx, float *dw, float *db);
    /* Softmax cross-entropy. Writes loss_sum[0] = sum over the batch of -log
     * p(label), loss_sum[1] = how many argmaxes equal the label (exact in
     * float below 2^24), predicted[i] = argmax, and when dlogits is not NULL
     * dlogits = (softmax - onehot) * grad_scale. One read of loss_sum[0..2)
     * gives a step's loss and accuracy. */
    void (*softmax_xent)(cr_backend *be, const float *logits, const int32_t *labels, int batch,
                         int classes, float grad_scale, float *dlogits, float *loss_sum,
                         int32_t *predicted);

    /* One SGD step over n parameters in one pass. */
    void (*sgd_step)(cr_backend *be, float *params, const float *grads, float *momentum_buf,
                     size_t n, const cr_sgd_args *args);
    /* x *= alpha */
    void (*scale)(cr_backend *be, float *x, size_t n, float alpha);
    /* y (n activations) = x (n floats), rounded to the activation type:
     * the model's float input images enter a bf16 network here. Needed
     * where cr_activation_bytes is not 4. */
    void (*to_activations)(cr_backend *be, const float *x, size_t n, void *y);
} cr_backend_ops;

struct cr_backend {
    const cr_backend_ops *ops;
    void *context;
    cr_math math;
};

/* Bytes per stored activation value: 2 (bfloat16) with CR_MATH_BF16, else 4. */
static inline int cr_activation_bytes(const cr_backend *be) {
    return be->math == CR_MATH_BF16 ? 2 : 4;
}

/* num_threads 0: all cores (OMP_NUM_THREADS when set). math: CR_MATH_FP32,
 * or CR_MATH_BF16 where oneDNN has bf16 convolutions for this processor
 * (AVX-512 and later; otherwise a usage error naming the reason). */
cr_backend *cr_backend_cpu_create(int num_threads, cr_math math);
/* Whether cr_backend_cpu_create accepts `math` on this processor. */
int cr_backend_cpu_supports(cr_math math);

/* The CUDA backend (src/backend/cuda): these exist only when built with
 * CRESNET_CUDA, which also defines CRESNET_HAVE_CUDA. */
typedef struct {
    cr_math math;
    /* Time the acceptable cuDNN engines of each convolution plan once and
     * keep the fastest (0: the heuristic's first). Costs start-up time. */
    int autotune;
    /* Only engines cuDNN does not note as non-deterministic: a run repeats
     * bit for bit (our kernels and cuBLAS's GEMMs always do). */
    int deterministic;
} cr_cuda_options;

/* CUDA device `device` (0-based); exits with a usage error when there is no
 * such device or it is older than compute capability 8.0. */
cr_backend *cr_backend_cuda_create(int device, const cr_cuda_options *options);
/* Visible CUDA devices; 0 when there is none or no driver (not an error). */
int cr_cuda_device_count(void);
/* The UUID CUDA gives device `device` (nvidia-smi's GPU-..., 16 bytes):
 * the same GPU has the same id in every process, whichever index
 * CUDA_VISIBLE_DEVICES or Slurm's --gpus-per-task give it there. */
void cr_cuda_device_uuid(int device, unsigned char uuid[16]);
/* The backend's CUDA stream (a cudaStream_t), on which all its ops run in
 * order: the NCCL communicator queues its collectives there. */
void *cr_backend_cuda_stream(cr_backend *be);

#endif
