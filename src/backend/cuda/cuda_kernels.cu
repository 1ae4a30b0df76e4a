/* The launchers of the CUDA backend's own kernels: BatchNorm (its device
 * code in cuda_bn.cuh), global average pooling, the linear layer (cuBLAS
 * GEMMs and a bias kernel), softmax cross-entropy, SGD and scale, and the
 * batch augmentation of images resident on the device (their device code in
 * cuda_ops.cuh; both headers also run on the CPU in tests). Same semantics,
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
#include "cuda_ops.cuh"

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
