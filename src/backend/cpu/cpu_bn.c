/* BatchNorm on NHWC rows, fused with the residual add and ReLU around it.
 *
 * Each pass touches every element once, a block of rows at a time: n rows of
 * C channels are n * C contiguous values, so each pass is one long loop over
 * the block against per-channel coefficients laid out along it ("tiled",
 * value i belongs to channel i % C), rather than a C-long loop per row,
 * which for the narrow layers (16 channels) costs more in loop overhead
 * than in arithmetic. A bf16 block is widened and narrowed in one loop too.
 *
 * Per-channel sums are formed over fixed chunks of rows, then added chunk
 * by chunk in a fixed order, so the result is the same whatever the number
 * of threads. */
#include "cpu.h"

#include "cresnet/error.h"

#include <math.h>
#include <stdlib.h>

/* About 1024 values per block: the block's buffers and the tiled
 * coefficients stay in L1. */
static long block_rows(int channels) {
    long rows = 1024 / channels;
    return rows > 0 ? rows : 1;
}

/* Four blocks per chunk of a sum: float partials over at most four values
 * each before they are widened to double. */
static long chunk_rows(int channels) { return 4 * block_rows(channels); }

/* The blocks of `rows` rows: block b is rows [b * n, b * n + count). */
static long num_blocks(long rows, int channels) {
    return (rows + block_rows(channels) - 1) / block_rows(channels);
}

static long block_count(long b, long rows, int channels) {
    long n = block_rows(channels), left = rows - b * n;
    return left < n ? left : n;
}

/* tiled[i] = per_channel[i % C] along one block. */
static void tile(float *tiled, const float *per_channel, int C) {
    long len = block_rows(C) * C;
    for (long i = 0; i < len; i++) tiled[i] = per_channel[i % C];
}

/* Folds tiled float sums (one block's length) into per-channel doubles. */
static void fold(const float *tiled, int C, double *out) {
    for (int c = 0; c < C; c++) out[c] = 0.0;
    for (long j = 0; j < block_rows(C); j++)
        for (int c = 0; c < C; c++) out[c] += tiled[j * C + c];
}

/* Adds the per-chunk partials [chunks][2C] in chunk order into out[2C]. */
static void reduce_partials(const double *partials, long chunks, int channels, float *out) {
    for (int c = 0; c < 2 * channels; c++) {
        double total = 0.0;
        for (long k = 0; k < chunks; k++) total += partials[k * 2 * channels + c];
        out[c] = (float)total;
    }
}

static double *partials_for(long rows, int channels, long *chunks) {
    *chunks = (rows + chunk_rows(channels) - 1) / chunk_rows(channels);
    return cr_malloc(sizeof(double) * (size_t)(*chunks) * 2 * (size_t)channels, "bn partials");
}

void cpu_bn_sums(cr_backend *be, const void *x, long rows, int channels, const float *shift,
                 float *sums) {
    const int C = channels, bf16 = cpu_bf16(be);
    const long len = block_rows(C) * C, per_chunk = chunk_rows(C);
    float shift_t[len];
    tile(shift_t, shift, C);
    long chunks;
    double *partials = partials_for(rows, C, &chunks);
#pragma omp parallel for schedule(static)
    for (long k = 0; k < chunks; k++) {
        float s1[len], s2[len], buf[len];
        for (long i = 0; i < len; i++) s1[i] = s2[i] = 0.0f;
        long end = (k + 1) * per_chunk < rows ? (k + 1) * per_chunk : rows;
        for (long r = k * per_chunk; r < end; r += block_rows(C)) {
            long n = end - r < block_rows(C) ? end - r : block_rows(C);
            const float *xb = act_rows(x, r, n, C, bf16, buf);
            for (long i = 0; i < n * C; i++) {
                float d = xb[i] - shift_t[i];
                s1[i] += d;
                s2[i] += d * d;
            }
        }
        fold(s1, C, partials + k * 2 * C);
        fold(s2, C, partials + k * 2 * C + C);
    }
    reduce_partials(partials, chunks, C, sums);
    free(partials);
}

void cpu_bn_finalize(cr_backend *be, const float *sums, double count, int channels,
                     const float *shift, float eps, float momentum, float *mean, float *invstd,
                     float *running_mean, float *running_var) {
    (void)be;
    for (int c = 0; c < channels; c++) {
        double centered = sums[c] / count; /* mean - shift */
        double var = sums[channels + c] / count - centered * centered;
        if (var < 0.0) var = 0.0;
        double m = shift[c] + centered; /* read shift before running_mean, which it may be */
        mean[c] = (float)m;
        invstd[c] = (float)(1.0 / sqrt(var + eps));
        double unbiased = count > 1.0 ? var * count / (count - 1.0) : var;
        running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * m);
        running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
    }
}

void cpu_bn_running_stats(cr_backend *be, const float *running_mean, const float *running_var,
                          int channels, float eps, float *mean, float *invstd) {
    (void)be;
    for (int c = 0; c < channels; c++) {
        mean[c] = running_mean[c];
        invstd[c] = (float)(1.0 / sqrt((double)running_var[c] + eps));
    }
}

void cpu_bn_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *residual,
                  int relu, void *y) {
    const int C = bn->channels, bf16 = cpu_bf16(be);
    const long len = block_rows(C) * C;
    float scale[C], offset[C], scale_t[len], offset_t[len];
    for (int c = 0; c < C; c++) {
        scale[c] = bn->gamma[c] * bn->invstd[c];
        offset[c] = bn->beta[c] - bn->mean[c] * scale[c];
    }
    tile(scale_t, scale, C);
    tile(offset_t, offset, C);
    const long blocks = num_blocks(bn->rows, C);
#pragma omp parallel for schedule(static)
    for (long b = 0; b < blocks; b++) {
        float x_buf[len], res_buf[len], y_buf[len];
        long r = b * block_rows(C), n = block_count(b, bn->rows, C);
        const float *xb = act_rows(x, r, n, C, bf16, x_buf);
        const float *res = residual ? act_rows(residual, r, n, C, bf16, res_buf) : NULL;
        float *yb = act_out_rows(y, r, C, bf16, y_buf);
        for (long i = 0; i < n * C; i++) {
            float v = xb[i] * scale_t[i] + offset_t[i];
            if (res) v += res[i];
            if (relu) v = v < 0.0f ? 0.0f : v; /* NaN stays NaN, as in torch.relu */
            yb[i] = v;
        }
        act_rows_store(y, r, n, C, bf16, y_buf);
    }
}

/* Rows [r, r + n) of the gradient reaching the BN output, into dz: dy
 * (+ dy2), masked by the ReLU. tmp is scratch of the same size. */
static inline void upstream_rows(const void *dy, const void *dy2, const void *y, int relu, long r,
                                 long n, int C, int bf16, float *dz, float *tmp) {
    const long m = n * C;
    const float *g = act_rows(dy, r, n, C, bf16, dz);
    for (long i = 0; i < m; i++) dz[i] = g[i];
    if (dy2) {
        const float *g2 = act_rows(dy2, r, n, C, bf16, tmp);
        for (long i = 0; i < m; i++) dz[i] += g2[i];
    }
    if (relu) {
        const float *yb = act_rows(y, r, n, C, bf16, tmp);
        for (long i = 0; i < m; i++) dz[i] = yb[i] > 0.0f ? dz[i] : 0.0f;
    }
}

void cpu_bn_backward_sums(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                          const void *dy, const void *dy2, int relu, float *sums) {
    const int C = bn->channels, bf16 = cpu_bf16(be);
    const long len = block_rows(C) * C, per_chunk = chunk_rows(C);
    float mean_t[len];
    tile(mean_t, bn->mean, C);
    long chunks;
    double *partials = partials_for(bn->rows, C, &chunks);
#pragma omp parallel for schedule(static)
    for (long k = 0; k < chunks; k++) {
        float s_dz_xc[len], s_dz[len], dz[len], tmp[len];
        for (long i = 0; i < len; i++) s_dz_xc[i] = s_dz[i] = 0.0f;
        long end = (k + 1) * per_chunk < bn->rows ? (k + 1) * per_chunk : bn->rows;
        for (long r = k * per_chunk; r < end; r += block_rows(C)) {
            long n = end - r < block_rows(C) ? end - r : block_rows(C);
            upstream_rows(dy, dy2, y, relu, r, n, C, bf16, dz, tmp);
            const float *xb = act_rows(x, r, n, C, bf16, tmp);
            for (long i = 0; i < n * C; i++) {
                s_dz_xc[i] += dz[i] * (xb[i] - mean_t[i]);
                s_dz[i] += dz[i];
            }
        }
        double *out = partials + k * 2 * C;
        fold(s_dz_xc, C, out);
        fold(s_dz, C, out + C);
        for (int c = 0; c < C; c++) out[c] *= bn->invstd[c];
    }
    reduce_partials(partials, chunks, C, sums);
    free(partials);
}

void cpu_bn_backward_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                           const void *dy, const void *dy2, int relu, const float *sums,
                           double count, int training, void *dx, void *d_residual) {
    const int C = bn->channels, bf16 = cpu_bf16(be);
    const long len = block_rows(C) * C;
    /* dx = a*dz + b*(x - mean) + k per channel: the training-mode formula
     * expanded. x - mean stays centred, so a mean far from 0 costs nothing. */
    float a[C], b[C], k[C], a_t[len], b_t[len], k_t[len], mean_t[len];
    for (int c = 0; c < C; c++) {
        double gain = (double)bn->gamma[c] * bn->invstd[c];
        double mean_dz = training ? sums[C + c] / count : 0.0;
        double mean_dz_xhat = training ? sums[c] / count : 0.0;
        a[c] = (float)gain;
        b[c] = (float)(-gain * mean_dz_xhat * bn->invstd[c]);
        k[c] = (float)(-gain * mean_dz);
    }
    tile(a_t, a, C);
    tile(b_t, b, C);
    tile(k_t, k, C);
    tile(mean_t, bn->mean, C);
    const long blocks = num_blocks(bn->rows, C);
#pragma omp parallel for schedule(static)
    for (long blk = 0; blk < blocks; blk++) {
        /* dz is whole before anything is written: dx may be dy, d_residual dy2. */
        float dz[len], tmp[len], dx_buf[len];
        long r = blk * block_rows(C), n = block_count(blk, bn->rows, C);
        upstream_rows(dy, dy2, y, relu, r, n, C, bf16, dz, tmp);
        const float *xb = act_rows(x, r, n, C, bf16, tmp);
        float *dxb = act_out_rows(dx, r, C, bf16, dx_buf);
        for (long i = 0; i < n * C; i++)
            dxb[i] = a_t[i] * dz[i] + b_t[i] * (xb[i] - mean_t[i]) + k_t[i];
        act_rows_store(dx, r, n, C, bf16, dx_buf);
        if (!d_residual) continue;
        float *dres = act_out_rows(d_residual, r, C, bf16, tmp);
        for (long i = 0; i < n * C; i++) dres[i] = dz[i];
        act_rows_store(d_residual, r, n, C, bf16, tmp);
    }
}
