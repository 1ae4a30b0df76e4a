/* Augmentation throughput on real CIFAR-10 training images (crop 2, flip,
 * rotation 5 degrees, normalisation):
 *   - cr_augment_image on one thread;
 *   - the loader with its automatic thread count, batches of 128, drained
 *     with no compute in between (its ceiling, not a training rate).
 * Prints one line each, images/s.
 * usage: cresnet_augment_bench DATA_DIR [images] */
#define _POSIX_C_SOURCE 200809L

#include "cresnet/clock.h"
#include "cresnet/data.h"
#include "cresnet/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const cr_augment AUG = {.crop_padding = 2,
                               .hflip = 1,
                               .rotate_deg = 5.0f,
                               .mean = {0.4914f, 0.4822f, 0.4465f},
                               .std = {0.2470f, 0.2435f, 0.2616f}};

static void bench_single(const cr_cifar_set *set, int images) {
    float *out = cr_malloc(CR_CIFAR_PIXELS * sizeof(float), "bench");
    double checksum = 0.0, t0 = cr_now_seconds();
    for (int i = 0; i < images; i++) {
        int s = i % set->count;
        cr_augment_image(set->pixels + (size_t)s * CR_CIFAR_PIXELS, &AUG, 0, 0, (uint64_t)s, out);
        checksum += out[i % CR_CIFAR_PIXELS]; /* keeps the work observable */
    }
    double seconds = cr_now_seconds() - t0;
    printf("cr_augment_image: %.0f images/s (1 thread, %d images, checksum %.3f)\n",
           images / seconds, images, checksum);
    free(out);
}

static void bench_loader(const cr_cifar_set *set, int images) {
    cr_loader_args args = {.set = set,
                           .augment = &AUG,
                           .shuffle = 1,
                           .limit = images < set->count ? images : 0,
                           .batch_size = 128,
                           .world_size = 1,
                           .num_threads = 0};
    cr_loader *loader = cr_loader_create(&args);
    cr_batch batch;
    int total = 0;
    double t0 = cr_now_seconds();
    cr_loader_start(loader, 0, 0);
    while (cr_loader_next(loader, &batch)) total += batch.size;
    double seconds = cr_now_seconds() - t0;
    cr_loader_free(loader);
    printf("loader: %.0f images/s (automatic threads, batch 128, %d images)\n", total / seconds,
           total);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA_DIR [images]\n", argv[0]);
        return CR_EXIT_USAGE;
    }
    int images = argc > 2 ? atoi(argv[2]) : 50000;
    cr_cifar_set set = cr_cifar_load(argv[1], 1);
    bench_single(&set, images);
    bench_loader(&set, images);
    cr_cifar_free(&set);
    return 0;
}
