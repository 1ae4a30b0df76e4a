/* Training-step throughput of the CPU backend on real CIFAR-10: forward,
 * backward and SGD on a different batch every step (one batch repeated
 * overfits and drives gradients into slow denormals), after warm-up.
 * Prints one line: model, batch, threads, images/s, ms/step.
 * usage: cresnet_step_bench DATA_DIR small|medium|large [batch] [steps] [warmup] [fp32|bf16] */

#include "cresnet/backend.h"
#include "cresnet/clock.h"
#include "cresnet/comm.h"
#include "cresnet/data.h"
#include "cresnet/error.h"
#include "cresnet/model.h"

#include <omp.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr,
                "usage: %s DATA_DIR small|medium|large [batch] [steps] [warmup] [fp32|bf16]\n",
                argv[0]);
        return CR_EXIT_USAGE;
    }
    int batch = argc > 3 ? atoi(argv[3]) : 128;
    int steps = argc > 4 ? atoi(argv[4]) : 20;
    int warmup = argc > 5 ? atoi(argv[5]) : 3;
    int bf16 = argc > 6 && strcmp(argv[6], "bf16") == 0;
    cr_model_desc desc;
    char err[256];
    if (cr_model_describe(argv[2], NULL, 0, NULL, 0, &desc, err, sizeof err) != 0)
        cr_fatal(CR_EXIT_USAGE, "model", "%s", err);

    cr_cifar_set train = cr_cifar_load(argv[1], 1);
    cr_backend *be = cr_backend_cpu_create(0, bf16 ? CR_MATH_BF16 : CR_MATH_FP32);
    cr_comm *comm = cr_comm_none_create();
    cr_model *model = cr_model_create(be, &desc, batch, 0);
    const cr_model_layout *layout = cr_model_get_layout(model);
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    float *images = be->ops->alloc(be, (size_t)batch * CR_CIFAR_PIXELS * sizeof(float));
    int32_t *labels = be->ops->alloc(be, (size_t)batch * sizeof(int32_t));
    int *indices = cr_malloc((size_t)batch * sizeof(int), "bench");
    cr_sgd_args sgd = {.lr = 0.01f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = 1};

    double start = 0.0, data_seconds = 0.0;
    float loss = 0.0f;
    for (int step = 0; step < warmup + steps; step++) {
        if (step == warmup) start = cr_now_seconds();
        double t0 = cr_now_seconds();
        for (int i = 0; i < batch; i++) indices[i] = (step * batch + i) % train.count;
        cr_cifar_batch(&train, indices, batch, mean, std, images, labels);
        data_seconds += step >= warmup ? cr_now_seconds() - t0 : 0.0;
        cr_forward_result r = cr_model_forward(model, images, labels, batch, 1, 1.0f / batch, comm);
        cr_model_backward(model, comm, NULL);
        be->ops->sgd_step(be, cr_model_params(model), cr_model_grads(model),
                          cr_model_momentum(model), layout->param_count, &sgd);
        loss = r.loss_sum / batch;
    }
    be->ops->synchronize(be);
    double seconds = cr_now_seconds() - start;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("model=%s batch=%d threads=%d steps=%d images_per_s=%.1f ms_per_step=%.2f "
           "data_ms_per_step=%.2f peak_rss_mb=%.0f last_loss=%.4f\n",
           argv[2], batch, omp_get_max_threads(), steps, steps * batch / seconds,
           1e3 * seconds / steps, 1e3 * data_seconds / steps, usage.ru_maxrss / 1024.0, loss);
    free(indices);
    be->ops->free(be, images);
    be->ops->free(be, labels);
    cr_model_free(model);
    comm->ops->destroy(comm);
    be->ops->destroy(be);
    cr_cifar_free(&train);
    return 0;
}
