/* Private to the CUDA backend: its context, the checks around every library
 * call, and the op groups of its files.
 *
 * Included by the C files (cuda_backend.c, cuda_conv.c) and by the CUDA C++
 * file (cuda_kernels.cu), hence the extern "C" and no cresnet/error.h here:
 * that header is C11 (_Noreturn), so failures go through cuda_fail, which
 * the C side forwards to cr_fatal_at. */
#ifndef CRESNET_CUDA_BACKEND_PRIVATE_H
#define CRESNET_CUDA_BACKEND_PRIVATE_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn_graph.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define CUDA_NORETURN [[noreturn]]
extern "C" {
#else
#define CUDA_NORETURN _Noreturn
#endif

#include "cresnet/backend.h"

/* Convolution execution plans, shared by every cr_conv_plan of the backend
 * (cuda_conv.c): layers of one shape share them, and a plan dropped when the
 * batch size changes is found again when it changes back. */
typedef struct cuda_conv_cache cuda_conv_cache;

typedef struct {
    int device;
    cr_math math;      /* TF32: tensor-core engines and GEMMs allowed; BF16: bf16 convolutions */
    int autotune;      /* time engines when making a convolution plan */
    int deterministic; /* deterministic cuDNN engines only */
    int bn_vector;     /* CRESNET_CUDA_BN=vector: BatchNorm on 16-byte vectors */
    int cudnn_direct_only; /* CRESNET_CUDNN_ENGINES=direct: no FFT or Winograd engines */
    cudaStream_t stream;   /* every op of the backend runs on it, in order */
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    cuda_conv_cache *conv_cache;
    /* Scratch that grows to the largest request and is reused: ops run one
     * after another on the stream, so one buffer of each kind is enough. */
    void *workspace; /* cuDNN's */
    size_t workspace_bytes;
    void *partials; /* per-block partial sums (doubles) of the two-stage reductions */
    size_t partials_bytes;
    void *weights_bf16; /* bf16: a convolution's weights or weight gradient in bf16 */
    size_t weights_bf16_bytes;
    /* A recorded graph holds the scratch pointers it was recorded with, so
     * while any graph lives, outgrown scratch is kept here, not freed. */
    int live_graphs;
    void **retired;
    int num_retired;
    void *cublas_workspace; /* set on the handle so that no GEMM allocates while recorded */
    size_t used_at_start;   /* device bytes in use before this backend allocated any */
} cuda_context;

static inline cuda_context *cuda_ctx(cr_backend *be) { return (cuda_context *)be->context; }

/* ---- checks: every CUDA, cuDNN and cuBLAS call goes through one ---- */

/* Prints `cresnet: error: LIBRARY: CALL: MESSAGE (at file:line)` and exits
 * with CR_EXIT_INTERNAL. */
CUDA_NORETURN void cuda_fail(const char *file, int line, const char *library, const char *call,
                             const char *message);
/* The same for cuDNN, adding cuDNN's own account of its last error. */
CUDA_NORETURN void cuda_fail_cudnn(const char *file, int line, const char *call,
                                   cudnnStatus_t status);

#define CR_CUDA(call)                                                                              \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
            cuda_fail(__FILE__, __LINE__, "CUDA", #call, cudaGetErrorString(err_));                \
    } while (0)

#define CR_CUDNN(call)                                                                             \
    do {                                                                                           \
        cudnnStatus_t status_ = (call);                                                            \
        if (status_ != CUDNN_STATUS_SUCCESS) cuda_fail_cudnn(__FILE__, __LINE__, #call, status_);  \
    } while (0)

#define CR_CUBLAS(call)                                                                            \
    do {                                                                                           \
        cublasStatus_t status_ = (call);                                                           \
        if (status_ != CUBLAS_STATUS_SUCCESS)                                                      \
            cuda_fail(__FILE__, __LINE__, "cuBLAS", #call, cublasGetStatusName(status_));          \
    } while (0)

/* ---- scratch (cuda_backend.c) ---- */

/* At least `bytes` of cuDNN workspace; NULL for 0. Valid until the next call. */
void *cuda_workspace(cr_backend *be, size_t bytes);
/* At least `count` doubles of reduction scratch. Valid until the next call. */
double *cuda_partials(cr_backend *be, size_t count);
/* At least `count` bf16 values for a convolution's weights. Valid until the
 * next call. */
void *cuda_weights_bf16(cr_backend *be, size_t count);

/* ---- cuda_conv.c: cuDNN graph API ---- */
cr_conv_plan *cuda_conv_plan(cr_backend *be, const cr_conv_shape *shape);
void cuda_conv_plan_free(cr_backend *be, cr_conv_plan *plan);
void cuda_conv_forward(cr_backend *be, cr_conv_plan *plan, const void *x, const float *w, void *y);
void cuda_conv_backward_data(cr_backend *be, cr_conv_plan *plan, const void *dy, const float *w,
                             void *dx);
void cuda_conv_backward_weight(cr_backend *be, cr_conv_plan *plan, const void *x, const void *dy,
                               float *dw);
void cuda_conv_cache_free(cuda_conv_cache *cache);

/* ---- cuda_kernels.cu: BatchNorm ---- */
void cuda_bn_sums(cr_backend *be, const void *x, long rows, int channels, const float *shift,
                  float *sums);
void cuda_bn_finalize(cr_backend *be, const float *sums, double count, int channels,
                      const float *shift, float eps, float momentum, float *mean, float *invstd,
                      float *running_mean, float *running_var);
void cuda_bn_running_stats(cr_backend *be, const float *running_mean, const float *running_var,
                           int channels, float eps, float *mean, float *invstd);
void cuda_bn_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *residual,
                   int relu, void *y);
void cuda_bn_backward_sums(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                           const void *dy, const void *dy2, int relu, float *sums);
void cuda_bn_backward_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                            const void *dy, const void *dy2, int relu, const float *sums,
                            double count, int training, void *dx, void *d_residual);

/* ---- cuda_kernels.cu: head, loss, optimizer ---- */
void cuda_avgpool_forward(cr_backend *be, const void *x, int batch, int hw, int channels, float *y);
void cuda_avgpool_backward(cr_backend *be, const float *dy, int batch, int hw, int channels,
                           void *dx);
void cuda_linear_forward(cr_backend *be, const float *x, const float *w, const float *b, int batch,
                         int in, int out, float *y);
void cuda_linear_backward(cr_backend *be, const float *x, const float *w, const float *dy,
                          int batch, int in, int out, float *dx, float *dw, float *db);
void cuda_softmax_xent(cr_backend *be, const float *logits, const int32_t *labels, int batch,
                       int classes, float grad_scale, float *dlogits, float *loss_sum,
                       int32_t *predicted);
void cuda_sgd_step(cr_backend *be, float *params, const float *grads, float *momentum_buf, size_t n,
                   const cr_sgd_args *args);
void cuda_scale(cr_backend *be, float *x, size_t n, float alpha);

/* At least `microseconds` of device time on `stream` (a one-thread spin). */
void cuda_spin(cudaStream_t stream, long microseconds);

/* ---- cuda_kernels.cu: conversions ---- */
void cuda_float_to_bf16(cr_backend *be, const float *x, size_t n, void *y);
void cuda_bf16_to_float(cr_backend *be, const void *x, size_t n, float *y);
void cuda_to_activations(cr_backend *be, const float *x, size_t n, void *y);

/* ---- cuda_kernels.cu: data ---- */
void cuda_augment_batch(cr_backend *be, const uint8_t *pixels, const cr_image_transform *transforms,
                        int n, const float mean[3], const float std[3], float *images);

#ifdef __cplusplus
}
#endif

#endif
