/* Each CPU backend op against a plain reference: convolutions against a
 * direct loop nest and by the adjoint identity <A x, y> = <x, A^T y> (exact
 * for linear ops), the nonlinear ops' backward against central finite
 * differences of a random projection of their output. */
#include "check.h"
#include "cresnet/backend.h"
#include "cresnet/data.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

static float *floats(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* ---- convolution ---- */

static void conv_reference(const cr_conv_shape *s, const float *x, const float *w, float *y) {
    for (int n = 0; n < s->batch; n++)
        for (int oh = 0; oh < s->out_h; oh++)
            for (int ow = 0; ow < s->out_w; ow++)
                for (int o = 0; o < s->out_c; o++) {
                    double acc = 0.0;
                    for (int kh = 0; kh < s->kernel; kh++)
                        for (int kw = 0; kw < s->kernel; kw++) {
                            int ih = oh * s->stride - s->pad + kh;
                            int iw = ow * s->stride - s->pad + kw;
                            if (ih < 0 || ih >= s->in_h || iw < 0 || iw >= s->in_w) continue;
                            for (int i = 0; i < s->in_c; i++)
                                acc +=
                                    (double)x[((n * s->in_h + ih) * s->in_w + iw) * s->in_c + i] *
                                    w[((o * s->kernel + kh) * s->kernel + kw) * s->in_c + i];
                        }
                    y[((n * s->out_h + oh) * s->out_w + ow) * s->out_c + o] = (float)acc;
                }
}

static void test_conv(cr_backend *be, cr_conv_shape s) {
    const cr_backend_ops *ops = be->ops;
    size_t nx = (size_t)s.batch * s.in_h * s.in_w * s.in_c;
    size_t ny = (size_t)s.batch * s.out_h * s.out_w * s.out_c;
    size_t nw = (size_t)s.out_c * s.kernel * s.kernel * s.in_c;
    float *x = floats(nx), *w = floats(nw), *y = floats(ny), *ref = floats(ny);
    float *dy = floats(ny), *dx = floats(nx), *dw = floats(nw), *v = floats(nx), *vw = floats(nw);
    float *yv = floats(ny);
    fill_random(x, nx, 1.0f, 1);
    fill_random(w, nw, 0.5f, 2);
    fill_random(dy, ny, 1.0f, 3);
    fill_random(v, nx, 1.0f, 4);
    fill_random(vw, nw, 1.0f, 5);
    cr_conv_plan *plan = ops->conv_plan(be, &s);
    char what[128];
    snprintf(what, sizeof what, "conv %dx%d s%d %d->%d on %dx%d", s.kernel, s.kernel, s.stride,
             s.in_c, s.out_c, s.in_h, s.in_w);

    ops->conv_forward(be, plan, x, w, y);
    conv_reference(&s, x, w, ref);
    double err = 0.0, norm = 0.0;
    for (size_t i = 0; i < ny; i++) {
        err += (y[i] - ref[i]) * (double)(y[i] - ref[i]);
        norm += (double)ref[i] * ref[i];
    }
    CHECK(sqrt(err / norm) < 1e-6, "%s forward: relative error %g", what, sqrt(err / norm));

    /* <dy, conv(v, w)> = <conv_backward_data(dy, w), v> */
    ops->conv_forward(be, plan, v, w, yv);
    ops->conv_backward_data(be, plan, dy, w, dx);
    CHECK_CLOSE(dot(dy, yv, ny), dot(dx, v, nx), 1e-5, 1e-3, what);
    /* <dy, conv(x, vw)> = <conv_backward_weight(x, dy), vw> */
    ops->conv_forward(be, plan, x, vw, yv);
    ops->conv_backward_weight(be, plan, x, dy, dw);
    CHECK_CLOSE(dot(dy, yv, ny), dot(dw, vw, nw), 1e-5, 1e-3, what);

    ops->conv_plan_free(be, plan);
    free(x), free(w), free(y), free(ref), free(dy), free(dx), free(dw), free(v), free(vw), free(yv);
}

/* ---- BatchNorm (+ residual + ReLU), training and eval ---- */

typedef struct {
    long rows;
    int C, relu, training;
    float *x, *residual, *gamma, *beta, *running_mean, *running_var;
} bn_case;

/* Forward of the case on the backend; returns <y, r> in double. */
static double bn_objective(cr_backend *be, const bn_case *t, const float *r, float *y,
                           float *stats) {
    const cr_backend_ops *ops = be->ops;
    int C = t->C;
    float *rm = floats(C), *rv = floats(C), *sums = floats(2 * C);
    memcpy(rm, t->running_mean, C * sizeof(float));
    memcpy(rv, t->running_var, C * sizeof(float));
    if (t->training) {
        ops->bn_sums(be, t->x, t->rows, C, rm, sums);
        ops->bn_finalize(be, sums, (double)t->rows, C, rm, 1e-5f, 0.1f, stats, stats + C, rm, rv);
    } else {
        ops->bn_running_stats(be, rm, rv, C, 1e-5f, stats, stats + C);
    }
    cr_bn_view view = {t->rows, C, stats, stats + C, t->gamma, t->beta};
    ops->bn_apply(be, &view, t->x, t->residual, t->relu, y);
    free(rm), free(rv), free(sums);
    return dot(y, r, (size_t)t->rows * C);
}

/* Central difference of the objective along direction v applied to `target`. */
static double bn_directional(cr_backend *be, bn_case *t, float *target, const float *v, size_t n,
                             const float *r, float h) {
    size_t ny = (size_t)t->rows * t->C;
    float *y = floats(ny), *stats = floats(2 * t->C), *saved = floats(n);
    memcpy(saved, target, n * sizeof(float));
    for (size_t i = 0; i < n; i++) target[i] = saved[i] + h * v[i];
    double plus = bn_objective(be, t, r, y, stats);
    for (size_t i = 0; i < n; i++) target[i] = saved[i] - h * v[i];
    double minus = bn_objective(be, t, r, y, stats);
    memcpy(target, saved, n * sizeof(float));
    free(y), free(stats), free(saved);
    return (plus - minus) / (2.0 * h);
}

static void test_bn(cr_backend *be, long rows, int C, int relu, int with_residual, int training) {
    const cr_backend_ops *ops = be->ops;
    size_t n = (size_t)rows * C;
    bn_case t = {
        rows,      C,         relu,      training, floats(n), with_residual ? floats(n) : NULL,
        floats(C), floats(C), floats(C), floats(C)};
    fill_random(t.x, n, 2.0f, 10);
    for (size_t i = 0; i < n; i++) t.x[i] += 3.0f; /* a mean far from 0 tests the shift */
    if (t.residual) fill_random(t.residual, n, 1.0f, 11);
    fill_random(t.gamma, C, 0.5f, 12);
    fill_random(t.beta, C, 0.5f, 13);
    fill_random(t.running_mean, C, 1.0f, 14);
    for (int c = 0; c < C; c++) {
        t.gamma[c] += 1.0f;
        t.running_var[c] = 1.5f + t.beta[c];
    }
    float *r = floats(n), *y = floats(n), *stats = floats(2 * C);
    fill_random(r, n, 1.0f, 15);
    if (relu) {
        /* Finite differences are wrong across ReLU's kink: elements whose
         * input to the ReLU is near 0 are left out of the objective. */
        t.relu = 0;
        bn_objective(be, &t, r, y, stats);
        t.relu = 1;
        for (size_t i = 0; i < n; i++)
            if (fabsf(y[i]) < 0.1f) r[i] = 0.0f;
    }
    bn_objective(be, &t, r, y, stats);

    char what[96];
    snprintf(what, sizeof what, "bn rows=%ld C=%d relu=%d residual=%d training=%d", rows, C, relu,
             with_residual, training);
    if (training) { /* batch statistics against a double two-pass reference */
        for (int c = 0; c < C; c++) {
            double mean = 0.0, var = 0.0;
            for (long i = 0; i < rows; i++) mean += t.x[i * C + c];
            mean /= rows;
            for (long i = 0; i < rows; i++) var += pow(t.x[i * C + c] - mean, 2);
            var /= rows;
            CHECK_CLOSE(stats[c], mean, 1e-6, 1e-6, what);
            CHECK_CLOSE(stats[C + c], 1.0 / sqrt(var + 1e-5), 1e-5, 1e-6, what);
        }
    }
    /* Backward: r is dy, split into two halves to exercise dy2. */
    float *dy_a = floats(n), *dy_b = floats(n), *dx = floats(n), *dres = floats(n);
    float *grads = floats(2 * C);
    for (size_t i = 0; i < n; i++) {
        dy_a[i] = 0.25f * r[i];
        dy_b[i] = r[i] - dy_a[i];
    }
    cr_bn_view view = {rows, C, stats, stats + C, t.gamma, t.beta};
    ops->bn_backward_sums(be, &view, t.x, y, dy_a, dy_b, relu, grads);
    ops->bn_backward_apply(be, &view, t.x, y, dy_a, dy_b, relu, grads, (double)rows, training, dx,
                           dres);

    /* Large enough that float rounding of the batch statistics is small next
     * to their change, small enough to move ReLU inputs less than the margin. */
    const float h = 1e-2f;
    float *v = floats(n);
    fill_random(v, n, 1.0f, 16);
    CHECK_CLOSE(bn_directional(be, &t, t.x, v, n, r, h), dot(dx, v, n), 2e-3, 1e-2, what);
    if (t.residual)
        CHECK_CLOSE(bn_directional(be, &t, t.residual, v, n, r, h), dot(dres, v, n), 2e-3, 1e-2,
                    what);
    fill_random(v, C, 1.0f, 17);
    CHECK_CLOSE(bn_directional(be, &t, t.gamma, v, C, r, h), dot(grads, v, C), 2e-3, 1e-2, what);
    CHECK_CLOSE(bn_directional(be, &t, t.beta, v, C, r, h), dot(grads + C, v, C), 2e-3, 1e-2, what);
    free(t.x), free(t.residual), free(t.gamma), free(t.beta), free(t.running_mean);
    free(t.running_var), free(r), free(y), free(stats), free(dy_a), free(dy_b), free(dx);
    free(dres), free(grads), free(v);
}

static void test_running_stats(cr_backend *be) {
    /* Values 1..4 in one channel: mean 2.5, biased var 1.25, unbiased 5/3. */
    float x[4] = {1, 2, 3, 4}, rm[1] = {0.5f}, rv[1] = {2.0f}, sums[2], stats[2];
    be->ops->bn_sums(be, x, 4, 1, rm, sums);
    be->ops->bn_finalize(be, sums, 4.0, 1, rm, 1e-5f, 0.1f, stats, stats + 1, rm, rv);
    CHECK_CLOSE(stats[0], 2.5, 1e-7, 1e-7, "batch mean");
    CHECK_CLOSE(stats[1], 1.0 / sqrt(1.25 + 1e-5), 1e-6, 1e-7, "batch invstd");
    CHECK_CLOSE(rm[0], 0.9 * 0.5 + 0.1 * 2.5, 1e-7, 1e-7, "running mean");
    CHECK_CLOSE(rv[0], 0.9 * 2.0 + 0.1 * 5.0 / 3.0, 1e-7, 1e-7, "running var (unbiased)");
}

/* ---- head: pooling, linear, loss ---- */

static void test_avgpool(cr_backend *be) {
    const int batch = 3, hw = 16, C = 5;
    size_t nx = (size_t)batch * hw * C, ny = (size_t)batch * C;
    float *x = floats(nx), *y = floats(ny), *dy = floats(ny), *dx = floats(nx);
    fill_random(x, nx, 1.0f, 20);
    fill_random(dy, ny, 1.0f, 21);
    be->ops->avgpool_forward(be, x, batch, hw, C, y);
    double mean = 0.0;
    for (int p = 0; p < hw; p++) mean += x[(1 * hw + p) * C + 2];
    CHECK_CLOSE(y[1 * C + 2], mean / hw, 1e-6, 1e-6, "avgpool forward");
    be->ops->avgpool_backward(be, dy, batch, hw, C, dx);
    CHECK_CLOSE(dot(dy, y, ny), dot(dx, x, nx), 1e-5, 1e-4, "avgpool adjoint");
    free(x), free(y), free(dy), free(dx);
}

static void test_linear(cr_backend *be) {
    const int batch = 4, in = 7, out = 3;
    float x[28], w[21], b[3], y[12], dy[12], dx[28], dw[21], db[3], vy[12], zero[3] = {0};
    fill_random(x, 28, 1.0f, 30);
    fill_random(w, 21, 1.0f, 31);
    fill_random(b, 3, 1.0f, 32);
    fill_random(dy, 12, 1.0f, 33);
    be->ops->linear_forward(be, x, w, b, batch, in, out, y);
    double expect = b[2];
    for (int i = 0; i < in; i++) expect += (double)x[1 * in + i] * w[2 * in + i];
    CHECK_CLOSE(y[1 * out + 2], expect, 1e-6, 1e-6, "linear forward");
    be->ops->linear_backward(be, x, w, dy, batch, in, out, dx, dw, db);
    /* Linear in each argument: adjoint identities without the bias. */
    be->ops->linear_forward(be, x, w, zero, batch, in, out, vy);
    CHECK_CLOSE(dot(dy, vy, 12), dot(dx, x, 28), 1e-5, 1e-5, "linear dx");
    CHECK_CLOSE(dot(dy, vy, 12), dot(dw, w, 21), 1e-5, 1e-5, "linear dw");
    double bias_sum = 0.0;
    for (int n = 0; n < batch; n++) bias_sum += dy[n * out + 1];
    CHECK_CLOSE(db[1], bias_sum, 1e-6, 1e-6, "linear db");
}

static double xent_loss(cr_backend *be, const float *logits, const int32_t *labels, int batch) {
    float loss[2];
    int32_t predicted[8];
    be->ops->softmax_xent(be, logits, labels, batch, 10, 0.0f, NULL, loss, predicted);
    return loss[0];
}

static void test_softmax_xent(cr_backend *be) {
    const int batch = 6;
    float logits[60], dlogits[60], v[60], bumped[60], sums[2];
    int32_t labels[6] = {0, 3, 9, 3, 5, 1}, predicted[6];
    fill_random(logits, 60, 4.0f, 40);
    logits[2 * 10 + 9] = 30.0f; /* a confident, correct prediction */
    logits[4 * 10 + 5] = 30.0f; /* another */
    be->ops->softmax_xent(be, logits, labels, batch, 10, 0.5f, dlogits, sums, predicted);
    float loss = sums[0];
    int hits = 0;
    for (int n = 0; n < batch; n++) hits += predicted[n] == labels[n];
    CHECK(hits >= 2 && sums[1] == (float)hits, "correct count %g, argmax hits %d", sums[1], hits);
    double expect = 0.0;
    for (int n = 0; n < batch; n++) {
        double denom = 0.0;
        for (int k = 0; k < 10; k++) denom += exp((double)logits[n * 10 + k]);
        expect += log(denom) - logits[n * 10 + labels[n]];
    }
    CHECK_CLOSE(loss, expect, 1e-6, 1e-6, "cross-entropy sum");
    CHECK(predicted[2] == 9, "argmax %d", predicted[2]);
    fill_random(v, 60, 1.0f, 41);
    const float h = 1e-2f;
    for (int i = 0; i < 60; i++) bumped[i] = logits[i] + h * v[i];
    double plus = xent_loss(be, bumped, labels, batch);
    for (int i = 0; i < 60; i++) bumped[i] = logits[i] - h * v[i];
    double minus = xent_loss(be, bumped, labels, batch);
    CHECK_CLOSE(0.5 * (plus - minus) / (2 * h), dot(dlogits, v, 60), 2e-3, 1e-3,
                "cross-entropy gradient");
}

static void test_sgd(cr_backend *be) {
    const cr_sgd_args plain = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f};
    cr_sgd_args nesterov = plain;
    nesterov.nesterov = 1;
    const cr_sgd_args *cases[] = {&plain, &nesterov};
    for (int k = 0; k < 2; k++) {
        float p[5], g[5], m[5], p0[5], m0[5];
        fill_random(p, 5, 1.0f, 50);
        fill_random(g, 5, 1.0f, 51);
        fill_random(m, 5, 1.0f, 52);
        memcpy(p0, p, sizeof p);
        memcpy(m0, m, sizeof m);
        be->ops->sgd_step(be, p, g, m, 5, cases[k]);
        for (int i = 0; i < 5; i++) {
            double d = g[i] + 0.01 * p0[i];
            double buf = 0.9 * m0[i] + d;
            double step = cases[k]->nesterov ? d + 0.9 * buf : buf;
            CHECK_CLOSE(m[i], buf, 1e-6, 1e-6, "momentum buffer");
            CHECK_CLOSE(p[i], p0[i] - 0.1 * step, 1e-6, 1e-6, "sgd parameter");
        }
    }
}

/* ---- batch augmentation ---- */

/* augment_batch on resident uint8 images equals the host loader's
 * cr_augment_image bit for bit: same pixels (crops, flips, rotations of
 * every kind at +-40 degrees), same normalisation. */
static void test_augment_batch(cr_backend *be) {
    enum { COUNT = 9, N = 24 };
    const cr_augment aug = {.crop_padding = 3,
                            .hflip = 1,
                            .rotate_deg = 40,
                            .mean = {0.4914f, 0.4822f, 0.4465f},
                            .std = {0.2470f, 0.2435f, 0.2616f}};
    uint8_t *pixels = malloc(COUNT * CR_CIFAR_PIXELS);
    for (int i = 0; i < COUNT * CR_CIFAR_PIXELS; i++)
        pixels[i] = (uint8_t)(cr_rng_u32(3, 80, (uint64_t)i) >> 24);
    cr_image_transform transforms[N];
    float *got = floats((size_t)N * CR_CIFAR_PIXELS), *want = floats((size_t)N * CR_CIFAR_PIXELS);
    int rotated = 0;
    for (int i = 0; i < N; i++) {
        int sample = (i * 7) % COUNT;
        transforms[i] = cr_augment_transform(&aug, 11, 2, (uint64_t)sample);
        rotated += transforms[i].rotate;
        cr_augment_image(pixels + (size_t)sample * CR_CIFAR_PIXELS, &aug, 11, 2, (uint64_t)sample,
                         want + (size_t)i * CR_CIFAR_PIXELS);
    }
    be->ops->augment_batch(be, pixels, transforms, N, aug.mean, aug.std, got);
    CHECK(rotated > N / 2, "most transforms rotate (%d of %d)", rotated, N);
    CHECK(memcmp(got, want, (size_t)N * CR_CIFAR_PIXELS * sizeof(float)) == 0,
          "augment_batch = cr_augment_image bit for bit");
    free(pixels), free(got), free(want);
}

/* The BN sums are the same bits whatever the number of threads (fixed
 * chunks added in a fixed order), and backward_apply may write dx over dy
 * and the residual's gradient over dy2, as the model does. */
static void test_bn_threads_and_aliasing(cr_backend *be) {
    const int threads_at_start = omp_get_max_threads();
    const long rows = 2000;
    const int C = 24;
    const size_t n = (size_t)rows * C;
    float *x = floats(n), *y = floats(n), *dy = floats(n), *dy2 = floats(n), *gamma = floats(C);
    float *beta = floats(C), *shift = floats(C), *stats = floats(2 * C);
    fill_random(x, n, 2.0f, 40);
    fill_random(y, n, 1.0f, 41);
    fill_random(dy, n, 1.0f, 42);
    fill_random(dy2, n, 1.0f, 43);
    fill_random(gamma, C, 1.0f, 44);
    fill_random(beta, C, 1.0f, 45);
    fill_random(shift, C, 1.0f, 46);
    fill_random(stats, 2 * C, 0.5f, 47);
    for (int c = 0; c < C; c++) stats[C + c] += 1.0f; /* invstd > 0 */
    cr_bn_view view = {rows, C, stats, stats + C, gamma, beta};
    float sums[2][48], grads[2][48];
    const int threads[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(threads[k]);
        be->ops->bn_sums(be, x, rows, C, shift, sums[k]);
        be->ops->bn_backward_sums(be, &view, x, y, dy, dy2, 1, grads[k]);
    }
    omp_set_num_threads(threads_at_start);
    CHECK(memcmp(sums[0], sums[1], sizeof sums[0]) == 0, "bn_sums: 1 and 3 threads differ");
    CHECK(memcmp(grads[0], grads[1], sizeof grads[0]) == 0,
          "bn_backward_sums: 1 and 3 threads differ");

    float *dx = floats(n), *dres = floats(n), *dx_in_place = floats(n), *dres_in_place = floats(n);
    be->ops->bn_backward_apply(be, &view, x, y, dy, dy2, 1, grads[0], (double)rows, 1, dx, dres);
    memcpy(dx_in_place, dy, n * sizeof(float));
    memcpy(dres_in_place, dy2, n * sizeof(float));
    be->ops->bn_backward_apply(be, &view, x, y, dx_in_place, dres_in_place, 1, grads[0],
                               (double)rows, 1, dx_in_place, dres_in_place);
    CHECK(memcmp(dx, dx_in_place, n * sizeof(float)) == 0 &&
              memcmp(dres, dres_in_place, n * sizeof(float)) == 0,
          "bn_backward_apply in place differs");
    free(x), free(y), free(dy), free(dy2), free(gamma), free(beta), free(shift), free(stats);
    free(dx), free(dres), free(dx_in_place), free(dres_in_place);
}

int main(void) {
    cr_backend *be = cr_backend_cpu_create(0, CR_MATH_FP32);
    test_conv(be, cr_conv_shape_make(2, 8, 8, 3, 16, 3, 1, 1));
    test_conv(be, cr_conv_shape_make(3, 8, 8, 16, 16, 3, 1, 1));
    test_conv(be, cr_conv_shape_make(2, 8, 8, 16, 32, 3, 2, 1));
    test_conv(be, cr_conv_shape_make(2, 7, 7, 8, 24, 3, 2, 1));
    test_conv(be, cr_conv_shape_make(2, 8, 8, 16, 32, 1, 2, 0));
    test_conv(be, cr_conv_shape_make(1, 4, 4, 64, 64, 3, 1, 1));
    for (int training = 0; training <= 1; training++) {
        test_bn(be, 50, 16, 1, 1, training);
        test_bn(be, 37, 5, 0, 0, training);
        test_bn(be, 300, 32, 1, 0, training);
        /* Blocks of rows: several chunks ending in a partial block (24 does
         * not divide a block's 1024 values), and rows wider than a block. */
        test_bn(be, 2000, 24, 1, 1, training);
        test_bn(be, 40, 1500, 0, 1, training);
    }
    test_bn_threads_and_aliasing(be);
    test_running_stats(be);
    test_avgpool(be);
    test_linear(be);
    test_softmax_xent(be);
    test_sgd(be);
    test_augment_batch(be);
    be->ops->destroy(be);
    return check_finish();
}
