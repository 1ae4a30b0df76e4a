/* The CUDA backend against the CPU backend (itself tested against plain
 * references in test_cpu_ops.c): every op on the same random inputs, the
 * batch augmentation bit for bit, then one whole training step of each
 * model on each backend; the same for TF32 and bf16 math with wider bounds.
 *
 * Each op is fed the CPU backend's inputs (statistics, sums, ReLU outputs),
 * so an error shows in the op that makes it rather than in the ones after.
 * Tolerance: relative L2 error 1e-4 per op (fp32; the backends add in
 * different orders, and the GPU contracts a*b+c into one rounding).
 *
 * bf16: activations go in rounded to bf16 (the CPU reference gets the same
 * rounded values), come out as bf16 and are held to 2e-2 against the fp32
 * CPU backend, as the CUDA issue asks.
 *
 * Without a CUDA device (or driver) it prints "SKIPPED: no CUDA device" and
 * passes. test_cuda_ops_cpu_standin builds this file with a CPU backend in
 * the GPU's place (backend/cpu_standin.h), which checks the test itself. */
#ifndef _POSIX_C_SOURCE         /* cpu_standin.h, forced in first, sets it too */
#define _POSIX_C_SOURCE 200809L /* setenv: the 16-byte BN kernels are opt-in */
#endif
#include "check.h"
#include "cresnet/backend.h"
#include "cresnet/data.h"
#include "cresnet/error.h"
#include "cresnet/model.h"

#include <stdlib.h>
#include <string.h>

#define OP_TOL 1e-4

/* The GPU backend under test beside the CPU reference: fp32, held to
 * OP_TOL, or TF32 (inputs of convolutions and GEMMs rounded to 10 mantissa
 * bits, ~5e-4 relative each), held to TF32_TOL on those ops, or bf16
 * (activations stored with 8 mantissa bits), held to BF16_TOL on every op
 * that writes activations. */
typedef struct {
    cr_backend *cpu, *gpu;
    double tol;        /* convolutions and GEMMs */
    double step_scale; /* widens the whole-step bounds */
    const char *label;
    double act_tol; /* the other ops whose outputs are activations */
    double nudge;   /* relative change of the images that measures a step's conditioning */
} backends;

#define TF32_TOL 1e-2
#define BF16_TOL 2e-2
#define BF16_STEP_SCALE 10.0
/* test_model_step's image nudges (relative, random signs): fp32's is the
 * size of the two backends' rounding differences; TF32's and bf16's are
 * their rounding (2^-11, 2^-8). */
#define FP32_NUDGE 1e-6
#define TF32_NUDGE 4.8828125e-4
#define BF16_NUDGE 3.90625e-3
#define NUDGES 6               /* nudged CPU steps, each with its own signs */
#define NUDGE_BOUND_FACTOR 2.0 /* times the CPU's own largest move under them */
#define STEP_BOUND_CAP 0.4     /* no tensor's bound reaches a halved or doubled tensor's */

static float *floats(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static float *random_floats(size_t n, float scale, uint32_t object) {
    float *x = floats(n);
    fill_random(x, n, scale, object);
    return x;
}

static void *upload(cr_backend *gpu, const void *host, size_t bytes) {
    void *dev = gpu->ops->alloc(gpu, bytes);
    gpu->ops->copy_to_device(gpu, dev, host, bytes);
    return dev;
}

static float *upload_floats(cr_backend *gpu, const float *host, size_t n) {
    return upload(gpu, host, n * sizeof(float));
}

static float *download(cr_backend *gpu, const float *dev, size_t n) {
    float *host = floats(n);
    gpu->ops->copy_to_host(gpu, host, dev, n * sizeof(float));
    return host;
}

/* Host floats of a value no op produces by accident, for device outputs:
 * they must be overwritten, never accumulated into. */
static float *junk_floats(size_t n) {
    float *host = floats(n);
    for (size_t i = 0; i < n; i++) host[i] = 7.25f;
    return host;
}

static float *garbage(cr_backend *gpu, size_t n) {
    float *host = junk_floats(n);
    float *dev = upload_floats(gpu, host, n);
    free(host);
    return dev;
}

/* ---- activations: floats, or bf16 in a bf16 backend ---- */

static int holds_bf16(const cr_backend *be) { return cr_activation_bytes(be) == 2; }

/* What the GPU will see of these values: rounded to bf16 in a bf16
 * backend, so that the CPU reference computes on the same inputs. */
static void round_like(const cr_backend *gpu, float *x, size_t n) {
    if (!holds_bf16(gpu)) return;
    for (size_t i = 0; i < n; i++) x[i] = cr_bf16_to_float(cr_bf16_from_float(x[i]));
}

/* n activation values from host floats, at `dev` or in new device memory. */
static void *store_activations(cr_backend *gpu, void *dev, const float *host, size_t n) {
    size_t bytes = n * (size_t)cr_activation_bytes(gpu);
    if (!dev) dev = gpu->ops->alloc(gpu, bytes);
    if (!holds_bf16(gpu)) {
        gpu->ops->copy_to_device(gpu, dev, host, bytes);
        return dev;
    }
    cr_bf16 *half = calloc(n ? n : 1, sizeof *half);
    for (size_t i = 0; i < n; i++) half[i] = cr_bf16_from_float(host[i]);
    gpu->ops->copy_to_device(gpu, dev, half, bytes);
    free(half);
    return dev;
}

static void *upload_activations(cr_backend *gpu, const float *host, size_t n) {
    return store_activations(gpu, NULL, host, n);
}

static float *download_activations(cr_backend *gpu, const void *dev, size_t n) {
    float *host = floats(n);
    if (!holds_bf16(gpu)) {
        gpu->ops->copy_to_host(gpu, host, dev, n * sizeof(float));
        return host;
    }
    cr_bf16 *half = calloc(n ? n : 1, sizeof *half);
    gpu->ops->copy_to_host(gpu, half, dev, n * sizeof *half);
    for (size_t i = 0; i < n; i++) host[i] = cr_bf16_to_float(half[i]);
    free(half);
    return host;
}

static void *garbage_activations(cr_backend *gpu, size_t n) {
    float *host = junk_floats(n);
    void *dev = upload_activations(gpu, host, n);
    free(host);
    return dev;
}

/* The device result against the host reference. */
static void expect_close(cr_backend *gpu, const float *dev, const float *ref, size_t n, double tol,
                         const char *what) {
    float *got = download(gpu, dev, n);
    double err = relative_l2(got, ref, n);
    CHECK(err <= tol, "%s: relative error %g (tol %g)", what, err, tol);
    free(got);
}

static void expect_close_activations(cr_backend *gpu, const void *dev, const float *ref, size_t n,
                                     double tol, const char *what) {
    float *got = download_activations(gpu, dev, n);
    double err = relative_l2(got, ref, n);
    CHECK(err <= tol, "%s: relative error %g (tol %g)", what, err, tol);
    free(got);
}

/* ---- memory ---- */

static void test_memory(const backends *b) {
    cr_backend *gpu = b->gpu;
    const size_t n = 1000;
    float *host = random_floats(n, 1.0f, 60), *back = floats(n);
    float *dev = upload_floats(gpu, host, n), *other = gpu->ops->alloc(gpu, n * sizeof(float));
    gpu->ops->copy(gpu, other, dev, n * sizeof(float));
    gpu->ops->zero(gpu, other, 10 * sizeof(float));
    gpu->ops->copy_to_host(gpu, back, other, n * sizeof(float));
    int same = 1;
    for (size_t i = 0; i < n; i++) same &= back[i] == (i < 10 ? 0.0f : host[i]);
    CHECK(same, "copy, zero and copy_to_host round trip");
    gpu->ops->synchronize(gpu);
    gpu->ops->free(gpu, dev);
    gpu->ops->free(gpu, other);
    free(host), free(back);
}

/* ---- convolution ---- */

/* Device buffer of `bytes` whose pointer is 16-byte aligned, or, when
 * misaligned, 4 bytes past that (a tensor at an odd offset in a flat
 * buffer); *base is what to free. */
static void *device_view(cr_backend *gpu, size_t bytes, int misaligned, void **base) {
    *base = gpu->ops->alloc(gpu, bytes + 4);
    return (char *)*base + (misaligned ? 4 : 0);
}

static void test_conv(const backends *b, cr_conv_shape s, int misaligned) {
    cr_backend *cpu = b->cpu, *gpu = b->gpu;
    size_t nx = (size_t)s.batch * s.in_h * s.in_w * s.in_c;
    size_t ny = (size_t)s.batch * s.out_h * s.out_w * s.out_c;
    size_t nw = (size_t)s.out_c * s.kernel * s.kernel * s.in_c;
    float *x = random_floats(nx, 1.0f, 1), *w = random_floats(nw, 0.5f, 2);
    float *dy = random_floats(ny, 1.0f, 3);
    float *y = floats(ny), *dx = floats(nx), *dw = floats(nw);
    round_like(gpu, x, nx);
    round_like(gpu, dy, ny);
    cr_conv_plan *plan = cpu->ops->conv_plan(cpu, &s);
    cpu->ops->conv_forward(cpu, plan, x, w, y);
    cpu->ops->conv_backward_data(cpu, plan, dy, w, dx);
    cpu->ops->conv_backward_weight(cpu, plan, x, dy, dw);
    cpu->ops->conv_plan_free(cpu, plan);

    void *bases[6];
    const size_t act = (size_t)cr_activation_bytes(gpu);
    void *d_x = device_view(gpu, nx * act, misaligned, &bases[0]);
    float *d_w = device_view(gpu, nw * sizeof(float), misaligned, &bases[1]);
    void *d_dy = device_view(gpu, ny * act, misaligned, &bases[2]);
    void *d_y = device_view(gpu, ny * act, misaligned, &bases[3]);
    void *d_dx = device_view(gpu, nx * act, misaligned, &bases[4]);
    float *d_dw = device_view(gpu, nw * sizeof(float), misaligned, &bases[5]);
    store_activations(gpu, d_x, x, nx);
    gpu->ops->copy_to_device(gpu, d_w, w, nw * sizeof(float));
    store_activations(gpu, d_dy, dy, ny);
    float *junk = garbage(gpu, nx > nw ? (nx > ny ? nx : ny) : (nw > ny ? nw : ny));
    gpu->ops->copy(gpu, d_y, junk, ny * act);
    gpu->ops->copy(gpu, d_dx, junk, nx * act);
    gpu->ops->copy(gpu, d_dw, junk, nw * sizeof(float));

    plan = gpu->ops->conv_plan(gpu, &s);
    gpu->ops->conv_forward(gpu, plan, d_x, d_w, d_y);
    gpu->ops->conv_backward_data(gpu, plan, d_dy, d_w, d_dx);
    gpu->ops->conv_backward_weight(gpu, plan, d_x, d_dy, d_dw);
    gpu->ops->conv_plan_free(gpu, plan);

    char what[160];
    snprintf(what, sizeof what, "%sconv %dx%d s%d %d->%d on %dx%d batch %d%s", b->label, s.kernel,
             s.kernel, s.stride, s.in_c, s.out_c, s.in_h, s.in_w, s.batch,
             misaligned ? " (4-byte aligned)" : "");
    char part[200];
    snprintf(part, sizeof part, "%s forward", what);
    expect_close_activations(gpu, d_y, y, ny, b->tol, part);
    snprintf(part, sizeof part, "%s backward-data", what);
    expect_close_activations(gpu, d_dx, dx, nx, b->tol, part);
    snprintf(part, sizeof part, "%s backward-weight", what);
    expect_close(gpu, d_dw, dw, nw, b->tol, part);

    for (int i = 0; i < 6; i++) gpu->ops->free(gpu, bases[i]);
    gpu->ops->free(gpu, junk);
    free(x), free(w), free(dy), free(y), free(dx), free(dw);
}

/* ---- BatchNorm ---- */

typedef struct {
    long rows;
    int C, relu, with_residual, training;
    float offset;     /* added to x: its mean */
    int misaligned_y; /* y one element into its buffer: no 16-byte vector loads */
} bn_params;

static void test_bn(const backends *b, bn_params p) {
    cr_backend *cpu = b->cpu, *gpu = b->gpu;
    const long rows = p.rows;
    const int C = p.C;
    const size_t n = (size_t)rows * C;
    char what[128], part[192];
    snprintf(what, sizeof what, "%sbn rows=%ld C=%d relu=%d residual=%d training=%d mean=%g%s",
             b->label, rows, C, p.relu, p.with_residual, p.training, p.offset,
             p.misaligned_y ? " misaligned y" : "");

    float *x = random_floats(n, 2.0f, 10);
    /* A mean far from 0 tests the shift forward and the centring backward. */
    for (size_t i = 0; i < n; i++) x[i] += p.offset;
    float *residual = p.with_residual ? random_floats(n, 1.0f, 11) : NULL;
    float *gamma = random_floats(C, 0.5f, 12), *beta = random_floats(C, 0.5f, 13);
    float *rm = random_floats(C, 1.0f, 14), *rv = floats(C);
    for (int c = 0; c < C; c++) {
        gamma[c] += 1.0f;
        rv[c] = 1.5f + beta[c];
    }
    float *dy_a = random_floats(n, 1.0f, 15), *dy_b = random_floats(n, 1.0f, 16);
    round_like(gpu, x, n);
    if (residual) round_like(gpu, residual, n);
    round_like(gpu, dy_a, n);
    round_like(gpu, dy_b, n);

    void *d_x = upload_activations(gpu, x, n),
         *d_res = residual ? upload_activations(gpu, residual, n) : NULL;
    float *d_gamma = upload_floats(gpu, gamma, C), *d_beta = upload_floats(gpu, beta, C);
    float *d_rm = upload_floats(gpu, rm, C), *d_rv = upload_floats(gpu, rv, C);

    /* Statistics: the CPU's, then the GPU's from the same inputs. */
    float *sums = floats(2 * C), *stats = floats(2 * C);
    float *d_sums = garbage(gpu, 2 * C), *d_stats = garbage(gpu, 2 * C);
    if (p.training) {
        cpu->ops->bn_sums(cpu, x, rows, C, rm, sums);
        gpu->ops->bn_sums(gpu, d_x, rows, C, d_rm, d_sums);
        snprintf(part, sizeof part, "%s: bn_sums", what);
        expect_close(gpu, d_sums, sums, 2 * C, OP_TOL, part);
        /* Deterministic: a second run gives the same bits. */
        float *again = garbage(gpu, 2 * C);
        gpu->ops->bn_sums(gpu, d_x, rows, C, d_rm, again);
        float *h1 = download(gpu, d_sums, 2 * C), *h2 = download(gpu, again, 2 * C);
        CHECK(memcmp(h1, h2, 2 * C * sizeof(float)) == 0, "%s: bn_sums not deterministic", what);
        free(h1), free(h2);
        gpu->ops->free(gpu, again);

        /* Finalize from the CPU's sums, shift = running mean, which it updates
         * (the model passes the same pointer twice). */
        gpu->ops->copy_to_device(gpu, d_sums, sums, 2 * C * sizeof(float));
        cpu->ops->bn_finalize(cpu, sums, (double)rows, C, rm, 1e-5f, 0.1f, stats, stats + C, rm,
                              rv);
        gpu->ops->bn_finalize(gpu, d_sums, (double)rows, C, d_rm, 1e-5f, 0.1f, d_stats, d_stats + C,
                              d_rm, d_rv);
        snprintf(part, sizeof part, "%s: bn_finalize mean, invstd", what);
        expect_close(gpu, d_stats, stats, 2 * C, 1e-6, part);
        snprintf(part, sizeof part, "%s: bn_finalize running mean", what);
        expect_close(gpu, d_rm, rm, C, 1e-6, part);
        snprintf(part, sizeof part, "%s: bn_finalize running var", what);
        expect_close(gpu, d_rv, rv, C, 1e-6, part);
    } else {
        cpu->ops->bn_running_stats(cpu, rm, rv, C, 1e-5f, stats, stats + C);
        gpu->ops->bn_running_stats(gpu, d_rm, d_rv, C, 1e-5f, d_stats, d_stats + C);
        snprintf(part, sizeof part, "%s: bn_running_stats", what);
        expect_close(gpu, d_stats, stats, 2 * C, 1e-6, part);
    }
    gpu->ops->copy_to_device(gpu, d_stats, stats, 2 * C * sizeof(float));

    /* Apply. */
    cr_bn_view view = {rows, C, stats, stats + C, gamma, beta};
    cr_bn_view d_view = {rows, C, d_stats, d_stats + C, d_gamma, d_beta};
    float *y = floats(n);
    void *d_y_base = garbage_activations(gpu, n + 1);
    void *d_y = (char *)d_y_base + (p.misaligned_y ? (holds_bf16(gpu) ? 2 : 4) : 0);
    cpu->ops->bn_apply(cpu, &view, x, residual, p.relu, y);
    gpu->ops->bn_apply(gpu, &d_view, d_x, d_res, p.relu, d_y);
    snprintf(part, sizeof part, "%s: bn_apply", what);
    expect_close_activations(gpu, d_y, y, n, b->act_tol, part);
    /* The same y on both sides (so the same ReLU mask). */
    round_like(gpu, y, n);
    store_activations(gpu, d_y, y, n);

    /* Backward sums: dy in two halves. */
    void *d_dy_a = upload_activations(gpu, dy_a, n), *d_dy_b = upload_activations(gpu, dy_b, n);
    float *grads = floats(2 * C), *d_grads = garbage(gpu, 2 * C);
    cpu->ops->bn_backward_sums(cpu, &view, x, y, dy_a, dy_b, p.relu, grads);
    gpu->ops->bn_backward_sums(gpu, &d_view, d_x, d_y, d_dy_a, d_dy_b, p.relu, d_grads);
    snprintf(part, sizeof part, "%s: bn_backward_sums", what);
    expect_close(gpu, d_grads, grads, 2 * C, OP_TOL, part);
    gpu->ops->copy_to_device(gpu, d_grads, grads, 2 * C * sizeof(float));

    /* Backward apply. With a residual, the GPU writes dx over dy and the
     * residual's gradient over dy2, as the model does. */
    float *dx = floats(n), *dres = floats(n);
    cpu->ops->bn_backward_apply(cpu, &view, x, y, dy_a, dy_b, p.relu, grads, (double)rows,
                                p.training, dx, dres);
    void *d_dx = p.with_residual ? d_dy_a : garbage_activations(gpu, n);
    void *d_dres = p.with_residual ? d_dy_b : garbage_activations(gpu, n);
    gpu->ops->bn_backward_apply(gpu, &d_view, d_x, d_y, d_dy_a, d_dy_b, p.relu, d_grads,
                                (double)rows, p.training, d_dx, d_dres);
    snprintf(part, sizeof part, "%s: bn_backward_apply dx", what);
    expect_close_activations(gpu, d_dx, dx, n, b->act_tol, part);
    snprintf(part, sizeof part, "%s: bn_backward_apply d_residual", what);
    expect_close_activations(gpu, d_dres, dres, n, b->act_tol, part);

    if (!p.with_residual) {
        gpu->ops->free(gpu, d_dx);
        gpu->ops->free(gpu, d_dres);
    }
    void *device[] = {d_x,    d_res,   d_gamma,  d_beta, d_rm,   d_rv,
                      d_sums, d_stats, d_y_base, d_dy_a, d_dy_b, d_grads};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        if (device[i]) gpu->ops->free(gpu, device[i]);
    free(x), free(residual), free(gamma), free(beta), free(rm), free(rv), free(dy_a), free(dy_b);
    free(sums), free(stats), free(y), free(grads), free(dx), free(dres);
}

/* The worked example of test_cpu_ops.c, on the GPU: exact values. */
static void test_running_stats(const backends *b) {
    cr_backend *gpu = b->gpu;
    float x[4] = {1, 2, 3, 4}, rm[1] = {0.5f}, rv[1] = {2.0f}, out[6];
    float *d_x = upload_floats(gpu, x, 4), *d_rm = upload_floats(gpu, rm, 1);
    float *d_rv = upload_floats(gpu, rv, 1), *d_sums = garbage(gpu, 2), *d_stats = garbage(gpu, 2);
    gpu->ops->bn_sums(gpu, d_x, 4, 1, d_rm, d_sums);
    gpu->ops->bn_finalize(gpu, d_sums, 4.0, 1, d_rm, 1e-5f, 0.1f, d_stats, d_stats + 1, d_rm, d_rv);
    gpu->ops->copy_to_host(gpu, out, d_stats, 2 * sizeof(float));
    gpu->ops->copy_to_host(gpu, out + 2, d_rm, sizeof(float));
    gpu->ops->copy_to_host(gpu, out + 3, d_rv, sizeof(float));
    CHECK_CLOSE(out[0], 2.5, 1e-7, 1e-7, "gpu batch mean");
    CHECK_CLOSE(out[1], 1.0 / sqrt(1.25 + 1e-5), 1e-6, 1e-7, "gpu batch invstd");
    CHECK_CLOSE(out[2], 0.9 * 0.5 + 0.1 * 2.5, 1e-7, 1e-7, "gpu running mean");
    CHECK_CLOSE(out[3], 0.9 * 2.0 + 0.1 * 5.0 / 3.0, 1e-7, 1e-7, "gpu running var (unbiased)");
    float *device[] = {d_x, d_rm, d_rv, d_sums, d_stats};
    for (int i = 0; i < 5; i++) gpu->ops->free(gpu, device[i]);
}

/* ---- head ---- */

static void test_avgpool(const backends *b) {
    cr_backend *cpu = b->cpu, *gpu = b->gpu;
    const int batch = 5, hw = 64, C = 48;
    size_t nx = (size_t)batch * hw * C, ny = (size_t)batch * C;
    float *x = random_floats(nx, 1.0f, 20), *dy = random_floats(ny, 1.0f, 21);
    float *y = floats(ny), *dx = floats(nx);
    round_like(gpu, x, nx);
    cpu->ops->avgpool_forward(cpu, x, batch, hw, C, y);
    cpu->ops->avgpool_backward(cpu, dy, batch, hw, C, dx);
    void *d_x = upload_activations(gpu, x, nx);
    float *d_dy = upload_floats(gpu, dy, ny), *d_y = garbage(gpu, ny);
    void *d_dx = garbage_activations(gpu, nx);
    gpu->ops->avgpool_forward(gpu, d_x, batch, hw, C, d_y);
    gpu->ops->avgpool_backward(gpu, d_dy, batch, hw, C, d_dx);
    char what[96];
    snprintf(what, sizeof what, "%savgpool forward", b->label);
    expect_close(gpu, d_y, y, ny, OP_TOL, what);
    snprintf(what, sizeof what, "%savgpool backward", b->label);
    expect_close_activations(gpu, d_dx, dx, nx, b->act_tol, what);
    gpu->ops->free(gpu, d_x), gpu->ops->free(gpu, d_dy), gpu->ops->free(gpu, d_y);
    gpu->ops->free(gpu, d_dx);
    free(x), free(dy), free(y), free(dx);
}

static void test_linear(const backends *b) {
    cr_backend *cpu = b->cpu, *gpu = b->gpu;
    const int batch = 37, in = 64, out = 10;
    size_t nx = (size_t)batch * in, nw = (size_t)out * in, ny = (size_t)batch * out;
    float *x = random_floats(nx, 1.0f, 30), *w = random_floats(nw, 1.0f, 31);
    float *bias = random_floats(out, 1.0f, 32), *dy = random_floats(ny, 1.0f, 33);
    float *y = floats(ny), *dx = floats(nx), *dw = floats(nw), *db = floats(out);
    cpu->ops->linear_forward(cpu, x, w, bias, batch, in, out, y);
    cpu->ops->linear_backward(cpu, x, w, dy, batch, in, out, dx, dw, db);

    float *d_x = upload_floats(gpu, x, nx), *d_w = upload_floats(gpu, w, nw);
    float *d_b = upload_floats(gpu, bias, out), *d_dy = upload_floats(gpu, dy, ny);
    float *d_y = garbage(gpu, ny), *d_dx = garbage(gpu, nx), *d_dw = garbage(gpu, nw);
    float *d_db = garbage(gpu, out);
    gpu->ops->linear_forward(gpu, d_x, d_w, d_b, batch, in, out, d_y);
    gpu->ops->linear_backward(gpu, d_x, d_w, d_dy, batch, in, out, d_dx, d_dw, d_db);
    char what[64];
    snprintf(what, sizeof what, "%slinear forward", b->label);
    expect_close(gpu, d_y, y, ny, b->tol, what);
    snprintf(what, sizeof what, "%slinear dx", b->label);
    expect_close(gpu, d_dx, dx, nx, b->tol, what);
    snprintf(what, sizeof what, "%slinear dw", b->label);
    expect_close(gpu, d_dw, dw, nw, b->tol, what);
    expect_close(gpu, d_db, db, out, OP_TOL, "linear db");
    /* dx NULL: the first layer's input needs no gradient. */
    gpu->ops->copy_to_device(gpu, d_dw, dx, nw * sizeof(float)); /* anything but dw */
    gpu->ops->linear_backward(gpu, d_x, d_w, d_dy, batch, in, out, NULL, d_dw, d_db);
    expect_close(gpu, d_dw, dw, nw, b->tol, "linear dw (dx NULL)");
    float *device[] = {d_x, d_w, d_b, d_dy, d_y, d_dx, d_dw, d_db};
    for (int i = 0; i < 8; i++) gpu->ops->free(gpu, device[i]);
    free(x), free(w), free(bias), free(dy), free(y), free(dx), free(dw), free(db);
}

static void test_softmax_xent(const backends *b) {
    cr_backend *cpu = b->cpu, *gpu = b->gpu;
    const int batch = 300, classes = 10; /* more samples than the kernel's threads */
    size_t n = (size_t)batch * classes;
    float *logits = random_floats(n, 4.0f, 40), *dlogits = floats(n), loss[2], d_loss_host[2];
    logits[2 * classes + 9] = 30.0f; /* a confident prediction */
    int32_t *labels = malloc(batch * sizeof(int32_t)), *predicted = malloc(batch * sizeof(int32_t));
    int32_t *d_predicted_host = malloc(batch * sizeof(int32_t));
    for (int i = 0; i < batch; i++) labels[i] = (int32_t)(cr_rng_u32(99, 41, i) % classes);
    cpu->ops->softmax_xent(cpu, logits, labels, batch, classes, 0.5f, dlogits, loss, predicted);

    float *d_logits = upload_floats(gpu, logits, n), *d_dlogits = garbage(gpu, n);
    int32_t *d_labels = upload(gpu, labels, batch * sizeof(int32_t));
    int32_t *d_predicted = gpu->ops->alloc(gpu, batch * sizeof(int32_t));
    float *d_loss = garbage(gpu, 2);
    gpu->ops->softmax_xent(gpu, d_logits, d_labels, batch, classes, 0.5f, d_dlogits, d_loss,
                           d_predicted);
    gpu->ops->copy_to_host(gpu, d_loss_host, d_loss, sizeof d_loss_host);
    gpu->ops->copy_to_host(gpu, d_predicted_host, d_predicted, batch * sizeof(int32_t));
    CHECK_CLOSE(d_loss_host[0], loss[0], 1e-6, 1e-6, "cross-entropy sum");
    CHECK(d_loss_host[1] == loss[1] && loss[1] > 0, "correct count %g (cpu %g)", d_loss_host[1],
          loss[1]);
    CHECK(memcmp(d_predicted_host, predicted, batch * sizeof(int32_t)) == 0, "argmax differs");
    expect_close(gpu, d_dlogits, dlogits, n, OP_TOL, "cross-entropy gradient");
    /* Without a gradient (evaluation). */
    gpu->ops->softmax_xent(gpu, d_logits, d_labels, batch, classes, 0.0f, NULL, d_loss,
                           d_predicted);
    gpu->ops->copy_to_host(gpu, d_loss_host, d_loss, sizeof d_loss_host);
    CHECK_CLOSE(d_loss_host[0], loss[0], 1e-6, 1e-6, "cross-entropy sum (no gradient)");
    gpu->ops->free(gpu, d_logits), gpu->ops->free(gpu, d_dlogits), gpu->ops->free(gpu, d_labels);
    gpu->ops->free(gpu, d_predicted), gpu->ops->free(gpu, d_loss);
    free(logits), free(dlogits), free(labels), free(predicted), free(d_predicted_host);
}

/* ---- optimizer ---- */

static void test_sgd(const backends *b) {
    cr_backend *cpu = b->cpu, *gpu = b->gpu;
    const cr_sgd_args cases[] = {
        {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f},
        {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = 1},
        {.lr = 0.05f, .momentum = 0.9f, .dampening = 0.1f, .weight_decay = 5e-4f},
        {.lr = 0.2f},
    };
    const size_t n = 10007;
    for (int k = 0; k < 4; k++) {
        float *p = random_floats(n, 1.0f, 50), *g = random_floats(n, 1.0f, 51);
        float *m = random_floats(n, 1.0f, 52);
        float *d_p = upload_floats(gpu, p, n), *d_g = upload_floats(gpu, g, n);
        float *d_m = upload_floats(gpu, m, n);
        cpu->ops->sgd_step(cpu, p, g, m, n, &cases[k]);
        gpu->ops->sgd_step(gpu, d_p, d_g, d_m, n, &cases[k]);
        char what[64];
        snprintf(what, sizeof what, "sgd case %d parameters", k);
        expect_close(gpu, d_p, p, n, 1e-6, what);
        snprintf(what, sizeof what, "sgd case %d momentum", k);
        expect_close(gpu, d_m, m, n, 1e-6, what);
        float *got = download(gpu, d_p, n);
        if (memcmp(got, p, n * sizeof(float)) != 0)
            printf("note: sgd case %d agrees to rounding, not bitwise\n", k);
        free(got);
        gpu->ops->free(gpu, d_p), gpu->ops->free(gpu, d_g), gpu->ops->free(gpu, d_m);
        free(p), free(g), free(m);
    }
}

static void test_scale(const backends *b) {
    const size_t n = 1000;
    float *x = random_floats(n, 1.0f, 55);
    float *d_x = upload_floats(b->gpu, x, n);
    b->cpu->ops->scale(b->cpu, x, n, 0.37f);
    b->gpu->ops->scale(b->gpu, d_x, n, 0.37f);
    expect_close(b->gpu, d_x, x, n, 0.0, "scale");
    b->gpu->ops->free(b->gpu, d_x);
    free(x);
}

/* ---- batch augmentation on the device ---- */

/* The kernel on resident uint8 images against the host loader's
 * cr_augment_image: bit for bit, rotations included (the geometry is
 * integer, the normalisation IEEE-rounded on both). 200 images of 50
 * samples, so every image of the batch reads another image's pixels. */
static void test_augment_batch(const backends *b) {
    enum { COUNT = 50, N = 200 };
    const cr_augment aug = {.crop_padding = 2,
                            .hflip = 1,
                            .rotate_deg = 5,
                            .mean = {0.4914f, 0.4822f, 0.4465f},
                            .std = {0.2470f, 0.2435f, 0.2616f}};
    const size_t image_floats = CR_CIFAR_PIXELS, all = (size_t)N * image_floats;
    uint8_t *pixels = malloc((size_t)COUNT * CR_CIFAR_PIXELS);
    for (size_t i = 0; i < (size_t)COUNT * CR_CIFAR_PIXELS; i++)
        pixels[i] = (uint8_t)(cr_rng_u32(3, 81, i) >> 24);
    cr_image_transform transforms[N];
    float *want = floats(all);
    for (int i = 0; i < N; i++) {
        int sample = (i * 13) % COUNT;
        transforms[i] = cr_augment_transform(&aug, 17, 6, (uint64_t)sample);
        cr_augment_image(pixels + (size_t)sample * CR_CIFAR_PIXELS, &aug, 17, 6, (uint64_t)sample,
                         want + (size_t)i * image_floats);
    }
    uint8_t *d_pixels = upload(b->gpu, pixels, (size_t)COUNT * CR_CIFAR_PIXELS);
    cr_image_transform *d_transforms = upload(b->gpu, transforms, sizeof transforms);
    float *d_images = garbage(b->gpu, all);
    b->gpu->ops->augment_batch(b->gpu, d_pixels, d_transforms, N, aug.mean, aug.std, d_images);
    float *got = download(b->gpu, d_images, all);
    size_t differ = 0;
    for (size_t i = 0; i < all; i++) differ += memcmp(&got[i], &want[i], sizeof(float)) != 0;
    CHECK(differ == 0,
          "augment_batch on the GPU = cr_augment_image bit for bit (%zu of %zu "
          "floats differ)",
          differ, all);
    b->gpu->ops->free(b->gpu, d_pixels), b->gpu->ops->free(b->gpu, d_transforms);
    b->gpu->ops->free(b->gpu, d_images);
    free(pixels), free(want), free(got);
}

/* ---- a whole training step ---- */

/* A batch of random images and labels, on the host and on the GPU. */
typedef struct {
    int size;
    float *images, *d_images;
    int32_t labels[32], *d_labels;
} test_batch;

static test_batch make_batch(cr_backend *gpu, int size, uint32_t object) {
    CR_ASSERT(size <= 32);
    test_batch t = {.size = size};
    size_t n = (size_t)size * CR_IMAGE_SIZE * CR_IMAGE_SIZE * CR_IMAGE_CHANNELS;
    t.images = random_floats(n, 2.0f, object);
    for (int i = 0; i < size; i++)
        t.labels[i] = (int32_t)(cr_rng_u32(99, object + 1, i) % CR_NUM_CLASSES);
    t.d_images = upload_floats(gpu, t.images, n);
    t.d_labels = upload(gpu, t.labels, (size_t)size * sizeof(int32_t));
    return t;
}

static void free_batch(cr_backend *gpu, test_batch *t) {
    gpu->ops->free(gpu, t->d_images), gpu->ops->free(gpu, t->d_labels);
    free(t->images);
}

/* The CPU's training step on the images, each value moved by +-nudge
 * (signs from stream `signs`): its gradients and its parameters after one
 * SGD step. */
typedef struct {
    float *grads, *params;
} step_result;

static step_result cpu_step(cr_backend *cpu, const cr_model_desc *desc, const float *images,
                            const int32_t *labels, int batch, double nudge, uint64_t signs,
                            const cr_sgd_args *sgd) {
    size_t n = (size_t)batch * CR_IMAGE_SIZE * CR_IMAGE_SIZE * CR_IMAGE_CHANNELS;
    float *moved = floats(n);
    for (size_t i = 0; i < n; i++)
        moved[i] = images[i] * (float)(1.0 + ((cr_rng_u32(5, signs, i) & 1) ? nudge : -nudge));
    cr_model *m = cr_model_create(cpu, desc, batch, 7);
    const size_t count = cr_model_get_layout(m)->param_count;
    step_result r = {floats(count), floats(count)};
    cr_model_forward(m, moved, labels, batch, 1, 1.0f / batch, NULL);
    cr_model_backward(m, NULL, NULL);
    memcpy(r.grads, cr_model_grads(m), count * sizeof(float));
    cpu->ops->sgd_step(cpu, cr_model_params(m), cr_model_grads(m), cr_model_momentum(m), count,
                       sgd);
    memcpy(r.params, cr_model_params(m), count * sizeof(float));
    cr_model_free(m);
    free(moved);
    return r;
}

static double tensor_distance(const cr_tensor_info *t, const float *got, const float *ref) {
    return relative_l2(got + t->offset, ref + t->offset, t->count);
}

/* Bounds of a step's parameter-shaped result against REF: for tensor t,
 * bound[t], the larger of tol_tensor and NUDGE_BOUND_FACTOR times the most
 * the NUDGES nudged CPU steps move it (so a tensor the nudges barely move
 * keeps a tight bound), capped at STEP_BOUND_CAP; bound[num_params] the same
 * over all parameters, from tol_all. self[] holds those largest moves. */
static void step_bounds(const cr_model_layout *l, const float *ref, float *const *nudged,
                        double tol_all, double tol_tensor, double *bound, double *self) {
    for (int t = 0; t <= l->num_params; t++) {
        self[t] = 0.0;
        for (int k = 0; k < NUDGES; k++)
            self[t] =
                fmax(self[t], t < l->num_params ? tensor_distance(&l->params[t], nudged[k], ref)
                                                : relative_l2(nudged[k], ref, l->param_count));
        double fixed = t < l->num_params ? tol_tensor : tol_all;
        bound[t] = fmin(STEP_BOUND_CAP, fmax(fixed, NUDGE_BOUND_FACTOR * self[t]));
    }
}

/* Checks GOT against REF within the bounds, printing what it compares. */
static void expect_step_close(const cr_model_layout *l, const float *got, const float *ref,
                              const double *bound, const double *self, const char *what) {
    for (int t = 0; t < l->num_params; t++) {
        double err = tensor_distance(&l->params[t], got, ref);
        CHECK(err <= bound[t],
              "%s %s: relative error %.3g (bound %.3g; the nudged CPU moves it %.3g)", what,
              l->params[t].name, err, bound[t], self[t]);
    }
    double all = relative_l2(got, ref, l->param_count);
    const int n = l->num_params;
    CHECK(all <= bound[n], "%s: relative error %.3g overall (bound %.3g)", what, all, bound[n]);
    printf("%s: relative error %.3g overall (bound %.3g; the nudged CPU moves %.3g)\n", what, all,
           bound[n], self[n]);
}

/* A wrong gradient the fp32 bounds must reject: layer2.0.conv1.weight's
 * without its first output channel (OHWI: its first count / O values).
 * (A tensor wrong by half or more fails any bound by construction:
 * STEP_BOUND_CAP; this one is within that, so it tests the nudges.) */
static void expect_dropped_channel_rejected(const cr_model_layout *l, const float *got,
                                            const float *ref, const double *bound) {
    for (int t = 0; t < l->num_params; t++) {
        const cr_tensor_info *info = &l->params[t];
        if (strcmp(info->name, "layer2.0.conv1.weight") != 0) continue;
        float *dropped = floats(info->count);
        memcpy(dropped, got + info->offset, info->count * sizeof(float));
        memset(dropped, 0, info->count / (size_t)info->shape[0] * sizeof(float));
        CHECK(relative_l2(dropped, ref + info->offset, info->count) > bound[t],
              "the step bounds reject %s's gradient without its first output channel", info->name);
        free(dropped);
    }
}

/* A model on both backends from the same seed and batch: forward
 * (training), backward, SGD, then an evaluation forward. The forward pass
 * is held to fixed bounds. The gradients cannot always be: a ReLU input
 * within rounding of 0 falls on different sides on the two backends, and
 * BatchNorm's backward (which subtracts means, cancelling most of each
 * sum) makes such a switch visible. On an H200 (2026-11-26) ResNetLarge's
 * fp32 step differed from the CPU's by 7.6e-3 (small 1.5e-6, medium
 * 4.5e-6), whatever the cuDNN engines; the CPU's own ResNetLarge step moves
 * by as much when its images are nudged by 1e-6 (by 1e-7, only 1.6e-6:
 * some inputs of its ReLUs lie within ~1e-6 of 0). So each tensor of the
 * gradients and of the parameters after SGD must stay within the bound of
 * step_bounds: its fixed bound, or twice the most that NUDGES CPU steps on
 * images nudged by the precision's rounding move that tensor, whichever is
 * larger, but under STEP_BOUND_CAP. Those nudges flip more ReLUs than the
 * GPU did for small and medium, so their fp32 bounds are looser than the
 * GPU needed (2.3e-3 to 4.9e-3 overall against 1e-3). In fp32 the bounds
 * are also checked to reject a convolution's gradient without one output
 * channel; in TF32 and bf16 that is within what their rounding moves
 * (their op tests hold them tighter), and only the cap stands between a
 * tensor and a wrong one. */
static void test_model_step(const backends *b, const char *preset) {
    cr_backend *cpu = b->cpu, *gpu = b->gpu;
    cr_model_desc desc;
    CHECK(cr_model_preset(preset, &desc) == 0, "%s preset", preset);
    const double k = b->step_scale;
    printf("-- %s%s --\n", b->label, preset);
    const int batch = 16;
    cr_model *mc = cr_model_create(cpu, &desc, batch, 7);
    cr_model *mg = cr_model_create(gpu, &desc, batch, 7);
    const cr_model_layout *l = cr_model_get_layout(mc);
    test_batch t = make_batch(gpu, batch, 70);
    float *images = t.images, *d_images = t.d_images;
    int32_t *labels = t.labels, *d_labels = t.d_labels;

    cr_forward_result rc = cr_model_forward(mc, images, labels, batch, 1, 1.0f / batch, NULL);
    cr_forward_result rg = cr_model_forward(mg, d_images, d_labels, batch, 1, 1.0f / batch, NULL);
    CHECK_CLOSE(rg.loss_sum, rc.loss_sum, 1e-4 * k, 1e-6, "model training loss");
    printf("model step: loss %.7g (cpu) %.7g (gpu), correct %d (cpu) %d (gpu)\n", rc.loss_sum,
           rg.loss_sum, rc.correct, rg.correct);
    expect_close(gpu, cr_model_logits(mg), cr_model_logits(mc), (size_t)batch * CR_NUM_CLASSES,
                 1e-3 * k, "model logits");
    expect_close(gpu, cr_model_buffers(mg), cr_model_buffers(mc), l->buffer_count, 1e-4 * k,
                 "model running statistics");

    const cr_sgd_args sgd = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = 1};
    float *nudged_grads[NUDGES], *nudged_params[NUDGES];
    for (int n = 0; n < NUDGES; n++) {
        step_result r = cpu_step(cpu, &desc, images, labels, batch, b->nudge, 71 + n, &sgd);
        nudged_grads[n] = r.grads, nudged_params[n] = r.params;
    }

    cr_model_backward(mc, NULL, NULL);
    cr_model_backward(mg, NULL, NULL);
    float *grads = download(gpu, cr_model_grads(mg), l->param_count);
    const float *ref = cr_model_grads(mc);
    double *bound = calloc((size_t)l->num_params + 1, sizeof(double));
    double *self = calloc((size_t)l->num_params + 1, sizeof(double));
    step_bounds(l, ref, nudged_grads, 1e-3 * k, 1e-2 * k, bound, self);
    expect_step_close(l, grads, ref, bound, self, "model gradients");
    if (b->nudge == FP32_NUDGE) expect_dropped_channel_rejected(l, grads, ref, bound);

    cpu->ops->sgd_step(cpu, cr_model_params(mc), cr_model_grads(mc), cr_model_momentum(mc),
                       l->param_count, &sgd);
    gpu->ops->sgd_step(gpu, cr_model_params(mg), cr_model_grads(mg), cr_model_momentum(mg),
                       l->param_count, &sgd);
    float *params = download(gpu, cr_model_params(mg), l->param_count);
    step_bounds(l, cr_model_params(mc), nudged_params, 1e-4 * k, 1e-2 * k, bound, self);
    expect_step_close(l, params, cr_model_params(mc), bound, self, "model parameters after SGD");

    rc = cr_model_forward(mc, images, labels, batch, 0, 0.0f, NULL);
    rg = cr_model_forward(mg, d_images, d_labels, batch, 0, 0.0f, NULL);
    CHECK_CLOSE(rg.loss_sum, rc.loss_sum, 1e-3 * k, 1e-6, "model evaluation loss");

    free_batch(gpu, &t);
    free(grads), free(params), free(bound), free(self);
    for (int n = 0; n < NUDGES; n++) free(nudged_grads[n]), free(nudged_params[n]);
    cr_model_free(mc);
    cr_model_free(mg);
}

/* ---- a training step recorded as a graph ---- */

/* Three SGD steps of the small model with a new lr and momentum each
 * (from device memory, as the trainer passes them): op by op on one model;
 * on a second, step 1 op by op (it sizes the scratch), step 2 recorded and
 * launched, step 3 the recording replayed. Same kernels, same inputs: the
 * weights, momentum and running statistics must be bitwise equal. */
static void graph_step_ops(cr_backend *gpu, cr_model *m, const float *images, const int32_t *labels,
                           int batch, const float *schedule) {
    cr_model_forward_enqueue(m, images, labels, batch, 1, 1.0f / batch, NULL);
    cr_model_backward(m, NULL, NULL);
    const cr_sgd_args sgd = {.weight_decay = 5e-4f, .nesterov = 1, .schedule = schedule};
    gpu->ops->sgd_step(gpu, cr_model_params(m), cr_model_grads(m), cr_model_momentum(m),
                       cr_model_get_layout(m)->param_count, &sgd);
}

static void test_graph_step(const backends *b) {
    cr_backend *gpu = b->gpu;
    if (!gpu->ops->graph_begin) {
        printf("graph step: skipped, the %s backend records no graphs\n", gpu->ops->name);
        return;
    }
    cr_model_desc desc;
    CHECK(cr_model_preset("small", &desc) == 0, "small preset");
    const int batch = 32;
    cr_model *eager = cr_model_create(gpu, &desc, batch, 5);
    cr_model *graphed = cr_model_create(gpu, &desc, batch, 5);
    const cr_model_layout *l = cr_model_get_layout(eager);
    test_batch t = make_batch(gpu, batch, 90);
    const float *d_images = t.d_images;
    const int32_t *d_labels = t.d_labels;
    float *d_schedule = gpu->ops->alloc(gpu, 2 * sizeof(float));
    const float schedules[3][2] = {{0.1f, 0.9f}, {0.05f, 0.85f}, {0.02f, 0.8f}};
    float *initial = download(gpu, cr_model_params(eager), l->param_count);
    cr_graph *graph = NULL;
    for (int step = 0; step < 3; step++) {
        gpu->ops->copy_to_device(gpu, d_schedule, schedules[step], sizeof schedules[step]);
        graph_step_ops(gpu, eager, d_images, d_labels, batch, d_schedule);
        if (step == 0) {
            graph_step_ops(gpu, graphed, d_images, d_labels, batch, d_schedule);
            continue;
        }
        if (step == 1) {
            gpu->ops->graph_begin(gpu);
            graph_step_ops(gpu, graphed, d_images, d_labels, batch, d_schedule);
            graph = gpu->ops->graph_end(gpu);
            CHECK(graph != NULL, "the training step records as a CUDA graph");
            if (!graph) break;
        }
        gpu->ops->graph_launch(gpu, graph);
    }
    if (graph) {
        float *p1 = download(gpu, cr_model_params(eager), l->param_count);
        float *p2 = download(gpu, cr_model_params(graphed), l->param_count);
        float *m1 = download(gpu, cr_model_momentum(eager), l->param_count);
        float *m2 = download(gpu, cr_model_momentum(graphed), l->param_count);
        float *s1 = download(gpu, cr_model_buffers(eager), l->buffer_count);
        float *s2 = download(gpu, cr_model_buffers(graphed), l->buffer_count);
        CHECK(memcmp(p1, p2, l->param_count * sizeof(float)) == 0 &&
                  memcmp(m1, m2, l->param_count * sizeof(float)) == 0 &&
                  memcmp(s1, s2, l->buffer_count * sizeof(float)) == 0,
              "3 steps op by op = 1 op by op + recorded + replayed, bit for bit");
        CHECK(memcmp(p1, initial, l->param_count * sizeof(float)) != 0,
              "the steps changed the weights");
        free(p1), free(p2), free(m1), free(m2), free(s1), free(s2);
        gpu->ops->graph_free(gpu, graph);
    }
    gpu->ops->free(gpu, d_schedule);
    free_batch(gpu, &t);
    free(initial);
    cr_model_free(eager);
    cr_model_free(graphed);
}

/* The BatchNorm cases once more on a backend made with
 * CRESNET_CUDA_BN=vector: the 16-byte kernels, opt-in since the scalar
 * ones proved faster, held to the same bounds; then, unless model_step is
 * NULL, that model's whole step, where they meet every other op. */
static void test_bn_vector_kernels(backends with, const bn_params *cases, size_t count,
                                   const cr_cuda_options *options, const char *model_step) {
    const char *was = getenv("CRESNET_CUDA_BN");
    char saved[32] = "";
    if (was) snprintf(saved, sizeof saved, "%s", was);
    setenv("CRESNET_CUDA_BN", "vector", 1);
    with.gpu = cr_backend_cuda_create(0, options); /* reads the variable once */
    if (was)
        setenv("CRESNET_CUDA_BN", saved, 1);
    else
        unsetenv("CRESNET_CUDA_BN");
    char device[256];
    with.gpu->ops->describe(with.gpu, device, sizeof device);
    if (strcmp(with.gpu->ops->name, "cuda") == 0)
        CHECK(strstr(device, "CRESNET_CUDA_BN=vector") != NULL,
              "the backend made with CRESNET_CUDA_BN=vector says it takes the 16-byte kernels "
              "(%s)",
              device);
    else
        printf("16-byte BN kernels: the %s backend has none, its own BN runs\n",
               with.gpu->ops->name);
    char label[64];
    snprintf(label, sizeof label, "%s16-byte BN kernels: ", with.label);
    with.label = label;
    for (size_t i = 0; i < count; i++) test_bn(&with, cases[i]);
    if (model_step) test_model_step(&with, model_step);
    with.gpu->ops->destroy(with.gpu);
}

int main(void) {
    if (cr_cuda_device_count() == 0) {
        printf("SKIPPED: no CUDA device\n");
        return 0;
    }
    const cr_cuda_options fp32 = {.math = CR_MATH_FP32};
    backends b = {cr_backend_cpu_create(0, CR_MATH_FP32),
                  cr_backend_cuda_create(0, &fp32),
                  OP_TOL,
                  1.0,
                  "",
                  OP_TOL,
                  FP32_NUDGE};
    test_memory(&b);
    const cr_conv_shape shapes[] = {
        cr_conv_shape_make(2, 8, 8, 3, 16, 3, 1, 1),
        cr_conv_shape_make(3, 8, 8, 16, 16, 3, 1, 1),
        cr_conv_shape_make(2, 8, 8, 16, 32, 3, 2, 1),
        cr_conv_shape_make(2, 7, 7, 8, 24, 3, 2, 1),
        cr_conv_shape_make(2, 8, 8, 16, 32, 1, 2, 0),
        cr_conv_shape_make(1, 4, 4, 64, 64, 3, 1, 1),
        cr_conv_shape_make(8, 32, 32, 3, 16, 3, 1, 1), /* the stem at a real image size */
        /* ResNetLarge's last stage at test_model_step's batch: the engines
         * its step runs, op by op (where the step itself is least stable) */
        cr_conv_shape_make(16, 4, 4, 512, 512, 3, 1, 1),
        cr_conv_shape_make(16, 8, 8, 256, 512, 3, 2, 1),
        cr_conv_shape_make(16, 8, 8, 256, 512, 1, 2, 0),
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) test_conv(&b, shapes[i], 0);
    test_conv(&b, shapes[1], 1);
    test_conv(&b, shapes[2], 1);
    const bn_params bn_cases[] = {
        {50, 16, 1, 1, 1, 3.0f, 0},
        {37, 5, 0, 0, 1, 3.0f, 0},
        {300, 32, 1, 0, 1, 3.0f, 0},
        {5000, 64, 1, 1, 1, 3.0f, 0},
        {2048, 48, 0, 1, 1, 3.0f, 0},
        {50, 16, 1, 1, 0, 3.0f, 0},
        {37, 5, 0, 0, 0, 3.0f, 0},
        {300, 32, 1, 0, 0, 3.0f, 0},
        {5000, 64, 1, 1, 0, 3.0f, 0},
        {3, 7, 1, 1, 1, 3.0f, 0},
        {2048, 32, 0, 0, 1, 300.0f, 0},
        {2048, 32, 1, 1, 1, 300.0f, 0},
        /* The 16-byte kernels at their edges: one vector a row (C 4 in
         * fp32, 8 in bf16), one row lane a block (1024 fp32, 2048 bf16),
         * chunks of fewer than 256 rows (C 512 and up), too many vectors a
         * row for a block (2048 fp32: the scalar kernels), and a tensor
         * they must leave to the scalar kernels (misaligned). */
        {100, 4, 1, 1, 1, 3.0f, 0},
        {100, 8, 1, 1, 1, 3.0f, 0},
        {256, 512, 1, 1, 1, 3.0f, 0},
        {300, 1024, 0, 1, 1, 3.0f, 0},
        {40, 2048, 1, 0, 1, 3.0f, 0},
        {2048, 64, 1, 1, 1, 3.0f, 1},
    };
    for (size_t i = 0; i < sizeof bn_cases / sizeof bn_cases[0]; i++) test_bn(&b, bn_cases[i]);
    test_bn_vector_kernels(b, bn_cases, sizeof bn_cases / sizeof bn_cases[0], &fp32, "small");
    test_running_stats(&b);
    test_avgpool(&b);
    test_linear(&b);
    test_softmax_xent(&b);
    test_sgd(&b);
    test_scale(&b);
    test_augment_batch(&b);
    test_model_step(&b, "small");
    test_model_step(&b, "medium");
    test_model_step(&b, "large");

    /* TF32: the ops it changes, and a whole step within 20x the fp32 bounds;
     * its engines timed (device.autotune), which runs that search too. */
    const cr_cuda_options tf32_tuned = {.math = CR_MATH_TF32, .autotune = 1};
    backends tf32 = {b.cpu,
                     cr_backend_cuda_create(0, &tf32_tuned),
                     TF32_TOL,
                     20.0,
                     "tf32 (autotuned) ",
                     OP_TOL,
                     TF32_NUDGE};
    test_conv(&tf32, shapes[1], 0);
    test_conv(&tf32, cr_conv_shape_make(8, 16, 16, 64, 64, 3, 1, 1), 0);
    test_conv(&tf32, shapes[6], 0);
    test_linear(&tf32);
    test_model_step(&tf32, "small");
    test_model_step(&tf32, "large");
    tf32.gpu->ops->destroy(tf32.gpu);

    /* bf16: every op that reads or writes activations, and whole steps
     * within BF16_STEP_SCALE times the fp32 bounds. */
    const cr_cuda_options bf16_options = {.math = CR_MATH_BF16};
    backends bf16 = {b.cpu,     cr_backend_cuda_create(0, &bf16_options),
                     BF16_TOL,  BF16_STEP_SCALE,
                     "bf16 ",   BF16_TOL,
                     BF16_NUDGE};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) test_conv(&bf16, shapes[i], 0);
    test_conv(&bf16, shapes[1], 1);
    for (size_t i = 0; i < sizeof bn_cases / sizeof bn_cases[0]; i++) test_bn(&bf16, bn_cases[i]);
    /* (its step needs a bf16 CPU model: the one below runs the default kernels) */
    test_bn_vector_kernels(bf16, bn_cases, sizeof bn_cases / sizeof bn_cases[0], &bf16_options,
                           NULL);
    test_avgpool(&bf16);
    /* A whole step: against a bf16 CPU model where this processor has one
     * (the same roundings; an fp32 model differs by ~15% in the gradients
     * at initialisation, where BatchNorm's backward cancels most of each
     * bf16 gradient), else not at all. */
    if (cr_backend_cpu_supports(CR_MATH_BF16)) {
        bf16.cpu = cr_backend_cpu_create(0, CR_MATH_BF16);
        test_model_step(&bf16, "small");
        test_model_step(&bf16, "large");
        bf16.cpu->ops->destroy(bf16.cpu);
    } else {
        printf("bf16 model step: skipped, this CPU has no bf16 convolutions to compare with\n");
    }
    bf16.gpu->ops->destroy(bf16.gpu);

    /* The graph replay, bit for bit: only with deterministic engines can
     * two runs of a step agree (train.deterministic; this comes last, as a
     * shape without such an engine ends the program). */
    const cr_cuda_options fixed = {.math = CR_MATH_FP32, .deterministic = 1};
    backends det = {
        b.cpu,     cr_backend_cuda_create(0, &fixed), OP_TOL, 1.0, "deterministic ", OP_TOL,
        FP32_NUDGE};
    test_graph_step(&det);
    det.gpu->ops->destroy(det.gpu);
    const cr_cuda_options fixed_bf16 = {.math = CR_MATH_BF16, .deterministic = 1};
    backends det_bf16 = {b.cpu,
                         cr_backend_cuda_create(0, &fixed_bf16),
                         BF16_TOL,
                         BF16_STEP_SCALE,
                         "deterministic bf16 ",
                         BF16_TOL,
                         BF16_NUDGE};
    test_graph_step(&det_bf16);
    det_bf16.gpu->ops->destroy(det_bf16.gpu);
    b.gpu->ops->destroy(b.gpu);
    b.cpu->ops->destroy(b.cpu);
    return check_finish();
}
