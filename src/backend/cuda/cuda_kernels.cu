/* The CUDA backend's own kernels: BatchNorm (statistics, apply, backward),
 * global average pooling, the linear layer (cuBLAS GEMMs and a bias kernel),
 * softmax cross-entropy, SGD and scale, and the batch augmentation of
 * images resident on the device. Same semantics, formulas and operation
 * order as the CPU backend (src/backend/cpu), which the tests compare against.
 *
 * Activations are float or, in a bf16 backend, bfloat16 (cr_bf16, rounded
 * by backend.h's cr_bf16_from_float exactly as the CPU backend rounds):
 * the kernels that touch them are templates on the stored type T and do
 * their arithmetic in float either way.
 *
 * Layout: an activation is [rows, C] (NHWC). The BatchNorm kernels give a
 * block TILE_C consecutive channels, so a warp reads 32 consecutive floats of
 * a row, and TILE_ROWS row lanes; each thread keeps one channel, and that
 * channel's constants stay in registers.
 *
 * Determinism: every reduction has a fixed shape that depends only on the
 * tensor's size, never on the device, the launch or the scheduling, and uses
 * no atomics. Per-channel sums are formed over fixed chunks of CHUNK_ROWS
 * rows (float within a thread's short run of rows, double across the row
 * lanes) into per-chunk partials; a second kernel adds the chunks by a fixed
 * tree. Running the same op twice gives the same bits. */
#include "cuda.h"

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

constexpr int TILE_C = 32;         /* channels per block: one warp across a row */
constexpr int TILE_ROWS = 8;       /* row lanes per block */
constexpr long CHUNK_ROWS = 256;   /* rows behind one partial sum: fixed, for determinism */
constexpr long APPLY_ROWS = 64;    /* rows per block in the elementwise BatchNorm passes */
constexpr int FINAL_THREADS = 128; /* threads adding one column of partials */
constexpr int THREADS = 256;       /* 1-D kernels */

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

__device__ int tile_channel() { return (int)(blockIdx.y * TILE_C + threadIdx.x); }

__device__ long min_long(long a, long b) { return a < b ? a : b; }

/* An activation read as a float and written from one, whatever T stores. */
__device__ float load(const float *p, long i) { return p[i]; }
__device__ float load(const cr_bf16 *p, long i) { return cr_bf16_to_float(p[i]); }
__device__ void store(float *p, long i, float v) { p[i] = v; }
__device__ void store(cr_bf16 *p, long i, float v) { p[i] = cr_bf16_from_float(v); }

/* The gradient reaching the BN output: dy (+ dy2), masked by the ReLU. */
template <typename T>
__device__ float upstream(const T *dy, const T *dy2, const T *y, int relu, long i) {
    float g = load(dy, i);
    if (dy2) g += load(dy2, i);
    if (relu && !(load(y, i) > 0.0f)) g = 0.0f;
    return g;
}

/* ---- per-channel sums: two stages ---- */

/* Stage 1, the body of a kernel: the block at (chunk, tile) adds term(i, s1,
 * s2) over the rows of its chunk for this thread's channel, then the row
 * lanes in order in double, and writes partials[chunk][c] and
 * partials[chunk][C + c]. */
template <typename Term> __device__ void chunk_sums(long rows, int C, double *partials, Term term) {
    __shared__ double lanes[2][TILE_ROWS][TILE_C];
    const int tx = threadIdx.x, ty = threadIdx.y, c = tile_channel();
    const long first = (long)blockIdx.x * CHUNK_ROWS;
    const long end = min_long(first + CHUNK_ROWS, rows);
    float s1 = 0.0f, s2 = 0.0f;
    if (c < C)
        for (long r = first + ty; r < end; r += TILE_ROWS) term(r * C + c, s1, s2);
    lanes[0][ty][tx] = s1;
    lanes[1][ty][tx] = s2;
    __syncthreads();
    if (ty != 0 || c >= C) return;
    double t1 = 0.0, t2 = 0.0;
    for (int k = 0; k < TILE_ROWS; k++) {
        t1 += lanes[0][k][tx];
        t2 += lanes[1][k][tx];
    }
    double *out = partials + (size_t)blockIdx.x * 2 * C;
    out[c] = t1;
    out[C + c] = t2;
}

/* Forward statistics: sum(x - shift), sum((x - shift)^2). */
template <typename T>
__global__ void bn_sums_partial(const T *x, long rows, int C, const float *shift,
                                double *partials) {
    const int c = tile_channel();
    const float s = c < C ? shift[c] : 0.0f;
    chunk_sums(rows, C, partials, [=](long i, float &s1, float &s2) {
        float d = load(x, i) - s;
        s1 += d;
        s2 += d * d;
    });
}

/* Backward: sum(dz * (x - mean)), sum(dz); the first becomes sum(dz * xhat)
 * when stage 2 scales it by invstd. */
template <typename T>
__global__ void bn_backward_sums_partial(cr_bn_view bn, const T *x, const T *y, const T *dy,
                                         const T *dy2, int relu, double *partials) {
    const int c = tile_channel();
    const float mean = c < bn.channels ? bn.mean[c] : 0.0f;
    chunk_sums(bn.rows, bn.channels, partials, [=](long i, float &s1, float &s2) {
        float dz = upstream(dy, dy2, y, relu, i);
        s1 += dz * (load(x, i) - mean);
        s2 += dz;
    });
}

/* Stage 2: block `col` adds column col of partials [chunks][2C]: each thread
 * a fixed strided subset of the chunks, then a fixed tree. The first C
 * columns are multiplied by scale[col] when scale is not NULL. */
__global__ void chunk_sums_final(const double *partials, long chunks, int C, const float *scale,
                                 float *sums) {
    __shared__ double lane[FINAL_THREADS];
    const int col = blockIdx.x, t = threadIdx.x;
    double total = 0.0;
    for (long k = t; k < chunks; k += FINAL_THREADS) total += partials[k * 2 * C + col];
    lane[t] = total;
    __syncthreads();
    for (int half = FINAL_THREADS / 2; half > 0; half /= 2) {
        if (t < half) lane[t] += lane[t + half];
        __syncthreads();
    }
    if (t != 0) return;
    double v = lane[0];
    if (scale && col < C) v *= scale[col];
    sums[col] = (float)v;
}

/* ---- BatchNorm: statistics and the elementwise passes ---- */

/* Same formulas as cpu_bn_finalize, in double. shift may be running_mean:
 * each thread reads it before writing. */
__global__ void bn_finalize_kernel(const float *sums, double count, int C, const float *shift,
                                   float eps, float momentum, float *mean, float *invstd,
                                   float *running_mean, float *running_var) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double centered = sums[c] / count; /* mean - shift */
    double var = sums[C + c] / count - centered * centered;
    if (var < 0.0) var = 0.0;
    double m = shift[c] + centered;
    mean[c] = (float)m;
    invstd[c] = (float)(1.0 / sqrt(var + eps));
    double unbiased = count > 1.0 ? var * count / (count - 1.0) : var;
    running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * m);
    running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
}

__global__ void bn_running_stats_kernel(const float *running_mean, const float *running_var, int C,
                                        float eps, float *mean, float *invstd) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    mean[c] = running_mean[c];
    invstd[c] = (float)(1.0 / sqrt((double)running_var[c] + eps));
}

template <typename T>
__global__ void bn_apply_kernel(cr_bn_view bn, const T *x, const T *residual, int relu, T *y) {
    const int c = tile_channel(), C = bn.channels;
    if (c >= C) return;
    const float scale = bn.gamma[c] * bn.invstd[c];
    const float offset = bn.beta[c] - bn.mean[c] * scale;
    const long first = (long)blockIdx.x * APPLY_ROWS;
    const long end = min_long(first + APPLY_ROWS, bn.rows);
    for (long r = first + threadIdx.y; r < end; r += TILE_ROWS) {
        const long i = r * C + c;
        float v = load(x, i) * scale + offset;
        if (residual) v += load(residual, i);
        if (relu) v = v < 0.0f ? 0.0f : v; /* NaN stays NaN, as in torch.relu */
        store(y, i, v);
    }
}

/* dx = a*dz + b*(x - mean) + k per channel, the training formula expanded as
 * in cpu_bn_backward_apply. x stays centred: folding b*mean into k would
 * leave b*x and k to cancel in float when the mean is large against the
 * spread (1e-4 relative error at mean/std = 300). dx may be dy and d_residual may be dy2 (the model
 * does both): every element is read before it is written, by one thread. */
template <typename T>
__global__ void bn_backward_apply_kernel(cr_bn_view bn, const T *x, const T *y, const T *dy,
                                         const T *dy2, int relu, const float *sums, double count,
                                         int training, T *dx, T *d_residual) {
    const int c = tile_channel(), C = bn.channels;
    if (c >= C) return;
    const double gain = (double)bn.gamma[c] * bn.invstd[c];
    const double mean_dz = training ? sums[C + c] / count : 0.0;
    const double mean_dz_xhat = training ? sums[c] / count : 0.0;
    const double slope = -gain * mean_dz_xhat * bn.invstd[c];
    const float a = (float)gain, b = (float)slope, mean = bn.mean[c];
    const float k = (float)(-gain * mean_dz);
    const long first = (long)blockIdx.x * APPLY_ROWS;
    const long end = min_long(first + APPLY_ROWS, bn.rows);
    for (long r = first + threadIdx.y; r < end; r += TILE_ROWS) {
        const long i = r * C + c;
        const float dz = upstream(dy, dy2, y, relu, i);
        const float xi = load(x, i);
        if (d_residual) store(d_residual, i, dz);
        store(dx, i, a * dz + b * (xi - mean) + k);
    }
}

/* ---- BatchNorm on 16-byte vectors ----
 *
 * The passes above move every activation byte once or twice a step with
 * one 2- or 4-byte load per thread and row, too few bytes in flight to keep
 * the memory busy. These variants give each thread 16 bytes of a row at a
 * time (VEC values: 8 bf16 or 4 floats) and always the same channels, so
 * its per-channel constants stay in registers: thread t of a block takes
 * vector t % G of a row (G = C / VEC vectors per row) in row lanes of
 * VEC_THREADS / G. They need C a multiple of VEC, G a divisor of
 * VEC_THREADS, and 16-byte aligned tensors (vec_fits); other shapes take the
 * kernels above. Same formulas; the sums keep fixed chunks of rows
 * (vec_chunk_rows) and a fixed order, so they stay deterministic. */

constexpr int VEC_THREADS = 256;  /* threads per block */
constexpr int VEC_PER_THREAD = 4; /* vectors per thread in the elementwise passes */

template <typename T> struct vec_len { static constexpr int value = 16 / (int)sizeof(T); };

__device__ void load_vec(const float *p, long i, float *v) {
    const float4 u = *reinterpret_cast<const float4 *>(p + i);
    v[0] = u.x, v[1] = u.y, v[2] = u.z, v[3] = u.w;
}

/* Eight bf16 in four 32-bit words, the lower-addressed value in the low
 * half (little-endian, as cr_bf16 arrays are laid out). */
__device__ void load_vec(const cr_bf16 *p, long i, float *v) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p + i);
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
    for (int k = 0; k < 4; k++) {
        v[2 * k] = cr_bf16_to_float((cr_bf16)(w[k] & 0xffffu));
        v[2 * k + 1] = cr_bf16_to_float((cr_bf16)(w[k] >> 16));
    }
}

__device__ void store_vec(float *p, long i, const float *v) {
    *reinterpret_cast<float4 *>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
}

__device__ void store_vec(cr_bf16 *p, long i, const float *v) {
    unsigned w[4];
    for (int k = 0; k < 4; k++)
        w[k] = (unsigned)cr_bf16_from_float(v[2 * k]) |
               ((unsigned)cr_bf16_from_float(v[2 * k + 1]) << 16);
    *reinterpret_cast<uint4 *>(p + i) = make_uint4(w[0], w[1], w[2], w[3]);
}

/* This thread's place: its first channel and row lane, and the lanes. */
struct vec_place {
    int c0, lane, lanes;
};

template <typename T> __device__ vec_place vec_place_of(int C) {
    const int groups = C / vec_len<T>::value;
    return {(int)(threadIdx.x % groups) * vec_len<T>::value, (int)(threadIdx.x / groups),
            VEC_THREADS / groups};
}

/* Rows of one elementwise block: VEC_PER_THREAD vectors for each thread. */
__host__ __device__ long vec_apply_rows(int C, int vec) {
    return (long)VEC_THREADS * VEC_PER_THREAD * vec / C;
}

/* Rows of one chunk of the sums: every row lane, each adding at most 32
 * rows in float (as the scalar kernels' lanes do) before the double stage;
 * CHUNK_ROWS for up to 32 vectors a row. */
__host__ __device__ long vec_chunk_rows(int C, int vec) {
    const long groups = C / vec, lanes = VEC_THREADS / groups;
    return lanes * (groups < 32 ? groups : 32);
}

/* dz for VEC values: dy (+ dy2), masked by the ReLU. */
template <typename T>
__device__ void upstream_vec(const T *dy, const T *dy2, const T *y, int relu, long i, float *dz) {
    constexpr int V = vec_len<T>::value;
    float t[V];
    load_vec(dy, i, dz);
    if (dy2) {
        load_vec(dy2, i, t);
        for (int j = 0; j < V; j++) dz[j] += t[j];
    }
    if (relu) {
        load_vec(y, i, t);
        for (int j = 0; j < V; j++)
            if (!(t[j] > 0.0f)) dz[j] = 0.0f;
    }
}

/* Stage 1 of the sums on vectors, the same contract as chunk_sums: the
 * block `chunk` adds term(i, s1, s2) (VEC values each) over its rows, then
 * the row lanes in order in double, per channel. */
template <typename T, typename Term>
__device__ void chunk_sums_vec(long rows, int C, double *partials, Term term) {
    constexpr int V = vec_len<T>::value;
    __shared__ double lanes_sum[2][VEC_THREADS * V];
    const vec_place at = vec_place_of<T>(C);
    const long first = (long)blockIdx.x * vec_chunk_rows(C, V);
    const long end = min_long(first + vec_chunk_rows(C, V), rows);
    float s1[V], s2[V];
    for (int j = 0; j < V; j++) s1[j] = s2[j] = 0.0f;
    for (long r = first + at.lane; r < end; r += at.lanes) term(r * C + at.c0, s1, s2);
    /* Thread t holds channels at.c0 .. +V of lane t / G, so lane k's value
     * of channel c sits at k * C + c. */
    for (int j = 0; j < V; j++) {
        lanes_sum[0][threadIdx.x * V + j] = s1[j];
        lanes_sum[1][threadIdx.x * V + j] = s2[j];
    }
    __syncthreads();
    double *out = partials + (size_t)blockIdx.x * 2 * C;
    for (int c = threadIdx.x; c < C; c += VEC_THREADS) {
        double t1 = 0.0, t2 = 0.0;
        for (int k = 0; k < at.lanes; k++) {
            t1 += lanes_sum[0][k * C + c];
            t2 += lanes_sum[1][k * C + c];
        }
        out[c] = t1;
        out[C + c] = t2;
    }
}

template <typename T>
__global__ void __launch_bounds__(VEC_THREADS)
    bn_sums_partial_vec(const T *x, long rows, int C, const float *shift, double *partials) {
    constexpr int V = vec_len<T>::value;
    const vec_place at = vec_place_of<T>(C);
    float s[V];
    for (int j = 0; j < V; j++) s[j] = shift[at.c0 + j];
    chunk_sums_vec<T>(rows, C, partials, [&](long i, float *s1, float *s2) {
        float v[V];
        load_vec(x, i, v);
        for (int j = 0; j < V; j++) {
            const float d = v[j] - s[j];
            s1[j] += d;
            s2[j] += d * d;
        }
    });
}

template <typename T>
__global__ void __launch_bounds__(VEC_THREADS)
    bn_backward_sums_partial_vec(cr_bn_view bn, const T *x, const T *y, const T *dy, const T *dy2,
                                 int relu, double *partials) {
    constexpr int V = vec_len<T>::value;
    const vec_place at = vec_place_of<T>(bn.channels);
    float mean[V];
    for (int j = 0; j < V; j++) mean[j] = bn.mean[at.c0 + j];
    chunk_sums_vec<T>(bn.rows, bn.channels, partials, [&](long i, float *s1, float *s2) {
        float dz[V], v[V];
        upstream_vec(dy, dy2, y, relu, i, dz);
        load_vec(x, i, v);
        for (int j = 0; j < V; j++) {
            s1[j] += dz[j] * (v[j] - mean[j]);
            s2[j] += dz[j];
        }
    });
}

template <typename T>
__global__ void __launch_bounds__(VEC_THREADS)
    bn_apply_vec_kernel(cr_bn_view bn, const T *x, const T *residual, int relu, T *y) {
    constexpr int V = vec_len<T>::value;
    const int C = bn.channels;
    const vec_place at = vec_place_of<T>(C);
    float scale[V], offset[V];
    for (int j = 0; j < V; j++) {
        const int c = at.c0 + j;
        scale[j] = bn.gamma[c] * bn.invstd[c];
        offset[j] = bn.beta[c] - bn.mean[c] * scale[j];
    }
    const long first = (long)blockIdx.x * vec_apply_rows(C, V);
    const long end = min_long(first + vec_apply_rows(C, V), bn.rows);
    for (long r = first + at.lane; r < end; r += at.lanes) {
        const long i = r * C + at.c0;
        float v[V], res[V];
        load_vec(x, i, v);
        if (residual) load_vec(residual, i, res);
        for (int j = 0; j < V; j++) {
            v[j] = v[j] * scale[j] + offset[j];
            if (residual) v[j] += res[j];
            if (relu) v[j] = v[j] < 0.0f ? 0.0f : v[j]; /* NaN stays NaN */
        }
        store_vec(y, i, v);
    }
}

/* As bn_backward_apply_kernel; each thread reads its 16 bytes of every
 * input before it writes its 16 bytes of dx and d_residual, so dx may be dy
 * and d_residual dy2. */
template <typename T>
__global__ void __launch_bounds__(VEC_THREADS)
    bn_backward_apply_vec_kernel(cr_bn_view bn, const T *x, const T *y, const T *dy, const T *dy2,
                                 int relu, const float *sums, double count, int training, T *dx,
                                 T *d_residual) {
    constexpr int V = vec_len<T>::value;
    const int C = bn.channels;
    const vec_place at = vec_place_of<T>(C);
    float a[V], b[V], k[V], mean[V];
    for (int j = 0; j < V; j++) {
        const int c = at.c0 + j;
        const double gain = (double)bn.gamma[c] * bn.invstd[c];
        const double mean_dz = training ? sums[C + c] / count : 0.0;
        const double mean_dz_xhat = training ? sums[c] / count : 0.0;
        a[j] = (float)gain;
        b[j] = (float)(-gain * mean_dz_xhat * bn.invstd[c]);
        k[j] = (float)(-gain * mean_dz);
        mean[j] = bn.mean[c];
    }
    const long first = (long)blockIdx.x * vec_apply_rows(C, V);
    const long end = min_long(first + vec_apply_rows(C, V), bn.rows);
    for (long r = first + at.lane; r < end; r += at.lanes) {
        const long i = r * C + at.c0;
        float dz[V], v[V];
        upstream_vec(dy, dy2, y, relu, i, dz);
        load_vec(x, i, v);
        if (d_residual) store_vec(d_residual, i, dz);
        for (int j = 0; j < V; j++) v[j] = a[j] * dz[j] + b[j] * (v[j] - mean[j]) + k[j];
        store_vec(dx, i, v);
    }
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
 * these buffers (NULL ones ignored); CRESNET_CUDA_BN=scalar turns them off
 * (cuda_context.bn_scalar), to compare the two on a GPU. */
static int vec_fits(cr_backend *be, int C, const void *const *buffers, int count) {
    const int vec = vec_len_of(be), groups = C / vec;
    if (cuda_ctx(be)->bn_scalar || C % vec != 0 || groups > VEC_THREADS || VEC_THREADS % groups)
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
