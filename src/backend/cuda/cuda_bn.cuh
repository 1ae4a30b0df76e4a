/* BatchNorm's device code for the CUDA backend (cuda_kernels.cu launches
 * it): the per-channel sums in two stages, finalize, and the elementwise
 * passes, each in a scalar form (one value per thread) and, where shapes
 * and alignment allow, on 16-byte vectors.
 *
 * A header so that tests/backend/test_cuda_bn_emulated.cc can run this
 * very source on the CPU, in CI, with CUDA's few built-ins it uses
 * (threadIdx, blockIdx, __syncthreads, __shared__, float4, uint4) stood in
 * for. Keep it to those: no warp intrinsics, no atomics.
 * Needs cresnet/backend.h (cr_bf16) before it.
 *
 * Layout: an activation is [rows, C] (NHWC). The scalar kernels give a
 * block TILE_C consecutive channels, so a warp reads 32 consecutive values
 * of a row, and TILE_ROWS row lanes; each thread keeps one channel, and that
 * channel's constants stay in registers.
 *
 * Determinism: per-channel sums are formed over fixed chunks of rows (float
 * within a thread's short run of rows, double across the row lanes) into
 * per-chunk partials; a second kernel adds the chunks by a fixed tree. No
 * atomics, and nothing depends on the device or the scheduling. */
#ifndef CRESNET_CUDA_BN_CUH
#define CRESNET_CUDA_BN_CUH

#include "cuda_activations.cuh"

namespace {

constexpr int TILE_C = 32;         /* channels per block: one warp across a row */
constexpr int TILE_ROWS = 8;       /* row lanes per block */
constexpr long CHUNK_ROWS = 256;   /* rows behind one partial sum: fixed, for determinism */
constexpr long APPLY_ROWS = 64;    /* rows per block in the elementwise BatchNorm passes */
constexpr int FINAL_THREADS = 128; /* threads adding one column of partials */

__device__ int tile_channel() { return (int)(blockIdx.y * TILE_C + threadIdx.x); }

__device__ long min_long(long a, long b) { return a < b ? a : b; }

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
        float v[V];
        load_vec(x, i, v);
        for (int j = 0; j < V; j++) v[j] = v[j] * scale[j] + offset[j];
        if (residual) {
            float res[V];
            load_vec(residual, i, res);
            for (int j = 0; j < V; j++) v[j] += res[j];
        }
        if (relu)
            for (int j = 0; j < V; j++) v[j] = v[j] < 0.0f ? 0.0f : v[j]; /* NaN stays NaN */
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

} // namespace

#endif
