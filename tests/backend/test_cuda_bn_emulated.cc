/* The CUDA backend's BatchNorm device code (src/backend/cuda/cuda_bn.cuh),
 * the very source, run on the CPU so that CI checks it without a GPU: each
 * CUDA thread of a block is a fiber, __syncthreads a switch back to the
 * block's scheduler, __shared__ a static (one block runs at a time). Every BN op is
 * launched as cuda_kernels.cu launches it, in both forms (one value per
 * thread, 16-byte vectors where the shape allows), for fp32 and bf16, and
 * compared with the CPU backend, the reference, as test_cuda_ops.c does on a
 * GPU; the two forms must also agree bit for bit on every elementwise
 * output, and the sums must come out the same on a second run.
 * What this cannot show: anything about the hardware (memory model, warps,
 * alignment faults, speed); test_cuda_ops.c on a GPU does. */
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <ucontext.h>
#include <vector>

extern "C" {
#include "check.h"
#include "cresnet/backend.h"
}

/* ---- CUDA's built-ins, as far as cuda_bn.cuh uses them ---- */

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct thread_index {
    unsigned x, y, z;
};
static thread_index threadIdx, blockIdx; /* of the fiber running */
static dim3 blockDim;                    /* one launch at a time */
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
static float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
static uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
static void __syncthreads();
#define __device__
#define __global__
#define __host__
#define __shared__ static
#define __launch_bounds__(...)

#include "cuda_bn.cuh"

/* ---- blocks of fibers ----
 *
 * A block's threads are fibers (ucontext) of this one thread, run in turn:
 * each runs until its next __syncthreads or its end, then the next; a round
 * ends when every thread has, so all have reached the barrier before any
 * goes past it, as on a GPU. One block at a time. */

class block_runner {
    static constexpr unsigned MAX_THREADS = 256;
    static constexpr size_t STACK_BYTES = 256 * 1024;
    struct fiber {
        ucontext_t context;
        char *stack;
        bool done;
        thread_index index;
    };
    ucontext_t scheduler_;
    fiber fibers_[MAX_THREADS];
    unsigned current_ = 0;
    bool plain_ = false; /* threads run one after another, no barrier allowed */
    const std::function<void()> *body_ = nullptr;

    static block_runner *self;
    static void fiber_main() {
        (*self->body_)();
        self->fibers_[self->current_].done = true; /* returns to scheduler_ (uc_link) */
    }

    /* getcontext "returns twice" in the compiler's eyes: kept apart from
     * the loops, whose variables it could otherwise clobber. */
    void prepare(fiber &f, unsigned t, dim3 block) {
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack;
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = &scheduler_;
        makecontext(&f.context, fiber_main, 0);
        f.done = false;
        f.index = {t % block.x, t / block.x, 0};
    }
    void run_block(dim3 block, unsigned n) {
        for (unsigned t = 0; t < n; t++) prepare(fibers_[t], t, block);
        for (bool running = true; running;) {
            running = false;
            for (current_ = 0; current_ < n; current_++) {
                fiber &f = fibers_[current_];
                if (f.done) continue;
                threadIdx = f.index;
                swapcontext(&scheduler_, &f.context);
                running |= !f.done;
            }
        }
    }

  public:
    block_runner() {
        self = this;
        for (fiber &f : fibers_) f.stack = new char[STACK_BYTES];
    }
    ~block_runner() {
        for (fiber &f : fibers_) delete[] f.stack;
    }
    void sync() {
        if (plain_) abort(); /* a kernel with a barrier launched with LAUNCH_PLAIN */
        swapcontext(&fibers_[current_].context, &scheduler_);
    }
    /* plain: the kernel has no __syncthreads, so its threads simply run in
     * turn (a context switch costs a system call). */
    void run(dim3 grid, dim3 block, const std::function<void()> &body, bool plain) {
        const unsigned n = block.x * block.y * block.z;
        if (n > MAX_THREADS || block.z != 1) abort();
        blockDim = block;
        body_ = &body;
        plain_ = plain;
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, 0};
                if (!plain) {
                    run_block(block, n);
                    continue;
                }
                for (unsigned t = 0; t < n; t++) {
                    threadIdx = {t % block.x, t / block.x, 0};
                    body();
                }
            }
    }
};
block_runner *block_runner::self;
static block_runner *pool;
static void __syncthreads() { pool->sync(); }

#define LAUNCH(grid, block, call) pool->run((grid), (block), [&] { call; }, false)
#define LAUNCH_PLAIN(grid, block, call) pool->run((grid), (block), [&] { call; }, true)

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
        LAUNCH(
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

static double relative_l2(const std::vector<float> &a, const std::vector<float> &ref) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < a.size(); i++) {
        err += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        norm += (double)ref[i] * ref[i];
    }
    return norm > 0 ? sqrt(err / norm) : sqrt(err);
}

template <typename T> static std::vector<float> floats_of(const std::vector<T> &v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); i++) out[i] = to_float(v[i]);
    return out;
}

/* What a form produced: the sums and the elementwise outputs. */
template <typename T> struct outputs {
    std::vector<float> sums, backward_sums;
    std::vector<T> y, dx, dres;
};

template <typename T> struct bn_case {
    long rows;
    int C, relu, residual;
    const char *type;
    cr_backend *cpu;
};

template <typename T>
static outputs<T> run_form(bool vec, const bn_case<T> &k, const tensor<T> &x, const tensor<T> &res,
                           const tensor<T> &dy_a, const tensor<T> &dy_b, const cr_bn_view &bn,
                           const float *shift, const float *cpu_grads) {
    const size_t n = (size_t)k.rows * k.C;
    outputs<T> o;
    o.sums = sums_op<T>(vec, x.stored.data(), k.rows, k.C, shift);
    o.y.assign(n, sentinel<T>());
    apply_op<T>(vec, bn, x.stored.data(), k.residual ? res.stored.data() : nullptr, k.relu,
                o.y.data());
    o.backward_sums = backward_sums_op<T>(vec, bn, x.stored.data(), o.y.data(), dy_a.stored.data(),
                                          dy_b.stored.data(), k.relu);
    /* As the model does: dx over dy, the residual's gradient over dy2. */
    o.dx = dy_a.stored;
    o.dres = dy_b.stored;
    backward_apply_op<T>(vec, bn, x.stored.data(), o.y.data(), o.dx.data(), o.dres.data(), k.relu,
                         cpu_grads, (double)k.rows, 1, o.dx.data(), o.dres.data());
    return o;
}

template <typename T> static void test_case(const bn_case<T> &k) {
    const size_t n = (size_t)k.rows * k.C;
    const int C = k.C;
    char what[96];
    snprintf(what, sizeof what, "%s rows=%ld C=%d relu=%d residual=%d", k.type, k.rows, C, k.relu,
             k.residual);
    tensor<T> x(n, 2.0f, 3.0f, 1), res(n, 1.0f, 0.0f, 2), dy_a(n, 1.0f, 0.0f, 3),
        dy_b(n, 1.0f, 0.0f, 4);
    tensor<float> gamma(C, 0.5f, 1.0f, 5), beta(C, 0.5f, 0.0f, 6), shift(C, 1.0f, 3.0f, 7);

    /* The CPU backend: statistics, apply, backward, with the same inputs. */
    cr_backend *cpu = k.cpu;
    std::vector<float> sums(2 * C), stats(2 * C), rm = shift.value, rv(C, 1.0f), y(n);
    cpu->ops->bn_sums(cpu, x.value.data(), k.rows, C, shift.value.data(), sums.data());
    cpu->ops->bn_finalize(cpu, sums.data(), (double)k.rows, C, rm.data(), 1e-5f, 0.1f, stats.data(),
                          stats.data() + C, rm.data(), rv.data());
    cr_bn_view view = {k.rows,           C, stats.data(), stats.data() + C, gamma.value.data(),
                       beta.value.data()};
    cpu->ops->bn_apply(cpu, &view, x.value.data(), k.residual ? res.value.data() : nullptr, k.relu,
                       y.data());
    std::vector<float> grads(2 * C), dx(n), dres(n);
    cpu->ops->bn_backward_sums(cpu, &view, x.value.data(), y.data(), dy_a.value.data(),
                               dy_b.value.data(), k.relu, grads.data());
    cpu->ops->bn_backward_apply(cpu, &view, x.value.data(), y.data(), dy_a.value.data(),
                                dy_b.value.data(), k.relu, grads.data(), (double)k.rows, 1,
                                dx.data(), dres.data());

    /* Finalize and the running-statistics form, from the CPU's sums. */
    std::vector<float> stats_gpu(2 * C), rm_gpu = shift.value, rv_gpu(C, 1.0f);
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

    /* Outputs stored as bf16 are 2^-9 off a float at most. */
    const double tol = sizeof(T) == 2 ? 2e-2 : 1e-5;
    const int forms = vec_shape<T>(C) ? 2 : 1;
    outputs<T> got[2];
    for (int f = 0; f < forms; f++) {
        const bool vec = f == 1;
        got[f] = run_form<T>(vec, k, x, res, dy_a, dy_b, view, shift.value.data(), grads.data());
        const char *form = vec ? "vec" : "scalar";
        CHECK(relative_l2(got[f].sums, sums) <= 1e-4, "%s %s: bn_sums", what, form);
        CHECK(relative_l2(floats_of(got[f].y), y) <= tol, "%s %s: bn_apply", what, form);
        /* The backward sums read the GPU's y, whose ReLU mask may differ
         * from the CPU's where y rounds to 0 in bf16: compare in fp32 only. */
        if (sizeof(T) == 4)
            CHECK(relative_l2(got[f].backward_sums, grads) <= 1e-4, "%s %s: bn_backward_sums", what,
                  form);
        CHECK(relative_l2(floats_of(got[f].dx), dx) <= tol, "%s %s: dx", what, form);
        CHECK(relative_l2(floats_of(got[f].dres), dres) <= tol, "%s %s: d_residual", what, form);
    }
    if (forms == 2) {
        CHECK(got[0].y == got[1].y, "%s: y differs between the forms", what);
        CHECK(got[0].dx == got[1].dx, "%s: dx differs between the forms", what);
        CHECK(got[0].dres == got[1].dres, "%s: d_residual differs between the forms", what);
        std::vector<float> again = sums_op<T>(true, x.stored.data(), k.rows, C, shift.value.data());
        CHECK(memcmp(again.data(), got[1].sums.data(), 2 * C * sizeof(float)) == 0,
              "%s: vec bn_sums not deterministic", what);
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
            test_case<float>({s.rows, s.C, relu, relu, "fp32", cpu});
            test_case<cr_bf16>({s.rows, s.C, relu, 1 - relu, "bf16", cpu});
        }
    test_chunk_sums_final(1, 3);
    test_chunk_sums_final(300, 16);
    test_chunk_sums_final(7, 64);
    cpu->ops->destroy(cpu);
    delete pool;
    return check_finish();
}
