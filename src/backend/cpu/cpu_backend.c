#define _POSIX_C_SOURCE 200112L /* posix_memalign */
/* The CPU backend's table: host memory, oneDNN for convolutions, OpenMP for
 * everything else. oneDNN (Debian's build) runs on the same OpenMP runtime,
 * so one thread count governs both and they never oversubscribe the cores. */
#include "cpu.h"

#include "cresnet/error.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *cpu_alloc(cr_backend *be, size_t bytes) {
    (void)be;
    void *ptr = NULL;
    /* 64-byte alignment: one AVX-512 vector, one cache line. */
    size_t rounded = (bytes + 63) / 64 * 64;
    if (posix_memalign(&ptr, 64, rounded ? rounded : 64) != 0)
        cr_fatal(CR_EXIT_INTERNAL, "cpu backend", "out of memory allocating %zu bytes", bytes);
    return ptr;
}

static void cpu_free(cr_backend *be, void *ptr) {
    (void)be;
    free(ptr);
}

static void cpu_zero(cr_backend *be, void *ptr, size_t bytes) {
    (void)be;
    memset(ptr, 0, bytes);
}

static void cpu_copy(cr_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    memmove(dst, src, bytes);
}

static void cpu_synchronize(cr_backend *be) { (void)be; }

/* The expression of cr_augment_image, so both paths give the same bits. */
static void cpu_augment_batch(cr_backend *be, const uint8_t *pixels,
                              const cr_image_transform *transforms, int n, const float mean[3],
                              const float std[3], float *images) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const cr_image_transform *t = &transforms[i];
        const uint8_t *planes = pixels + (size_t)t->sample * 3072;
        float *out = images + (size_t)i * 3072;
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                int src = cr_image_transform_source(t, x, y);
                for (int c = 0; c < 3; c++) {
                    float v = src < 0 ? 0.0f : (float)planes[c * 1024 + src];
                    out[(y * 32 + x) * 3 + c] = (v / 255.0f - mean[c]) / std[c];
                }
            }
    }
}

/* The processor's model name from /proc/cpuinfo (Linux), and the threads. */
static void cpu_describe(cr_backend *be, char *out, size_t len) {
    (void)be;
    char line[512], model[256] = "CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        snprintf(model, sizeof model, "%s", colon + 2);
        model[strcspn(model, "\n")] = '\0';
        break;
    }
    if (f) fclose(f);
    int threads = omp_get_max_threads();
    snprintf(out, len, "%s, %d thread%s", model, threads, threads == 1 ? "" : "s");
}

static void cpu_destroy(cr_backend *be) {
    cpu_context *ctx = cpu_ctx(be);
    dnnl_stream_destroy(ctx->stream);
    dnnl_engine_destroy(ctx->engine);
    free(ctx);
    free(be);
}

static void cpu_to_activations(cr_backend *be, const float *x, size_t n, void *y) {
    const int bf16 = cpu_bf16(be);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) act_store(y, i, x[i], bf16);
}

static const cr_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .copy_to_device = cpu_copy,
    .copy_to_host = cpu_copy,
    .synchronize = cpu_synchronize,
    .describe = cpu_describe,
    .augment_batch = cpu_augment_batch,
    .conv_plan = cpu_conv_plan,
    .conv_plan_free = cpu_conv_plan_free,
    .conv_forward = cpu_conv_forward,
    .conv_backward_data = cpu_conv_backward_data,
    .conv_backward_weight = cpu_conv_backward_weight,
    .bn_sums = cpu_bn_sums,
    .bn_finalize = cpu_bn_finalize,
    .bn_running_stats = cpu_bn_running_stats,
    .bn_apply = cpu_bn_apply,
    .bn_backward_sums = cpu_bn_backward_sums,
    .bn_backward_apply = cpu_bn_backward_apply,
    .avgpool_forward = cpu_avgpool_forward,
    .avgpool_backward = cpu_avgpool_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .softmax_xent = cpu_softmax_xent,
    .sgd_step = cpu_sgd_step,
    .scale = cpu_scale,
    .to_activations = cpu_to_activations,
};

/* Whether oneDNN has a bf16 convolution for this processor (it needs
 * AVX-512 at least): asked with a small one. */
static int bf16_convolutions_available(dnnl_engine_t engine) {
    dnnl_dims_t x_dims = {1, 16, 8, 8}, w_dims = {16, 16, 3, 3}, strides = {1, 1}, pad = {1, 1};
    dnnl_memory_desc_t x_md, w_md;
    dnnl_convolution_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_memory_desc_init_by_tag(&x_md, 4, x_dims, dnnl_bf16, dnnl_nhwc) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&w_md, 4, w_dims, dnnl_bf16, dnnl_format_tag_any) !=
            dnnl_success ||
        dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training, dnnl_convolution_direct,
                                           &x_md, &w_md, NULL, &x_md, strides, pad,
                                           pad) != dnnl_success)
        return 0;
    int ok = dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    return ok;
}

int cr_backend_cpu_supports(cr_math math) {
    if (math != CR_MATH_BF16) return math == CR_MATH_FP32;
    dnnl_engine_t engine;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return 0;
    int ok = bf16_convolutions_available(engine);
    dnnl_engine_destroy(engine);
    return ok;
}

cr_backend *cr_backend_cpu_create(int num_threads, cr_math math) {
    if (math == CR_MATH_TF32)
        cr_fatal(CR_EXIT_USAGE, "train.precision",
                 "tf32 is a GPU's tensor-core format; the CPU backend computes fp32 or bf16");
    cpu_context *ctx = cr_calloc(1, sizeof *ctx, "cpu backend");
    if (num_threads > 0) omp_set_num_threads(num_threads);
    ctx->num_threads = omp_get_max_threads();
    if (dnnl_engine_create(&ctx->engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&ctx->stream, ctx->engine, dnnl_stream_default_flags) != dnnl_success)
        cr_fatal(CR_EXIT_INTERNAL, "cpu backend", "cannot create a oneDNN CPU engine");
    if (math == CR_MATH_BF16 && !bf16_convolutions_available(ctx->engine))
        cr_fatal(CR_EXIT_USAGE, "train.precision",
                 "bf16 on the CPU needs oneDNN's bf16 convolutions, which this processor lacks "
                 "(AVX-512 or later); use fp32");
    cr_backend *be = cr_calloc(1, sizeof *be, "cpu backend");
    be->ops = &cpu_ops;
    be->context = ctx;
    be->math = math;
    return be;
}
