/* The CUDA backend's device code other than BatchNorm's (cuda_kernels.cu
 * launches it): global average pooling, float <-> bfloat16, the linear
 * layer's bias, softmax cross-entropy, SGD, scale and the batch
 * augmentation of device-resident images. Each kernel follows its CPU
 * backend op (src/backend/cpu) operation for operation.
 *
 * A header, as cuda_bn.cuh is, so that tests/backend/test_cuda_ops_emulated.cc
 * runs this very source on the CPU in CI. The same rule holds: only the
 * built-ins tests/backend/cuda_emulation.h stands in for (threadIdx,
 * blockIdx, blockDim, __syncthreads, __shared__, the IEEE-rounded
 * __fadd_rn/__fsub_rn/__fmul_rn/__fdiv_rn); no warp intrinsics, no atomics.
 * Needs cresnet/backend.h before it. */
#ifndef CRESNET_CUDA_OPS_CUH
#define CRESNET_CUDA_OPS_CUH

#include "cuda_activations.cuh"

namespace {

constexpr int THREADS = 256; /* a block of the 1-D kernels */

/* ---- head ---- */

/* y[n][c] = mean over p of x[n][p][c]: one thread per (n, c), adding in p
 * order as the CPU backend does. */
template <typename T>
__global__ void avgpool_forward_kernel(const T *x, int batch, int hw, int C, float *y) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)batch * C) return;
    const long n = i / C;
    const int c = (int)(i % C);
    const T *column = x + n * hw * C + c;
    float acc = 0.0f;
    for (int p = 0; p < hw; p++) acc += load(column, (long)p * C);
    y[i] = acc / (float)hw;
}

template <typename T>
__global__ void avgpool_backward_kernel(const float *dy, int batch, int hw, int C, T *dx) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)batch * hw * C) return;
    const long n = i / ((long)hw * C);
    const int c = (int)(i % C);
    store(dx, i, dy[n * C + c] / (float)hw);
}

/* Between float and bfloat16: the network's input images and the bf16
 * copies of the weights going in, the weight gradients coming out. */
__global__ void to_bf16_kernel(const float *x, size_t n, cr_bf16 *y) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cr_bf16_from_float(x[i]);
}

__global__ void from_bf16_kernel(const cr_bf16 *x, size_t n, float *y) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cr_bf16_to_float(x[i]);
}

__global__ void add_bias_kernel(float *y, const float *b, int batch, int out) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)batch * out) return;
    y[i] += b[i % out];
}

/* db[o] = sum over n of dy[n][o], in n order. */
__global__ void bias_grad_kernel(const float *dy, int batch, int out, float *db) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= out) return;
    float acc = 0.0f;
    for (int n = 0; n < batch; n++) acc += dy[(long)n * out + o];
    db[o] = acc;
}

/* ---- loss ---- */

constexpr int XENT_THREADS = 256;

/* One block: thread t takes samples t, t + XENT_THREADS, ... in double as
 * cpu_softmax_xent does, and the per-thread losses meet in a fixed tree. */
__global__ void softmax_xent_kernel(const float *logits, const int32_t *labels, int batch,
                                    int classes, float grad_scale, float *dlogits, float *loss_sum,
                                    int32_t *predicted) {
    __shared__ double lane[XENT_THREADS];
    __shared__ int hits[XENT_THREADS];
    const int t = threadIdx.x;
    double total = 0.0;
    int correct = 0;
    for (int n = t; n < batch; n += XENT_THREADS) {
        const float *z = logits + (long)n * classes;
        const int label = labels[n];
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (z[k] > z[best]) best = k;
        double denom = 0.0;
        for (int k = 0; k < classes; k++) denom += exp((double)z[k] - z[best]);
        const double log_denom = log(denom) + z[best];
        total += log_denom - z[label];
        predicted[n] = best;
        correct += best == label;
        if (!dlogits) continue;
        for (int k = 0; k < classes; k++) {
            double p = exp((double)z[k] - log_denom);
            dlogits[(long)n * classes + k] = (float)((p - (k == label)) * grad_scale);
        }
    }
    lane[t] = total;
    hits[t] = correct;
    __syncthreads();
    for (int half = XENT_THREADS / 2; half > 0; half /= 2) {
        if (t < half) lane[t] += lane[t + half], hits[t] += hits[t + half];
        __syncthreads();
    }
    if (t == 0) loss_sum[0] = (float)lane[0], loss_sum[1] = (float)hits[0];
}

/* ---- optimizer ---- */

/* cpu_sgd_step's operations in its order, each rounded on its own (__fmul_rn
 * and __fadd_rn are never contracted into an FMA, and the CPU build does not
 * contract either), so both backends take bitwise the same step. */
__global__ void sgd_kernel(float *params, const float *grads, float *momentum_buf, size_t n,
                           cr_sgd_args args) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float lr = args.schedule ? args.schedule[0] : args.lr;
    const float mu = args.schedule ? args.schedule[1] : args.momentum;
    const float wd = args.weight_decay, keep = 1.0f - args.dampening;
    float g = grads[i];
    if (wd != 0.0f) g = __fadd_rn(g, __fmul_rn(wd, params[i]));
    if (mu != 0.0f) {
        float buf = __fadd_rn(__fmul_rn(momentum_buf[i], mu), __fmul_rn(keep, g));
        momentum_buf[i] = buf;
        g = args.nesterov ? __fadd_rn(g, __fmul_rn(mu, buf)) : buf;
    }
    params[i] = __fadd_rn(params[i], __fmul_rn(-lr, g));
}

__global__ void scale_kernel(float *x, size_t n, float alpha) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= alpha;
}

/* ---- data ---- */

struct channel_constants {
    float mean[3], std[3];
};

/* One thread per output pixel, its three channels. The integer transform
 * picks the source pixel exactly as on the host (backend.h), and the
 * normalisation is cr_augment_image's expression with each operation
 * rounded as IEEE (__fdiv_rn, __fsub_rn: no fast-math reciprocal), so the
 * batch equals the CPU path's bit for bit. */
__global__ void augment_batch_kernel(const uint8_t *pixels, const cr_image_transform *transforms,
                                     int n, channel_constants k, float *images) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n * 1024) return;
    const long image = i / 1024;
    const int x = (int)(i % 32), y = (int)(i / 32 % 32);
    const cr_image_transform t = transforms[image];
    const int src = cr_image_transform_source(&t, x, y);
    const uint8_t *planes = pixels + (size_t)t.sample * 3072;
    for (int c = 0; c < 3; c++) {
        const float v = src < 0 ? 0.0f : (float)planes[c * 1024 + src];
        images[i * 3 + c] = __fdiv_rn(__fsub_rn(__fdiv_rn(v, 255.0f), k.mean[c]), k.std[c]);
    }
}

} // namespace

#endif
