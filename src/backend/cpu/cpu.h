/* Private to the CPU backend: its context and the op groups of its files. */
#ifndef CRESNET_CPU_BACKEND_PRIVATE_H
#define CRESNET_CPU_BACKEND_PRIVATE_H

#include "cresnet/backend.h"

#include <oneapi/dnnl/dnnl.h>

typedef struct {
    int num_threads;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
} cpu_context;

static inline cpu_context *cpu_ctx(cr_backend *be) { return (cpu_context *)be->context; }

/* Activations are floats, or bfloat16 in a backend made for bf16. The
 * kernels work on float values: a bf16 run of rows is widened into a buffer
 * on the way in and narrowed on the way out, so the float path keeps its
 * plain, vectorised loops and both paths do the same float arithmetic. */
static inline int cpu_bf16(const cr_backend *be) { return cr_activation_bytes(be) == 2; }

/* Rows [first, first + count) of an NHWC tensor with C channels are
 * count * C contiguous values: as floats, the rows themselves, or widened
 * into buf. */
static inline const float *act_rows(const void *p, long first, long count, int C, int bf16,
                                    float *buf) {
    if (!bf16) return (const float *)p + first * C;
    const cr_bf16 *h = (const cr_bf16 *)p + first * C;
    for (long i = 0; i < count * C; i++) buf[i] = cr_bf16_to_float(h[i]);
    return buf;
}

/* Where to compute those rows of an output: the rows themselves, or buf,
 * which act_rows_store then narrows into them. */
static inline float *act_out_rows(void *p, long first, int C, int bf16, float *buf) {
    return bf16 ? buf : (float *)p + first * C;
}

static inline void act_rows_store(void *p, long first, long count, int C, int bf16,
                                  const float *buf) {
    if (!bf16) return;
    cr_bf16 *h = (cr_bf16 *)p + first * C;
    for (long i = 0; i < count * C; i++) h[i] = cr_bf16_from_float(buf[i]);
}

/* One value, for the small ops. */
static inline float act_load(const void *p, long i, int bf16) {
    return bf16 ? cr_bf16_to_float(((const cr_bf16 *)p)[i]) : ((const float *)p)[i];
}

static inline void act_store(void *p, long i, float v, int bf16) {
    if (bf16)
        ((cr_bf16 *)p)[i] = cr_bf16_from_float(v);
    else
        ((float *)p)[i] = v;
}

/* cpu_conv.c */
cr_conv_plan *cpu_conv_plan(cr_backend *be, const cr_conv_shape *shape);
void cpu_conv_plan_free(cr_backend *be, cr_conv_plan *plan);
void cpu_conv_forward(cr_backend *be, cr_conv_plan *plan, const void *x, const float *w, void *y);
void cpu_conv_backward_data(cr_backend *be, cr_conv_plan *plan, const void *dy, const float *w,
                            void *dx);
void cpu_conv_backward_weight(cr_backend *be, cr_conv_plan *plan, const void *x, const void *dy,
                              float *dw);

/* cpu_bn.c */
void cpu_bn_sums(cr_backend *be, const void *x, long rows, int channels, const float *shift,
                 float *sums);
void cpu_bn_finalize(cr_backend *be, const float *sums, double count, int channels,
                     const float *shift, float eps, float momentum, float *mean, float *invstd,
                     float *running_mean, float *running_var);
void cpu_bn_running_stats(cr_backend *be, const float *running_mean, const float *running_var,
                          int channels, float eps, float *mean, float *invstd);
void cpu_bn_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *residual,
                  int relu, void *y);
void cpu_bn_backward_sums(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                          const void *dy, const void *dy2, int relu, float *sums);
void cpu_bn_backward_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                           const void *dy, const void *dy2, int relu, const float *sums,
                           double count, int training, void *dx, void *d_residual);

/* cpu_head.c: pooling, linear, loss, optimizer */
void cpu_avgpool_forward(cr_backend *be, const void *x, int batch, int hw, int channels, float *y);
void cpu_avgpool_backward(cr_backend *be, const float *dy, int batch, int hw, int channels,
                          void *dx);
void cpu_linear_forward(cr_backend *be, const float *x, const float *w, const float *b, int batch,
                        int in, int out, float *y);
void cpu_linear_backward(cr_backend *be, const float *x, const float *w, const float *dy, int batch,
                         int in, int out, float *dx, float *dw, float *db);
void cpu_softmax_xent(cr_backend *be, const float *logits, const int32_t *labels, int batch,
                      int classes, float grad_scale, float *dlogits, float *loss_sum,
                      int32_t *predicted);
void cpu_sgd_step(cr_backend *be, float *params, const float *grads, float *momentum_buf, size_t n,
                  const cr_sgd_args *args);
void cpu_scale(cr_backend *be, float *x, size_t n, float alpha);

#endif
