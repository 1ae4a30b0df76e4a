/* BatchNorm on NHWC rows, fused with the residual add and ReLU around it.
 *
 * Each pass touches every element once. Per-channel sums are formed over
 * fixed chunks of rows, then added chunk by chunk in a fixed order, so the
 * result is the same whatever the number of threads. */
#include "cpu.h"

#include "cresnet/error.h"

#include <math.h>
#include <stdlib.h>

/* About 4096 values per chunk: long enough to amortise, short enough that
 * float partial sums stay accurate before they are widened to double. */
static long chunk_rows(int channels) {
    long rows = 4096 / channels;
    return rows > 0 ? rows : 1;
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
    const long per_chunk = chunk_rows(C);
    long chunks;
    double *partials = partials_for(rows, C, &chunks);
#pragma omp parallel for schedule(static)
    for (long k = 0; k < chunks; k++) {
        float s1[C], s2[C], buf[C];
        for (int c = 0; c < C; c++) s1[c] = s2[c] = 0.0f;
        long end = (k + 1) * per_chunk < rows ? (k + 1) * per_chunk : rows;
        for (long r = k * per_chunk; r < end; r++) {
            const float *row = act_row(x, r, C, bf16, buf);
            for (int c = 0; c < C; c++) {
                float d = row[c] - shift[c];
                s1[c] += d;
                s2[c] += d * d;
            }
        }
        double *out = partials + k * 2 * C;
        for (int c = 0; c < C; c++) {
            out[c] = s1[c];
            out[C + c] = s2[c];
        }
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
    float scale[C], offset[C];
    for (int c = 0; c < C; c++) {
        scale[c] = bn->gamma[c] * bn->invstd[c];
        offset[c] = bn->beta[c] - bn->mean[c] * scale[c];
    }
#pragma omp parallel for schedule(static)
    for (long r = 0; r < bn->rows; r++) {
        float x_buf[C], res_buf[C], y_buf[C];
        const float *xr = act_row(x, r, C, bf16, x_buf);
        const float *res = residual ? act_row(residual, r, C, bf16, res_buf) : NULL;
        float *yr = act_out_row(y, r, C, bf16, y_buf);
        for (int c = 0; c < C; c++) {
            float v = xr[c] * scale[c] + offset[c];
            if (res) v += res[c];
            if (relu) v = v < 0.0f ? 0.0f : v; /* NaN stays NaN, as in torch.relu */
            yr[c] = v;
        }
        act_row_store(y, r, C, bf16, y_buf);
    }
}

/* Row r of the gradient reaching the BN output, into dz[C]: dy (+ dy2),
 * masked by the ReLU. tmp[C] is scratch. */
static inline void upstream_row(const void *dy, const void *dy2, const void *y, int relu, long r,
                                int C, int bf16, float *dz, float *tmp) {
    const float *g = act_row(dy, r, C, bf16, dz);
    for (int c = 0; c < C; c++) dz[c] = g[c];
    if (dy2) {
        const float *g2 = act_row(dy2, r, C, bf16, tmp);
        for (int c = 0; c < C; c++) dz[c] += g2[c];
    }
    if (relu) {
        const float *yr = act_row(y, r, C, bf16, tmp);
        for (int c = 0; c < C; c++)
            if (!(yr[c] > 0.0f)) dz[c] = 0.0f;
    }
}

void cpu_bn_backward_sums(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                          const void *dy, const void *dy2, int relu, float *sums) {
    const int C = bn->channels, bf16 = cpu_bf16(be);
    const long per_chunk = chunk_rows(C);
    long chunks;
    double *partials = partials_for(bn->rows, C, &chunks);
#pragma omp parallel for schedule(static)
    for (long k = 0; k < chunks; k++) {
        float s_dz_xc[C], s_dz[C], dz[C], tmp[C];
        for (int c = 0; c < C; c++) s_dz_xc[c] = s_dz[c] = 0.0f;
        long end = (k + 1) * per_chunk < bn->rows ? (k + 1) * per_chunk : bn->rows;
        for (long r = k * per_chunk; r < end; r++) {
            upstream_row(dy, dy2, y, relu, r, C, bf16, dz, tmp);
            const float *xr = act_row(x, r, C, bf16, tmp);
            for (int c = 0; c < C; c++) {
                s_dz_xc[c] += dz[c] * (xr[c] - bn->mean[c]);
                s_dz[c] += dz[c];
            }
        }
        double *out = partials + k * 2 * C;
        for (int c = 0; c < C; c++) {
            out[c] = (double)s_dz_xc[c] * bn->invstd[c];
            out[C + c] = s_dz[c];
        }
    }
    reduce_partials(partials, chunks, C, sums);
    free(partials);
}

void cpu_bn_backward_apply(cr_backend *be, const cr_bn_view *bn, const void *x, const void *y,
                           const void *dy, const void *dy2, int relu, const float *sums,
                           double count, int training, void *dx, void *d_residual) {
    const int C = bn->channels, bf16 = cpu_bf16(be);
    /* dx = a*dz + b*(x - mean) + k per channel: the training-mode formula
     * expanded. x - mean stays centred, so a mean far from 0 costs nothing. */
    float a[C], b[C], k[C];
    for (int c = 0; c < C; c++) {
        double gain = (double)bn->gamma[c] * bn->invstd[c];
        double mean_dz = training ? sums[C + c] / count : 0.0;
        double mean_dz_xhat = training ? sums[c] / count : 0.0;
        a[c] = (float)gain;
        b[c] = (float)(-gain * mean_dz_xhat * bn->invstd[c]);
        k[c] = (float)(-gain * mean_dz);
    }
#pragma omp parallel for schedule(static)
    for (long r = 0; r < bn->rows; r++) {
        /* dz is whole before anything is written: dx may be dy, d_residual dy2. */
        float dz[C], tmp[C], dx_buf[C];
        upstream_row(dy, dy2, y, relu, r, C, bf16, dz, tmp);
        const float *xr = act_row(x, r, C, bf16, tmp);
        float *dxr = act_out_row(dx, r, C, bf16, dx_buf);
        for (int c = 0; c < C; c++) dxr[c] = a[c] * dz[c] + b[c] * (xr[c] - bn->mean[c]) + k[c];
        act_row_store(dx, r, C, bf16, dx_buf);
        if (!d_residual) continue;
        float *dres = act_out_row(d_residual, r, C, bf16, tmp);
        for (int c = 0; c < C; c++) dres[c] = dz[c];
        act_row_store(d_residual, r, C, bf16, tmp);
    }
}
