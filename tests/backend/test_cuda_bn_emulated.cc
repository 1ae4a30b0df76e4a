/* The CUDA backend's BatchNorm device code (src/backend/cuda/cuda_bn.cuh),
 * the very source, run on the CPU so that CI checks it without a GPU
 * (cuda_emulation.h stands in for CUDA's built-ins). Every BN op is launched as cuda_kernels.cu
 * launches it, in both forms (one value per thread, 16-byte vectors where the shape allows), for
 * fp32 and bf16, with and without the residual's branches, in training and evaluation, and compared
 * element by element with the CPU backend, the reference; the two forms must also agree bit for bit
 * here. What this cannot show: anything about the hardware (memory model, warps, alignment faults,
 * speed); test_cuda_ops.c on a GPU does. */
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" {
#include "check.h"
#include "cresnet/backend.h"
}

#include "backend/cuda_emulation.h"
#include "cuda_bn.cuh"

/* ---- the ops, launched as cuda_kernels.cu launches them ---- */

static long ceil_div(long a, long b) { return (a + b - 1) / b; }
static dim3 tile_grid(long rows, long per_block, int C) {
    return dim3((unsigned)ceil_div(rows, per_block), (unsigned)ceil_div(C, TILE_C));
}
static const dim3 tile_block(TILE_C, TILE_ROWS);

template <typename T> static bool vec_shape(int C) {
    const int vec = vec_len<T>::value, groups = C / vec;
    return C % vec == 0 && groups <= VEC_THREADS && VEC_THREADS % groups == 0;
}

/* chunk_sums_final's arithmetic in its order, on the host: the kernel
 * itself runs (test_chunk_sums_final) on a few shapes only, since it is the
 * same for both forms and its 2C blocks of fibers are slow to emulate. */
static std::vector<float> final_sums(const std::vector<double> &partials, long chunks, int C,
                                     const float *scale) {
    std::vector<float> sums(2 * C);
    for (int col = 0; col < 2 * C; col++) {
        double lane[FINAL_THREADS];
        for (int t = 0; t < FINAL_THREADS; t++) {
            lane[t] = 0.0;
            for (long k = t; k < chunks; k += FINAL_THREADS) lane[t] += partials[k * 2 * C + col];
        }
        for (int half = FINAL_THREADS / 2; half > 0; half /= 2)
            for (int t = 0; t < half; t++) lane[t] += lane[t + half];
        double v = lane[0];
        if (scale && col < C) v *= scale[col];
        sums[col] = (float)v;
    }
    return sums;
}

static void test_chunk_sums_final(long chunks, int C) {
    std::vector<double> partials(2 * C * chunks);
    for (size_t i = 0; i < partials.size(); i++) partials[i] = sin((double)i) * 1e3;
    std::vector<float> scale(C, 0.5f), got(2 * C);
    LAUNCH(dim3(2 * C), dim3(FINAL_THREADS),
           chunk_sums_final(partials.data(), chunks, C, scale.data(), got.data()));
    std::vector<float> want = final_sums(partials, chunks, C, scale.data());
    CHECK(got == want, "chunk_sums_final chunks=%ld C=%d", chunks, C);
}

template <typename T>
static std::vector<float> sums_op(bool vec, const T *x, long rows, int C, const float *shift) {
    const long per_chunk = vec ? vec_chunk_rows(C, vec_len<T>::value) : CHUNK_ROWS;
    const long chunks = ceil_div(rows, per_chunk);
    std::vector<double> partials(2 * C * chunks, NAN);
    if (vec)
        LAUNCH(dim3(chunks), dim3(VEC_THREADS),
               bn_sums_partial_vec<T>(x, rows, C, shift, partials.data()));
    else
        LAUNCH(tile_grid(rows, CHUNK_ROWS, C), tile_block,
               bn_sums_partial<T>(x, rows, C, shift, partials.data()));
    return final_sums(partials, chunks, C, nullptr);
}

template <typename T>
static void apply_op(bool vec, const cr_bn_view &bn, const T *x, const T *res, int relu, T *y) {
    if (vec)
        LAUNCH_PLAIN(dim3(ceil_div(bn.rows, vec_apply_rows(bn.channels, vec_len<T>::value))),
                     dim3(VEC_THREADS), bn_apply_vec_kernel<T>(bn, x, res, relu, y));
    else
        LAUNCH_PLAIN(tile_grid(bn.rows, APPLY_ROWS, bn.channels), tile_block,
                     bn_apply_kernel<T>(bn, x, res, relu, y));
}

template <typename T>
static std::vector<float> backward_sums_op(bool vec, const cr_bn_view &bn, const T *x, const T *y,
                                           const T *dy, const T *dy2, int relu) {
    const int C = bn.channels;
    const long per_chunk = vec ? vec_chunk_rows(C, vec_len<T>::value) : CHUNK_ROWS;
    const long chunks = ceil_div(bn.rows, per_chunk);
    std::vector<double> partials(2 * C * chunks, NAN);
    if (vec)
        LAUNCH(dim3(chunks), dim3(VEC_THREADS),
               bn_backward_sums_partial_vec<T>(bn, x, y, dy, dy2, relu, partials.data()));
    else
        LAUNCH(tile_grid(bn.rows, CHUNK_ROWS, C), tile_block,
               bn_backward_sums_partial<T>(bn, x, y, dy, dy2, relu, partials.data()));
    return final_sums(partials, chunks, C, bn.invstd);
}

template <typename T>
static void backward_apply_op(bool vec, const cr_bn_view &bn, const T *x, const T *y, const T *dy,
                              const T *dy2, int relu, const float *sums, double count, int training,
                              T *dx, T *dres) {
    if (vec)
        LAUNCH_PLAIN(dim3(ceil_div(bn.rows, vec_apply_rows(bn.channels, vec_len<T>::value))),
                     dim3(VEC_THREADS),
                     bn_backward_apply_vec_kernel<T>(bn, x, y, dy, dy2, relu, sums, count, training,
                                                     dx, dres));
    else
        LAUNCH_PLAIN(
            tile_grid(bn.rows, APPLY_ROWS, bn.channels), tile_block,
            bn_backward_apply_kernel<T>(bn, x, y, dy, dy2, relu, sums, count, training, dx, dres));
}

/* ---- one case: both forms against the CPU backend ---- */

static float to_float(float v) { return v; }
static float to_float(cr_bf16 v) { return cr_bf16_to_float(v); }
static void from_float(float v, float *out) { *out = v; }
static void from_float(float v, cr_bf16 *out) { *out = cr_bf16_from_float(v); }
/* A NaN to fill outputs with: every element must be written. */
template <typename T> static T sentinel() {
    T v;
    from_float(NAN, &v);
    return v;
}

/* Deterministic values in [-scale, scale) + offset, stored as T (and the
 * floats they stand for, for the CPU). */
template <typename T> struct tensor {
    std::vector<T> stored;
    std::vector<float> value;
    tensor(size_t n, float scale, float offset, uint32_t seed) : stored(n), value(n) {
        uint32_t s = seed * 2654435761u + 1;
        for (size_t i = 0; i < n; i++) {
            s = s * 1664525u + 1013904223u;
            float v = offset + scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
            from_float(v, &stored[i]);
            value[i] = to_float(stored[i]);
        }
    }
};

/* check.h's, on vectors of one length. */
static double relative_l2(const std::vector<float> &a, const std::vector<float> &ref) {
    return a.size() == ref.size() ? relative_l2(a.data(), ref.data(), ref.size()) : INFINITY;
}

template <typename T> static std::vector<float> floats_of(const std::vector<T> &v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); i++) out[i] = to_float(v[i]);
    return out;
}

/* Elements where |got - ref| > rel |ref| + abs (NaN counts): 0 expected. */
static long off_elements(const std::vector<float> &got, const std::vector<float> &ref, double rel,
                         double abs) {
    long off = 0;
    for (size_t i = 0; i < ref.size(); i++)
        off += !(fabs((double)got[i] - ref[i]) <= rel * fabs((double)ref[i]) + abs);
    return off;
}

/* What a form produced: the sums and the elementwise outputs. */
template <typename T> struct outputs {
    std::vector<float> sums, backward_sums;
    std::vector<T> y, dx, dres;
};

template <typename T> struct bn_case {
    long rows;
    int C, relu, residual, training;
    const char *type;
    cr_backend *cpu;
};

template <typename T> struct bn_inputs {
    tensor<T> x, res, dy_a, dy_b;
    tensor<float> gamma, beta, shift;
    bn_inputs(size_t n, int C)
        : x(n, 2.0f, 3.0f, 1), res(n, 1.0f, 0.0f, 2), dy_a(n, 1.0f, 0.0f, 3),
          dy_b(n, 1.0f, 0.0f, 4), gamma(C, 0.5f, 1.0f, 5), beta(C, 0.5f, 0.0f, 6),
          shift(C, 1.0f, 3.0f, 7) {}
};

/* One form's forward: the sums and y. */
template <typename T>
static outputs<T> forward_form(bool vec, const bn_case<T> &k, const bn_inputs<T> &in,
                               const cr_bn_view &bn) {
    outputs<T> o;
    o.sums = sums_op<T>(vec, in.x.stored.data(), k.rows, k.C, in.shift.value.data());
    o.y.assign((size_t)k.rows * k.C, sentinel<T>());
    apply_op<T>(vec, bn, in.x.stored.data(), k.residual ? in.res.stored.data() : nullptr, k.relu,
                o.y.data());
    return o;
}

/* Its backward from its own y, with `grads` as the sums backward_apply
 * takes. With a residual, as the model's second BN of a block: dx written
 * over dy, the residual's gradient over dy2. Without, as its first: no dy2,
 * no residual gradient, dx into a buffer of NaNs. */
template <typename T>
static void backward_form(bool vec, const bn_case<T> &k, const bn_inputs<T> &in,
                          const cr_bn_view &bn, const float *grads, outputs<T> *o) {
    const size_t n = (size_t)k.rows * k.C;
    const T *dy2 = k.residual ? in.dy_b.stored.data() : nullptr;
    o->backward_sums = backward_sums_op<T>(vec, bn, in.x.stored.data(), o->y.data(),
                                           in.dy_a.stored.data(), dy2, k.relu);
    o->dx = k.residual ? in.dy_a.stored : std::vector<T>(n, sentinel<T>());
    o->dres = in.dy_b.stored;
    const T *dy = k.residual ? o->dx.data() : in.dy_a.stored.data();
    backward_apply_op<T>(vec, bn, in.x.stored.data(), o->y.data(), dy,
                         k.residual ? o->dres.data() : nullptr, k.relu, grads, (double)k.rows,
                         k.training, o->dx.data(), k.residual ? o->dres.data() : nullptr);
}

/* The CPU backend's backward on a form's own y (its ReLU mask), from the
 * same inputs: the reference for that form's backward outputs. */
template <typename T> struct cpu_backward { std::vector<float> grads, dx, dres; };

template <typename T>
static cpu_backward<T> backward_on_cpu(const bn_case<T> &k, const bn_inputs<T> &in,
                                       const cr_bn_view &view, const std::vector<float> &y) {
    const size_t n = (size_t)k.rows * k.C;
    cpu_backward<T> r{std::vector<float>(2 * k.C), std::vector<float>(n), std::vector<float>(n)};
    const float *dy2 = k.residual ? in.dy_b.value.data() : nullptr;
    cr_backend *cpu = k.cpu;
    cpu->ops->bn_backward_sums(cpu, &view, in.x.value.data(), y.data(), in.dy_a.value.data(), dy2,
                               k.relu, r.grads.data());
    cpu->ops->bn_backward_apply(cpu, &view, in.x.value.data(), y.data(), in.dy_a.value.data(), dy2,
                                k.relu, r.grads.data(), (double)k.rows, k.training, r.dx.data(),
                                k.residual ? r.dres.data() : nullptr);
    return r;
}

template <typename T> static void test_case(const bn_case<T> &k) {
    const size_t n = (size_t)k.rows * k.C;
    const int C = k.C;
    char what[112];
    snprintf(what, sizeof what, "%s rows=%ld C=%d relu=%d residual=%d training=%d", k.type, k.rows,
             C, k.relu, k.residual, k.training);
    bn_inputs<T> in(n, C);

    /* The CPU backend's statistics and apply, from the same inputs. */
    cr_backend *cpu = k.cpu;
    std::vector<float> sums(2 * C), stats(2 * C), rm = in.shift.value, rv(C, 1.0f), y(n);
    cpu->ops->bn_sums(cpu, in.x.value.data(), k.rows, C, in.shift.value.data(), sums.data());
    cpu->ops->bn_finalize(cpu, sums.data(), (double)k.rows, C, rm.data(), 1e-5f, 0.1f, stats.data(),
                          stats.data() + C, rm.data(), rv.data());
    cr_bn_view view = {
        k.rows, C, stats.data(), stats.data() + C, in.gamma.value.data(), in.beta.value.data()};
    cpu->ops->bn_apply(cpu, &view, in.x.value.data(), k.residual ? in.res.value.data() : nullptr,
                       k.relu, y.data());

    /* Finalize and the running-statistics form, from the CPU's sums. */
    std::vector<float> stats_gpu(2 * C), rm_gpu = in.shift.value, rv_gpu(C, 1.0f);
    LAUNCH_PLAIN(dim3((unsigned)ceil_div(C, 256)), dim3(256),
                 bn_finalize_kernel(sums.data(), (double)k.rows, C, rm_gpu.data(), 1e-5f, 0.1f,
                                    stats_gpu.data(), stats_gpu.data() + C, rm_gpu.data(),
                                    rv_gpu.data()));
    CHECK(relative_l2(stats_gpu, stats) <= 1e-6 && relative_l2(rm_gpu, rm) <= 1e-6 &&
              relative_l2(rv_gpu, rv) <= 1e-6,
          "%s: bn_finalize", what);
    std::vector<float> eval_cpu(2 * C), eval_gpu(2 * C);
    cpu->ops->bn_running_stats(cpu, rm.data(), rv.data(), C, 1e-5f, eval_cpu.data(),
                               eval_cpu.data() + C);
    LAUNCH_PLAIN(dim3((unsigned)ceil_div(C, 256)), dim3(256),
                 bn_running_stats_kernel(rm.data(), rv.data(), C, 1e-5f, eval_gpu.data(),
                                         eval_gpu.data() + C));
    CHECK(relative_l2(eval_gpu, eval_cpu) <= 1e-6, "%s: bn_running_stats", what);

    /* Per element: a float result may differ from the CPU's in its last
     * bits (FMA contraction there); a bf16 one by its rounding, 2^-9. */
    const double rel = sizeof(T) == 2 ? 1.0 / 128 : 1e-5, abs = 1e-5;
    const int forms = vec_shape<T>(C) ? 2 : 1;
    outputs<T> got[2];
    for (int f = 0; f < forms; f++) {
        const bool vec = f == 1;
        const char *form = vec ? "vec" : "scalar";
        got[f] = forward_form<T>(vec, k, in, view);
        const cpu_backward<T> ref = backward_on_cpu<T>(k, in, view, floats_of(got[f].y));
        backward_form<T>(vec, k, in, view, ref.grads.data(), &got[f]);
        CHECK(relative_l2(got[f].sums, sums) <= 1e-4, "%s %s: bn_sums", what, form);
        CHECK(off_elements(floats_of(got[f].y), y, rel, abs) == 0, "%s %s: bn_apply", what, form);
        CHECK(relative_l2(got[f].backward_sums, ref.grads) <= 1e-4, "%s %s: bn_backward_sums", what,
              form);
        CHECK(off_elements(floats_of(got[f].dx), ref.dx, rel, abs) == 0, "%s %s: dx", what, form);
        if (k.residual)
            CHECK(off_elements(floats_of(got[f].dres), ref.dres, rel, abs) == 0,
                  "%s %s: d_residual", what, form);
    }
    /* Here, with no FMA contraction, the forms' arithmetic is the same, so
     * their outputs are too (on a GPU nvcc may contract each differently:
     * test_cuda_ops.c compares each with the CPU instead). */
    if (forms == 2) {
        CHECK(got[0].y == got[1].y, "%s: y differs between the forms", what);
        CHECK(got[0].dx == got[1].dx, "%s: dx differs between the forms", what);
        CHECK(got[0].dres == got[1].dres, "%s: d_residual differs between the forms", what);
    }
}

int main() {
    pool = new block_runner;
    cr_backend *cpu = cr_backend_cpu_create(1, CR_MATH_FP32);
    /* Shapes at both forms' edges: one vector a row (C 4 fp32, 8 bf16),
     * one row lane a block (1024 fp32, 2048 bf16), chunks under 256 rows
     * (C >= 512), rows fewer than the lanes, and shapes only the scalar form
     * takes (C 5, 48; 2048 in fp32). */
    const struct {
        long rows;
        int C;
    } shapes[] = {{37, 16}, {300, 64}, {100, 4},  {100, 8}, {3, 5},
                  {50, 48}, {70, 512}, {9, 1024}, {5, 2048}};
    for (const auto &s : shapes)
        for (int relu = 0; relu < 2; relu++) {
            test_case<float>({s.rows, s.C, relu, relu, 1 - relu, "fp32", cpu});
            test_case<cr_bf16>({s.rows, s.C, relu, 1 - relu, relu, "bf16", cpu});
        }
    test_chunk_sums_final(1, 3);
    test_chunk_sums_final(300, 16);
    test_chunk_sums_final(7, 64);
    cpu->ops->destroy(cpu);
    delete pool;
    return check_finish();
}
