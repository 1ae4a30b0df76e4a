/* The CUDA backend's own kernels and their launchers: BatchNorm (its device
 * code in cuda_bn.cuh), global average pooling, the linear layer (cuBLAS
 * GEMMs and a bias kernel), softmax cross-entropy, SGD and scale, and the
 * batch augmentation of images resident on the device. Same semantics,
 * formulas and operation order as the CPU backend (src/backend/cpu), which
 * the tests compare against.
 *
 * Activations are float or, in a bf16 backend, bfloat16 (cr_bf16, rounded
 * by backend.h's cr_bf16_from_float exactly as the CPU backend rounds):
 * the kernels that touch them are templates on the stored type T and do
 * their arithmetic in float either way. An activation is [rows, C] (NHWC).
 *
 * Determinism: every reduction has a fixed shape that depends only on the
 * tensor's size, never on the device, the launch or the scheduling, and uses
 * no atomics. Running the same op twice gives the same bits. */
#include "cuda.h"
#include "cuda_bn.cuh"

#include <math.h>
#include <stdint.h>

/* Launches a kernel on a stream and checks the launch; an error inside the
 * kernel surfaces at the next synchronising call (copy_to_host, synchronize). */
#define LAUNCH(kernel, grid, block, stream, ...)                                                   \
    do {                                                                                           \
        kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__);                                     \
        cudaError_t err_ = cudaGetLastError();                                                     \
        if (err_ != cudaSuccess)                                                                   \
            cuda_fail(__FILE__, __LINE__, "CUDA", "launch of " #kernel, cudaGetErrorString(err_)); \
    } while (0)

namespace {

constexpr int THREADS = 256; /* 1-D kernels */

cudaStream_t stream_of(cr_backend *be) { return cuda_ctx(be)->stream; }

unsigned blocks_for(size_t n, size_t per_block) {
    return (unsigned)((n + per_block - 1) / per_block);
}

dim3 tile_block() { return dim3(TILE_C, TILE_ROWS); }

/* Blocks along rows (x: up to 2^31-1 of them) and channel tiles (y). */
dim3 tile_grid(long rows, long rows_per_block, int channels) {
    return dim3(blocks_for((size_t)rows, (size_t)rows_per_block),
                blocks_for((size_t)channels, TILE_C));
}

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

/* Holds a stream for a while: what the host queues behind it meanwhile then
 * runs back to back (engine timing). */
__global__ void spin_kernel(long long nanoseconds) {
    const long long start = clock64();
    /* clock64 counts SM cycles; 2 per nanosecond covers every clock up to 2 GHz. */
    while (clock64() - start < 2 * nanoseconds) {
    }
}

} // namespace

/* ---- the ops ---- */

extern "C" {

static int is_bf16(const cr_backend *be) { return cr_activation_bytes(be) == 2; }

/* Launches the float or the bfloat16 instance of a template kernel; the
 * arguments name activations through A(ptr), which casts to the type. */
#define LAUNCH_ACT(kernel, grid, block, stream, ...)                                               \
    do {                                                                                           \
        if (bf16) {                                                                                \
            typedef cr_bf16 act;                                                                   \
            LAUNCH(kernel<act>, grid, block, stream, __VA_ARGS__);                                 \
        } else {                                                                                   \
            typedef float act;                                                                     \
            LAUNCH(kernel<act>, grid, block, stream, __VA_ARGS__);                                 \
        }                                                                                          \
    } while (0)
#define A(ptr) ((act *)(ptr))
#define CA(ptr) ((const act *)(ptr))

/* Values in one 16-byte vector of the backend's activations. */
static int vec_len_of(cr_backend *be) { return is_bf16(be) ? 8 : 4; }

/* Whether the 16-byte BatchNorm kernels take a tensor of C channels with
 * these buffers (NULL ones ignored), when CRESNET_CUDA_BN=vector asks for
 * them (cuda_context.bn_vector; the scalar kernels are the default). */
static int vec_fits(cr_backend *be, int C, const void *const *buffers, int count) {
    const int vec = vec_len_of(be), groups = C / vec;
    if (!cuda_ctx(be)->bn_vector || C % vec != 0 || groups > VEC_THREADS || VEC_THREADS % groups)
        return 0;
    for (int k = 0; k < count; k++)
        if ((uintptr_t)buffers[k] % 16 != 0) return 0;
    return 1;
}

void cuda_bn_sums(cr_backend *be, const void *x, long rows, int channels, const float *shift,
                  float *sums) {
    if (channels <= 0) return;
    const int bf16 = is_bf16(be);
    const void *buffers[] = {x};
    const int vec = vec_fits(be, channels, buffers, 1);
    const long per_chunk = vec ? vec_chunk_rows(channels, vec_len_of(be)) : CHUNK_ROWS;
    const long chunks = (rows + per_chunk - 1) / per_chunk;
    double *partials = cuda_partials(be, (size_t)chunks * 2 * channels);
    if (chunks > 0 && vec)
        LAUNCH_ACT(bn_sums_partial_vec, chunks, VEC_THREADS, stream_of(be), CA(x), rows, channels,
                   shift, partials);
    else if (chunks > 0)
        LAUNCH_ACT(bn_sums_partial, tile_grid(rows, CHUNK_ROWS, channels), tile_block(),
                   stream_of(be), CA(x), rows, channels, shift, partials);
    LAUNCH(chunk_sums_final, 2 * channels, FINAL_THREADS, stream_of(be), partials, chunks, channels,
           (const float *)NULL, sums);
}

void cuda_bn_finalize(cr_backend *be, const float *sums, double count, int channels,
                      const float *shift, float eps, float momentum, float *mean, float *invstd,
                      float *running_mean, float *running_var) {
    if (channels <= 0) return;
    LAUNCH(bn_finalize_kernel, blocks_for(channels, THREADS), THREADS, stream_of(be), sums, count,
           channels, shift, eps, momentum, mean, invstd, running_mean, running_var);
}

void cuda_bn_running_stats(cr_backend *be, const float *running_mean, const float *running_var,
                           int channels, float eps, float *mean, float *invstd) {
    if (channels <= 0) return;
    LAUNCH(bn_running_stats_kernel, blocks_for(channels, THREADS), THREADS, stream_of(be),
           running_mean, running_var, channels, eps, mean, invstd);
}

void cuda_bn_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *residual,
                   int relu, void *y) {
    if (bn->rows <= 0 || bn->channels <= 0) return;
    const int bf16 = is_bf16(be), C = bn->channels;
    const void *buffers[] = {x, y, residual ? residual : x};
    if (vec_fits(be, C, buffers, 3)) {
        const long rows = vec_apply_rows(C, vec_len_of(be));
        LAUNCH_ACT(bn_apply_vec_kernel, blocks_for((size_t)bn->rows, (size_t)rows), VEC_THREADS,
                   stream_of(be), *bn, CA(x), CA(residual), relu, A(y));
        return;
    }
    LAUNCH_ACT(bn_apply_kernel, tile_grid(bn->rows, APPLY_ROWS, C), tile_block(), stream_of(be),
               *bn, CA(x), CA(residual), relu, A(y));
}

void cuda_bn_backward_sums(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                           const void *dy, const void *dy2, int relu, float *sums) {
    const int C = bn->channels, bf16 = is_bf16(be);
    if (C <= 0) return;
    const void *buffers[] = {x, y, dy, dy2 ? dy2 : dy};
    const int vec = vec_fits(be, C, buffers, 4);
    const long per_chunk = vec ? vec_chunk_rows(C, vec_len_of(be)) : CHUNK_ROWS;
    const long chunks = (bn->rows + per_chunk - 1) / per_chunk;
    double *partials = cuda_partials(be, (size_t)chunks * 2 * C);
    if (chunks > 0 && vec)
        LAUNCH_ACT(bn_backward_sums_partial_vec, chunks, VEC_THREADS, stream_of(be), *bn, CA(x),
                   CA(y), CA(dy), CA(dy2), relu, partials);
    else if (chunks > 0)
        LAUNCH_ACT(bn_backward_sums_partial, tile_grid(bn->rows, CHUNK_ROWS, C), tile_block(),
                   stream_of(be), *bn, CA(x), CA(y), CA(dy), CA(dy2), relu, partials);
    LAUNCH(chunk_sums_final, 2 * C, FINAL_THREADS, stream_of(be), partials, chunks, C, bn->invstd,
           sums);
}

void cuda_bn_backward_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                            const void *dy, const void *dy2, int relu, const float *sums,
                            double count, int training, void *dx, void *d_residual) {
    if (bn->rows <= 0 || bn->channels <= 0) return;
    const int bf16 = is_bf16(be), C = bn->channels;
    const void *buffers[] = {x, y, dy, dy2 ? dy2 : dy, dx, d_residual ? d_residual : dx};
    if (vec_fits(be, C, buffers, 6)) {
        const long rows = vec_apply_rows(C, vec_len_of(be));
        LAUNCH_ACT(bn_backward_apply_vec_kernel, blocks_for((size_t)bn->rows, (size_t)rows),
                   VEC_THREADS, stream_of(be), *bn, CA(x), CA(y), CA(dy), CA(dy2), relu, sums,
                   count, training, A(dx), A(d_residual));
        return;
    }
    LAUNCH_ACT(bn_backward_apply_kernel, tile_grid(bn->rows, APPLY_ROWS, C), tile_block(),
               stream_of(be), *bn, CA(x), CA(y), CA(dy), CA(dy2), relu, sums, count, training,
               A(dx), A(d_residual));
}

void cuda_avgpool_forward(cr_backend *be, const void *x, int batch, int hw, int channels,
                          float *y) {
    const size_t n = (size_t)batch * channels;
    if (n == 0) return;
    const int bf16 = is_bf16(be);
    LAUNCH_ACT(avgpool_forward_kernel, blocks_for(n, THREADS), THREADS, stream_of(be), CA(x), batch,
               hw, channels, y);
}

void cuda_avgpool_backward(cr_backend *be, const float *dy, int batch, int hw, int channels,
                           void *dx) {
    const size_t n = (size_t)batch * hw * channels;
    if (n == 0) return;
    const int bf16 = is_bf16(be);
    LAUNCH_ACT(avgpool_backward_kernel, blocks_for(n, THREADS), THREADS, stream_of(be), dy, batch,
               hw, channels, A(dx));
}

void cuda_float_to_bf16(cr_backend *be, const float *x, size_t n, void *y) {
    if (n == 0) return;
    LAUNCH(to_bf16_kernel, blocks_for(n, THREADS), THREADS, stream_of(be), x, n, (cr_bf16 *)y);
}

void cuda_bf16_to_float(cr_backend *be, const void *x, size_t n, float *y) {
    if (n == 0) return;
    LAUNCH(from_bf16_kernel, blocks_for(n, THREADS), THREADS, stream_of(be), (const cr_bf16 *)x, n,
           y);
}

void cuda_to_activations(cr_backend *be, const float *x, size_t n, void *y) {
    if (is_bf16(be))
        cuda_float_to_bf16(be, x, n, y);
    else if (n > 0)
        CR_CUDA(cudaMemcpyAsync(y, x, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_of(be)));
}

#undef A
#undef CA
#undef LAUNCH_ACT

/* cuBLAS is column-major, and a row-major [r, c] matrix is the column-major
 * [c, r] matrix, its transpose. So row-major y = x W^T (x [batch, in], W
 * [out, in]) is, column-major, y^T [out, batch] = W [out, in] . x^T [in,
 * batch], where W is stored as its transpose (op T, ld in) and x^T as itself
 * (op N, ld in). Plain fp32 GEMM: the handle's math mode excludes TF32. */
void cuda_linear_forward(cr_backend *be, const float *x, const float *w, const float *b, int batch,
                         int in, int out, float *y) {
    if (batch <= 0 || out <= 0) return;
    const float one = 1.0f, zero = 0.0f;
    if (in > 0) /* cuBLAS refuses a leading dimension of 0 */
        CR_CUBLAS(cublasSgemm(cuda_ctx(be)->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, batch, in, &one,
                              w, in, x, in, &zero, y, out));
    else
        CR_CUDA(cudaMemsetAsync(y, 0, (size_t)batch * out * sizeof(float), stream_of(be)));
    LAUNCH(add_bias_kernel, blocks_for((size_t)batch * out, THREADS), THREADS, stream_of(be), y, b,
           batch, out);
}

/* Column-major as above:
 *   dx^T [in, batch] = W^T [in, out] . dy^T [out, batch]  (both stored as is: N, N)
 *   dW^T [in, out]   = x^T [in, batch] . dy [batch, out]  (x^T as is, dy^T transposed: N, T)
 * and db by a kernel that adds over the batch in order. */
void cuda_linear_backward(cr_backend *be, const float *x, const float *w, const float *dy,
                          int batch, int in, int out, float *dx, float *dw, float *db) {
    if (out <= 0) return;
    if (batch <= 0 || in <= 0) { /* no products: what is left to write is zero */
        if (in > 0)
            CR_CUDA(cudaMemsetAsync(dw, 0, (size_t)out * in * sizeof(float), stream_of(be)));
        if (batch <= 0)
            CR_CUDA(cudaMemsetAsync(db, 0, (size_t)out * sizeof(float), stream_of(be)));
        else
            LAUNCH(bias_grad_kernel, blocks_for(out, THREADS), THREADS, stream_of(be), dy, batch,
                   out, db);
        return;
    }
    cublasHandle_t cublas = cuda_ctx(be)->cublas;
    const float one = 1.0f, zero = 0.0f;
    if (dx)
        CR_CUBLAS(cublasSgemm(cublas, CUBLAS_OP_N, CUBLAS_OP_N, in, batch, out, &one, w, in, dy,
                              out, &zero, dx, in));
    CR_CUBLAS(cublasSgemm(cublas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, batch, &one, x, in, dy, out,
                          &zero, dw, in));
    LAUNCH(bias_grad_kernel, blocks_for(out, THREADS), THREADS, stream_of(be), dy, batch, out, db);
}

void cuda_softmax_xent(cr_backend *be, const float *logits, const int32_t *labels, int batch,
                       int classes, float grad_scale, float *dlogits, float *loss_sum,
                       int32_t *predicted) {
    LAUNCH(softmax_xent_kernel, 1, XENT_THREADS, stream_of(be), logits, labels, batch, classes,
           grad_scale, dlogits, loss_sum, predicted);
}

void cuda_sgd_step(cr_backend *be, float *params, const float *grads, float *momentum_buf, size_t n,
                   const cr_sgd_args *args) {
    if (n == 0) return;
    LAUNCH(sgd_kernel, blocks_for(n, THREADS), THREADS, stream_of(be), params, grads, momentum_buf,
           n, *args);
}

void cuda_spin(cudaStream_t stream, long microseconds) {
    LAUNCH(spin_kernel, 1, 1, stream, (long long)microseconds * 1000);
}

void cuda_augment_batch(cr_backend *be, const uint8_t *pixels, const cr_image_transform *transforms,
                        int n, const float mean[3], const float std[3], float *images) {
    if (n <= 0) return;
    channel_constants k;
    for (int c = 0; c < 3; c++) k.mean[c] = mean[c], k.std[c] = std[c];
    LAUNCH(augment_batch_kernel, blocks_for((size_t)n * 1024, THREADS), THREADS, stream_of(be),
           pixels, transforms, n, k, images);
}

void cuda_scale(cr_backend *be, float *x, size_t n, float alpha) {
    if (n == 0) return;
    LAUNCH(scale_kernel, blocks_for(n, THREADS), THREADS, stream_of(be), x, n, alpha);
}

} // extern "C"
