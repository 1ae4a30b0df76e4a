/* The small ops: pooling, the linear layer, the loss and the optimizer. They
 * move little data next to the convolutions, so plain OpenMP loops suffice. */
#include "cpu.h"

#include <math.h>

void cpu_avgpool_forward(cr_backend *be, const void *x, int batch, int hw, int channels, float *y) {
    const int bf16 = cpu_bf16(be);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < batch; n++) {
        float *out = y + (long)n * channels;
        for (int c = 0; c < channels; c++) out[c] = 0.0f;
        for (int p = 0; p < hw; p++) {
            long row = ((long)n * hw + p) * channels;
            for (int c = 0; c < channels; c++) out[c] += act_load(x, row + c, bf16);
        }
        for (int c = 0; c < channels; c++) out[c] /= (float)hw;
    }
}

void cpu_avgpool_backward(cr_backend *be, const float *dy, int batch, int hw, int channels,
                          void *dx) {
    const int bf16 = cpu_bf16(be);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < batch; n++) {
        const float *g = dy + (long)n * channels;
        for (int p = 0; p < hw; p++) {
            long row = ((long)n * hw + p) * channels;
            for (int c = 0; c < channels; c++) act_store(dx, row + c, g[c] / (float)hw, bf16);
        }
    }
}

void cpu_linear_forward(cr_backend *be, const float *x, const float *w, const float *b, int batch,
                        int in, int out, float *y) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < batch; n++) {
        for (int o = 0; o < out; o++) {
            float acc = 0.0f;
            for (int i = 0; i < in; i++) acc += x[(long)n * in + i] * w[(long)o * in + i];
            y[(long)n * out + o] = acc + b[o];
        }
    }
}

void cpu_linear_backward(cr_backend *be, const float *x, const float *w, const float *dy, int batch,
                         int in, int out, float *dx, float *dw, float *db) {
    (void)be;
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < batch; n++) {
            for (int i = 0; i < in; i++) dx[(long)n * in + i] = 0.0f;
            for (int o = 0; o < out; o++) {
                float g = dy[(long)n * out + o];
                for (int i = 0; i < in; i++) dx[(long)n * in + i] += g * w[(long)o * in + i];
            }
        }
    }
#pragma omp parallel for schedule(static)
    for (int o = 0; o < out; o++) {
        float *row = dw + (long)o * in;
        for (int i = 0; i < in; i++) row[i] = 0.0f;
        float bias = 0.0f;
        for (int n = 0; n < batch; n++) {
            float g = dy[(long)n * out + o];
            bias += g;
            for (int i = 0; i < in; i++) row[i] += g * x[(long)n * in + i];
        }
        db[o] = bias;
    }
}

void cpu_softmax_xent(cr_backend *be, const float *logits, const int32_t *labels, int batch,
                      int classes, float grad_scale, float *dlogits, float *loss_sum,
                      int32_t *predicted) {
    (void)be;
    double total = 0.0;
    int correct = 0;
    for (int n = 0; n < batch; n++) {
        const float *z = logits + (long)n * classes;
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (z[k] > z[best]) best = k;
        double denom = 0.0;
        for (int k = 0; k < classes; k++) denom += exp((double)z[k] - z[best]);
        double log_denom = log(denom) + z[best];
        total += log_denom - z[labels[n]];
        predicted[n] = best;
        correct += best == labels[n];
        if (!dlogits) continue;
        for (int k = 0; k < classes; k++) {
            double p = exp((double)z[k] - log_denom);
            dlogits[(long)n * classes + k] = (float)((p - (k == labels[n])) * grad_scale);
        }
    }
    loss_sum[0] = (float)total;
    loss_sum[1] = (float)correct;
}

/* torch.optim.SGD, operation for operation (weight decay, momentum,
 * dampening, Nesterov). Momentum buffers start at zero, which matches
 * PyTorch's first step (buffer = gradient) when dampening is 0. */
void cpu_sgd_step(cr_backend *be, float *params, const float *grads, float *momentum_buf, size_t n,
                  const cr_sgd_args *args) {
    (void)be;
    const float lr = args->schedule ? args->schedule[0] : args->lr;
    const float mu = args->schedule ? args->schedule[1] : args->momentum;
    const float wd = args->weight_decay, keep = 1.0f - args->dampening;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        if (wd != 0.0f) g = g + wd * params[i];
        if (mu != 0.0f) {
            float buf = momentum_buf[i] * mu + keep * g;
            momentum_buf[i] = buf;
            g = args->nesterov ? g + mu * buf : buf;
        }
        params[i] = params[i] + (-lr) * g;
    }
}

void cpu_scale(cr_backend *be, float *x, size_t n, float alpha) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
}
