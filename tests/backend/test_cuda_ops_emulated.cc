/* The CUDA backend's device code other than BatchNorm's
 * (src/backend/cuda/cuda_ops.cuh), the very source, run on the CPU so that
 * CI checks it without a GPU (cuda_emulation.h stands in for CUDA's
 * built-ins). Each kernel is launched as cuda_kernels.cu launches it and
 * compared with what it copies: the CPU backend's op, or for the batch
 * augmentation the data module's cr_augment_image. Here, with the host's
 * exp and log and no FMA contraction, each kernel's arithmetic is its
 * reference's, so the outputs must agree bit for bit; only the loss sum,
 * added in another order, may differ in its last bits. On a GPU
 * (test_cuda_ops.c) the device's exp and log may differ in their last bits,
 * so there the loss gradient is compared within a tolerance instead.
 * Every output buffer has guard elements after it that must come back
 * untouched, and starts out NaN, so an element left unwritten shows. */
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" {
#include "check.h"
#include "cresnet/backend.h"
#include "cresnet/data.h"
}

#include "backend/cuda_emulation.h"
#include "cuda_ops.cuh"

/* ---- buffers ---- */

static long ceil_div(long a, long b) { return (a + b - 1) / b; }

/* A 1-D launch of n threads in blocks of THREADS, as cuda_kernels.cu's. */
#define LAUNCH_1D(n, call)                                                                         \
    LAUNCH_PLAIN(dim3((unsigned)ceil_div((long)(n), THREADS)), dim3(THREADS), call)

constexpr size_t GUARD = 64;

/* n elements that a kernel writes, then GUARD it must not touch, all
 * starting as `fill`. */
template <typename T> struct guarded {
    std::vector<T> all;
    size_t n;
    T fill;
    guarded(size_t count, T value) : all(count + GUARD, value), n(count), fill(value) {}
    T *data() { return all.data(); }
    bool guard_intact() const {
        for (size_t i = n; i < all.size(); i++)
            if (memcmp(&all[i], &fill, sizeof(T)) != 0) return false;
        return true;
    }
};

static float nan_float() { return NAN; }
static cr_bf16 nan_bf16() { return cr_bf16_from_float(NAN); }

/* Elements whose bits differ (so NaN = NaN, and -0 != +0). */
template <typename T> static size_t differing(const T *got, const T *want, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += memcmp(&got[i], &want[i], sizeof(T)) != 0;
    return count;
}

static std::vector<float> random_floats(size_t n, float scale, uint32_t object) {
    std::vector<float> v(n);
    fill_random(v.data(), n, scale, object);
    return v;
}

/* Values as a bf16 backend holds them: rounded to bfloat16. */
static std::vector<cr_bf16> to_bf16(const std::vector<float> &x) {
    std::vector<cr_bf16> out(x.size());
    for (size_t i = 0; i < x.size(); i++) out[i] = cr_bf16_from_float(x[i]);
    return out;
}
static std::vector<float> to_float(const std::vector<cr_bf16> &x) {
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); i++) out[i] = cr_bf16_to_float(x[i]);
    return out;
}

/* ---- head ---- */

/* Pooling of float activations and of bf16 ones (the CPU's reference runs
 * on the bf16 values as floats; its dx is then rounded as act_store does). */
static void test_avgpool(cr_backend *cpu, int batch, int hw, int C) {
    const size_t n_in = (size_t)batch * hw * C, n_out = (size_t)batch * C;
    const std::vector<float> x = random_floats(n_in, 2.0f, 1);
    const std::vector<cr_bf16> x16 = to_bf16(x);
    const std::vector<float> x16_values = to_float(x16), dy = random_floats(n_out, 1.0f, 2);
    char what[64];
    snprintf(what, sizeof what, "avgpool batch=%d hw=%d C=%d", batch, hw, C);

    std::vector<float> y_ref(n_out), y16_ref(n_out), dx_ref(n_in);
    cpu->ops->avgpool_forward(cpu, x.data(), batch, hw, C, y_ref.data());
    cpu->ops->avgpool_forward(cpu, x16_values.data(), batch, hw, C, y16_ref.data());
    cpu->ops->avgpool_backward(cpu, dy.data(), batch, hw, C, dx_ref.data());
    const std::vector<cr_bf16> dx16_ref = to_bf16(dx_ref);

    guarded<float> y(n_out, nan_float()), y16(n_out, nan_float()), dx(n_in, nan_float());
    guarded<cr_bf16> dx16(n_in, nan_bf16());
    LAUNCH_1D(n_out, avgpool_forward_kernel<float>(x.data(), batch, hw, C, y.data()));
    LAUNCH_1D(n_out, avgpool_forward_kernel<cr_bf16>(x16.data(), batch, hw, C, y16.data()));
    LAUNCH_1D(n_in, avgpool_backward_kernel<float>(dy.data(), batch, hw, C, dx.data()));
    LAUNCH_1D(n_in, avgpool_backward_kernel<cr_bf16>(dy.data(), batch, hw, C, dx16.data()));
    CHECK(differing(y.data(), y_ref.data(), n_out) == 0 && y.guard_intact(), "%s: forward fp32",
          what);
    CHECK(differing(y16.data(), y16_ref.data(), n_out) == 0 && y16.guard_intact(),
          "%s: forward bf16", what);
    CHECK(differing(dx.data(), dx_ref.data(), n_in) == 0 && dx.guard_intact(), "%s: backward fp32",
          what);
    CHECK(differing(dx16.data(), dx16_ref.data(), n_in) == 0 && dx16.guard_intact(),
          "%s: backward bf16", what);
}

/* Both ways between float and bfloat16, special values and rounding ties
 * included. */
static void test_bf16_conversions() {
    std::vector<float> x = random_floats(1000, 100.0f, 3);
    const float specials[] = {0.0f,
                              -0.0f,
                              INFINITY,
                              -INFINITY,
                              NAN,
                              1e-40f,
                              -1e-40f,
                              FLT_MAX,
                              -FLT_MAX,
                              1.00390625f,
                              1.01171875f,
                              3.0e38f,
                              1.0f + 1.0f / 256.0f,
                              -1.0f - 3.0f / 512.0f};
    x.insert(x.end(), std::begin(specials), std::end(specials));
    const size_t n = x.size();
    const std::vector<cr_bf16> want = to_bf16(x);
    guarded<cr_bf16> got(n, nan_bf16());
    LAUNCH_1D(n, to_bf16_kernel(x.data(), n, got.data()));
    CHECK(differing(got.data(), want.data(), n) == 0 && got.guard_intact(),
          "float -> bf16 = cr_bf16_from_float (%zu values)", n);
    const std::vector<float> back_want = to_float(want);
    guarded<float> back(n, nan_float());
    LAUNCH_1D(n, from_bf16_kernel(want.data(), n, back.data()));
    CHECK(differing(back.data(), back_want.data(), n) == 0 && back.guard_intact(),
          "bf16 -> float = cr_bf16_to_float");
}

/* The linear layer's bias: cuBLAS gives the products, the kernels add the
 * bias and its gradient. The CPU's forward with a zero bias stands for
 * cuBLAS's products (+ 0 changes nothing but -0). */
static void test_linear_bias(cr_backend *cpu, int batch, int in, int out) {
    const std::vector<float> x = random_floats((size_t)batch * in, 1.0f, 4),
                             w = random_floats((size_t)out * in, 1.0f, 5),
                             b = random_floats(out, 1.0f, 6), zero(out, 0.0f),
                             dy = random_floats((size_t)batch * out, 1.0f, 7);
    const size_t n = (size_t)batch * out;
    std::vector<float> want(n), dx(x.size()), dw(w.size()), db_want(out);
    guarded<float> y(n, nan_float()), db(out, nan_float());
    cpu->ops->linear_forward(cpu, x.data(), w.data(), zero.data(), batch, in, out, y.data());
    cpu->ops->linear_forward(cpu, x.data(), w.data(), b.data(), batch, in, out, want.data());
    cpu->ops->linear_backward(cpu, x.data(), w.data(), dy.data(), batch, in, out, dx.data(),
                              dw.data(), db_want.data());
    LAUNCH_1D(n, add_bias_kernel(y.data(), b.data(), batch, out));
    LAUNCH_1D(out, bias_grad_kernel(dy.data(), batch, out, db.data()));
    CHECK(differing(y.data(), want.data(), n) == 0 && y.guard_intact(),
          "linear batch=%d out=%d: bias added", batch, out);
    CHECK(differing(db.data(), db_want.data(), out) == 0 && db.guard_intact(),
          "linear batch=%d out=%d: bias gradient", batch, out);
}

/* ---- loss ---- */

/* One block of XENT_THREADS fibers (the kernel has barriers). Batches under
 * and over the block's size; logits with ties (the first maximum wins);
 * with and without the gradient. */
static void test_softmax_xent(cr_backend *cpu, int batch, int classes, bool with_grad) {
    std::vector<float> logits = random_floats((size_t)batch * classes, 4.0f, 8);
    for (int k = 0; k < batch; k += 7)
        logits[(size_t)k * classes + classes - 1] = logits[(size_t)k * classes];
    std::vector<int32_t> labels(batch);
    for (int i = 0; i < batch; i++) labels[i] = (int32_t)(cr_rng_u32(5, 8, (uint64_t)i) % classes);
    const size_t n = (size_t)batch * classes;
    const float scale = 1.0f / (float)batch;
    std::vector<float> dl_want(n), loss_want(2);
    std::vector<int32_t> pred_want(batch);
    cpu->ops->softmax_xent(cpu, logits.data(), labels.data(), batch, classes, scale,
                           with_grad ? dl_want.data() : nullptr, loss_want.data(),
                           pred_want.data());
    guarded<float> dl(n, nan_float()), loss(2, nan_float());
    guarded<int32_t> pred(batch, -1);
    LAUNCH(dim3(1), dim3(XENT_THREADS),
           softmax_xent_kernel(logits.data(), labels.data(), batch, classes, scale,
                               with_grad ? dl.data() : nullptr, loss.data(), pred.data()));
    char what[80];
    snprintf(what, sizeof what, "softmax_xent batch=%d classes=%d grad=%d", batch, classes,
             with_grad);
    CHECK(differing(pred.data(), pred_want.data(), batch) == 0 && pred.guard_intact(),
          "%s: predictions", what);
    CHECK(loss.data()[1] == loss_want[1] && loss.guard_intact(), "%s: correct %g (cpu %g)", what,
          loss.data()[1], loss_want[1]);
    CHECK(fabs((double)loss.data()[0] - loss_want[0]) <= 1e-6 * fabs((double)loss_want[0]),
          "%s: loss sum %.9g (cpu %.9g)", what, loss.data()[0], loss_want[0]);
    if (with_grad)
        CHECK(differing(dl.data(), dl_want.data(), n) == 0 && dl.guard_intact(),
              "%s: gradient bit for bit", what);
}

/* ---- optimizer ---- */

/* Three steps of each variant from the same start, bit for bit with
 * cpu_sgd_step; the last variant reads lr and momentum from memory, as a
 * recorded step does. */
static void test_sgd(cr_backend *cpu) {
    const size_t n = 1000;
    const float schedule[2] = {0.05f, 0.8f};
    const cr_sgd_args variants[] = {
        {0.1f, 0.9f, 0.0f, 5e-4f, 1, nullptr}, {0.1f, 0.9f, 0.0f, 5e-4f, 0, nullptr},
        {0.1f, 0.0f, 0.0f, 5e-4f, 0, nullptr}, {0.1f, 0.9f, 0.1f, 0.0f, 1, nullptr},
        {0.0f, 0.0f, 0.0f, 0.0f, 0, schedule},
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        const cr_sgd_args args = variants[v];
        std::vector<float> p_want = random_floats(n, 1.0f, 9), m_want(n, 0.0f);
        guarded<float> p(n, nan_float()), m(n, nan_float());
        std::copy(p_want.begin(), p_want.end(), p.all.begin());
        std::fill(m.all.begin(), m.all.begin() + n, 0.0f);
        for (int step = 0; step < 3; step++) {
            const std::vector<float> g = random_floats(n, 1.0f, 10 + step);
            cpu->ops->sgd_step(cpu, p_want.data(), g.data(), m_want.data(), n, &args);
            LAUNCH_1D(n, sgd_kernel(p.data(), g.data(), m.data(), n, args));
        }
        CHECK(differing(p.data(), p_want.data(), n) == 0 && p.guard_intact() &&
                  differing(m.data(), m_want.data(), n) == 0 && m.guard_intact(),
              "sgd variant %zu: parameters and momentum bit for bit after 3 steps", v);
    }
    std::vector<float> want = random_floats(n, 1.0f, 20);
    guarded<float> x(n, nan_float());
    std::copy(want.begin(), want.end(), x.all.begin());
    cpu->ops->scale(cpu, want.data(), n, 0.37f);
    LAUNCH_1D(n, scale_kernel(x.data(), n, 0.37f));
    CHECK(differing(x.data(), want.data(), n) == 0 && x.guard_intact(), "scale bit for bit");
}

/* ---- data ---- */

/* A batch of 40 images from 16 resident samples (each image reads another
 * place in the set), against cr_augment_image: bit for bit. */
static void test_augment_batch(const cr_augment &aug, int epoch) {
    constexpr int COUNT = 16, N = 40;
    std::vector<uint8_t> pixels((size_t)COUNT * CR_CIFAR_PIXELS);
    for (size_t i = 0; i < pixels.size(); i++) pixels[i] = (uint8_t)(cr_rng_u32(3, 81, i) >> 24);
    std::vector<cr_image_transform> transforms(N);
    std::vector<float> want((size_t)N * CR_CIFAR_PIXELS);
    for (int i = 0; i < N; i++) {
        const int sample = (i * 7 + 3) % COUNT;
        transforms[i] = cr_augment_transform(&aug, 17, epoch, (uint64_t)sample);
        cr_augment_image(pixels.data() + (size_t)sample * CR_CIFAR_PIXELS, &aug, 17, epoch,
                         (uint64_t)sample, want.data() + (size_t)i * CR_CIFAR_PIXELS);
    }
    channel_constants k;
    for (int c = 0; c < 3; c++) k.mean[c] = aug.mean[c], k.std[c] = aug.std[c];
    guarded<float> got(want.size(), nan_float());
    LAUNCH_1D((size_t)N * 1024,
              augment_batch_kernel(pixels.data(), transforms.data(), N, k, got.data()));
    CHECK(differing(got.data(), want.data(), want.size()) == 0 && got.guard_intact(),
          "augment_batch pad=%d flip=%d rotate=%g epoch %d = cr_augment_image bit for bit",
          aug.crop_padding, aug.hflip, aug.rotate_deg, epoch);
}

int main() {
    pool = new block_runner;
    cr_backend *cpu = cr_backend_cpu_create(1, CR_MATH_FP32);
    /* ResNets' heads (8x8 maps of 64 and 256 channels) and odd sizes. */
    test_avgpool(cpu, 3, 64, 64);
    test_avgpool(cpu, 2, 64, 256);
    test_avgpool(cpu, 5, 7, 3);
    test_bf16_conversions();
    test_linear_bias(cpu, 37, 64, 10);
    test_linear_bias(cpu, 300, 5, 3);
    for (bool grad : {true, false}) {
        test_softmax_xent(cpu, 1, 10, grad);
        test_softmax_xent(cpu, 100, 10, grad);
        test_softmax_xent(cpu, 600, 10, grad);
    }
    test_softmax_xent(cpu, 257, 3, true);
    test_sgd(cpu);
    cr_augment aug = {2, 1, 5.0f, {0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
    test_augment_batch(aug, 6);
    aug.rotate_deg = 0.0f, aug.crop_padding = 4;
    test_augment_batch(aug, 2);
    aug.hflip = 0, aug.crop_padding = 0;
    test_augment_batch(aug, 0);
    cpu->ops->destroy(cpu);
    delete pool;
    return check_finish();
}
