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

/* cpu_conv.c */
cr_conv_plan *cpu_conv_plan(cr_backend *be, const cr_conv_shape *shape);
void cpu_conv_plan_free(cr_backend *be, cr_conv_plan *plan);
void cpu_conv_forward(cr_backend *be, cr_conv_plan *plan, const float *x, const float *w, float *y);
void cpu_conv_backward_data(cr_backend *be, cr_conv_plan *plan, const float *dy, const float *w,
                            float *dx);
void cpu_conv_backward_weight(cr_backend *be, cr_conv_plan *plan, const float *x, const float *dy,
                              float *dw);

/* cpu_bn.c */
void cpu_bn_sums(cr_backend *be, const float *x, long rows, int channels, const float *shift,
                 float *sums);
void cpu_bn_finalize(cr_backend *be, const float *sums, double count, int channels,
                     const float *shift, float eps, float momentum, float *mean, float *invstd,
                     float *running_mean, float *running_var);
void cpu_bn_running_stats(cr_backend *be, const float *running_mean, const float *running_var,
                          int channels, float eps, float *mean, float *invstd);
void cpu_bn_apply(cr_backend *be, const cr_bn_view *bn, const float *x, const float *residual,
                  int relu, float *y);
void cpu_bn_backward_sums(cr_backend *be, const cr_bn_view *bn, const float *x, const float *y,
                          const float *dy, const float *dy2, int relu, float *sums);
void cpu_bn_backward_apply(cr_backend *be, const cr_bn_view *bn, const float *x, const float *y,
                           const float *dy, const float *dy2, int relu, const float *sums,
                           double count, int training, float *dx, float *d_residual);

/* cpu_head.c: pooling, linear, loss, optimizer */
void cpu_avgpool_forward(cr_backend *be, const float *x, int batch, int hw, int channels, float *y);
void cpu_avgpool_backward(cr_backend *be, const float *dy, int batch, int hw, int channels,
                          float *dx);
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
