/* Convolutions through oneDNN's C API: NHWC activations, OHWI weights in the
 * parameter buffer. oneDNN's fastest kernels want blocked weight layouts, so
 * each primitive is created with "any" weights and a small reorder moves the
 * weights (a few KB to a few MB) in and the weight gradient out per call;
 * activations, the large tensors, are never reordered.
 *
 * bf16: activations and the weights going in are bf16 (the reorder in
 * rounds the float weights), accumulation is fp32 and the weight gradient
 * comes out as fp32, which oneDNN's bf16 backward-weights computes
 * directly. */
#include "cpu.h"

#include "cresnet/error.h"

#include <oneapi/dnnl/dnnl_debug.h>
#include <stdlib.h>

#define CR_DNNL(call)                                                                              \
    do {                                                                                           \
        dnnl_status_t status_ = (call);                                                            \
        if (status_ != dnnl_success)                                                               \
            CR_FAIL(CR_EXIT_INTERNAL, "oneDNN", "%s: %s", #call, dnnl_status2str(status_));        \
    } while (0)

/* A tensor whose layout oneDNN chose, plus what it takes to get there from
 * (or back to) our plain layout. */
typedef struct {
    dnnl_memory_t user;     /* our layout, handle set per call */
    dnnl_memory_t internal; /* oneDNN's layout, owns its buffer; NULL if same as user */
    dnnl_primitive_t reorder;
} conv_weights;

struct cr_conv_plan {
    cr_conv_shape shape;
    dnnl_primitive_t forward, backward_data, backward_weights;
    dnnl_memory_t x, y, dx, dy; /* activations, handles set per call */
    conv_weights w_forward, w_backward_data, dw;
};

static void dims_nhwc(dnnl_memory_desc_t *md, int n, int c, int h, int w, dnnl_data_type_t type) {
    dnnl_dims_t dims = {n, c, h, w};
    CR_DNNL(dnnl_memory_desc_init_by_tag(md, 4, dims, type, dnnl_nhwc));
}

static void dims_weights(dnnl_memory_desc_t *md, const cr_conv_shape *s, dnnl_format_tag_t tag,
                         dnnl_data_type_t type) {
    dnnl_dims_t dims = {s->out_c, s->in_c, s->kernel, s->kernel};
    CR_DNNL(dnnl_memory_desc_init_by_tag(md, 4, dims, type, tag));
}

static dnnl_memory_t memory_for(cpu_context *ctx, const dnnl_memory_desc_t *md) {
    dnnl_memory_t mem;
    CR_DNNL(dnnl_memory_create(&mem, md, ctx->engine, DNNL_MEMORY_NONE));
    return mem;
}

static dnnl_primitive_t primitive_from(dnnl_primitive_desc_t pd) {
    dnnl_primitive_t prim;
    CR_DNNL(dnnl_primitive_create(&prim, pd));
    return prim;
}

/* to_internal: user -> internal (weights going in); otherwise internal -> user
 * (weight gradients coming out). */
static conv_weights weights_for(cpu_context *ctx, const cr_conv_shape *s,
                                const dnnl_memory_desc_t *chosen, int to_internal) {
    conv_weights cw = {0};
    dnnl_memory_desc_t plain;
    dims_weights(&plain, s, dnnl_ohwi, dnnl_f32);
    cw.user = memory_for(ctx, &plain);
    if (dnnl_memory_desc_equal(&plain, chosen)) return cw;
    CR_DNNL(dnnl_memory_create(&cw.internal, chosen, ctx->engine, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t pd;
    const dnnl_memory_desc_t *src = to_internal ? &plain : chosen;
    const dnnl_memory_desc_t *dst = to_internal ? chosen : &plain;
    CR_DNNL(dnnl_reorder_primitive_desc_create(&pd, src, ctx->engine, dst, ctx->engine, NULL));
    cw.reorder = primitive_from(pd);
    CR_DNNL(dnnl_primitive_desc_destroy(pd));
    return cw;
}

static void weights_free(conv_weights *cw) {
    dnnl_memory_destroy(cw->user);
    if (cw->internal) dnnl_memory_destroy(cw->internal);
    if (cw->reorder) dnnl_primitive_destroy(cw->reorder);
}

static void run_reorder(cpu_context *ctx, dnnl_primitive_t reorder, dnnl_memory_t from,
                        dnnl_memory_t to) {
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    CR_DNNL(dnnl_primitive_execute(reorder, ctx->stream, 2, args));
}

static const dnnl_memory_desc_t *query(dnnl_primitive_desc_t pd, dnnl_query_t what) {
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

cr_conv_plan *cpu_conv_plan(cr_backend *be, const cr_conv_shape *s) {
    cpu_context *ctx = cpu_ctx(be);
    cr_conv_plan *plan = cr_calloc(1, sizeof *plan, "conv plan");
    plan->shape = *s;
    dnnl_data_type_t type = cpu_bf16(be) ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t x_md, y_md, w_any, dw_any;
    dims_nhwc(&x_md, s->batch, s->in_c, s->in_h, s->in_w, type);
    dims_nhwc(&y_md, s->batch, s->out_c, s->out_h, s->out_w, type);
    dims_weights(&w_any, s, dnnl_format_tag_any, type);
    dims_weights(&dw_any, s, dnnl_format_tag_any, dnnl_f32);
    dnnl_dims_t strides = {s->stride, s->stride}, pad = {s->pad, s->pad};

    dnnl_convolution_desc_t desc;
    dnnl_primitive_desc_t fwd_pd, bwd_data_pd, bwd_weights_pd;
    CR_DNNL(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training,
                                               dnnl_convolution_direct, &x_md, &w_any, NULL, &y_md,
                                               strides, pad, pad));
    CR_DNNL(dnnl_primitive_desc_create(&fwd_pd, &desc, NULL, ctx->engine, NULL));
    CR_DNNL(dnnl_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct, &x_md, &w_any,
                                                     &y_md, strides, pad, pad));
    CR_DNNL(dnnl_primitive_desc_create(&bwd_data_pd, &desc, NULL, ctx->engine, fwd_pd));
    CR_DNNL(dnnl_convolution_backward_weights_desc_init(&desc, dnnl_convolution_direct, &x_md,
                                                        &dw_any, NULL, &y_md, strides, pad, pad));
    CR_DNNL(dnnl_primitive_desc_create(&bwd_weights_pd, &desc, NULL, ctx->engine, fwd_pd));

    plan->forward = primitive_from(fwd_pd);
    plan->backward_data = primitive_from(bwd_data_pd);
    plan->backward_weights = primitive_from(bwd_weights_pd);
    plan->x = memory_for(ctx, &x_md);
    plan->y = memory_for(ctx, &y_md);
    plan->dx = memory_for(ctx, &x_md);
    plan->dy = memory_for(ctx, &y_md);
    plan->w_forward = weights_for(ctx, s, query(fwd_pd, dnnl_query_weights_md), 1);
    plan->w_backward_data = weights_for(ctx, s, query(bwd_data_pd, dnnl_query_weights_md), 1);
    plan->dw = weights_for(ctx, s, query(bwd_weights_pd, dnnl_query_diff_weights_md), 0);
    CR_DNNL(dnnl_primitive_desc_destroy(fwd_pd));
    CR_DNNL(dnnl_primitive_desc_destroy(bwd_data_pd));
    CR_DNNL(dnnl_primitive_desc_destroy(bwd_weights_pd));
    return plan;
}

void cpu_conv_plan_free(cr_backend *be, cr_conv_plan *plan) {
    (void)be;
    if (!plan) return;
    dnnl_primitive_destroy(plan->forward);
    dnnl_primitive_destroy(plan->backward_data);
    dnnl_primitive_destroy(plan->backward_weights);
    dnnl_memory_destroy(plan->x);
    dnnl_memory_destroy(plan->y);
    dnnl_memory_destroy(plan->dx);
    dnnl_memory_destroy(plan->dy);
    weights_free(&plan->w_forward);
    weights_free(&plan->w_backward_data);
    weights_free(&plan->dw);
    free(plan);
}

static void set_handle(dnnl_memory_t mem, const void *ptr) {
    CR_DNNL(dnnl_memory_set_data_handle(mem, (void *)ptr));
}

/* The weights as the primitive wants them: reordered, or ours as they are. */
static dnnl_memory_t weights_in(cpu_context *ctx, conv_weights *cw, const float *w) {
    set_handle(cw->user, w);
    if (!cw->internal) return cw->user;
    run_reorder(ctx, cw->reorder, cw->user, cw->internal);
    return cw->internal;
}

void cpu_conv_forward(cr_backend *be, cr_conv_plan *plan, const void *x, const float *w, void *y) {
    cpu_context *ctx = cpu_ctx(be);
    set_handle(plan->x, x);
    set_handle(plan->y, y);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, plan->x},
                              {DNNL_ARG_WEIGHTS, weights_in(ctx, &plan->w_forward, w)},
                              {DNNL_ARG_DST, plan->y}};
    CR_DNNL(dnnl_primitive_execute(plan->forward, ctx->stream, 3, args));
}

void cpu_conv_backward_data(cr_backend *be, cr_conv_plan *plan, const void *dy, const float *w,
                            void *dx) {
    cpu_context *ctx = cpu_ctx(be);
    set_handle(plan->dy, dy);
    set_handle(plan->dx, dx);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, plan->dy},
                              {DNNL_ARG_WEIGHTS, weights_in(ctx, &plan->w_backward_data, w)},
                              {DNNL_ARG_DIFF_SRC, plan->dx}};
    CR_DNNL(dnnl_primitive_execute(plan->backward_data, ctx->stream, 3, args));
}

void cpu_conv_backward_weight(cr_backend *be, cr_conv_plan *plan, const void *x, const void *dy,
                              float *dw) {
    cpu_context *ctx = cpu_ctx(be);
    set_handle(plan->x, x);
    set_handle(plan->dy, dy);
    set_handle(plan->dw.user, dw);
    dnnl_memory_t target = plan->dw.internal ? plan->dw.internal : plan->dw.user;
    dnnl_exec_arg_t args[] = {
        {DNNL_ARG_SRC, plan->x}, {DNNL_ARG_DIFF_DST, plan->dy}, {DNNL_ARG_DIFF_WEIGHTS, target}};
    CR_DNNL(dnnl_primitive_execute(plan->backward_weights, ctx->stream, 3, args));
    if (plan->dw.internal) run_reorder(ctx, plan->dw.reorder, plan->dw.internal, plan->dw.user);
}
