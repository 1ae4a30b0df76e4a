/* Fuzz target: the CIFAR-10 batch reader and what consumes its samples.
 *
 * Input: 4 bytes of settings, then the bytes of the data file(s):
 *   [0] bit 0: training set (the rest split into data_batch_1..5.bin, four
 *       equal parts and the remainder) or test set (all of it is
 *       test_batch.bin); bit 1: horizontal flip
 *   [1] crop padding (mod 33), [2] rotation (x 180/255 degrees), [3] epoch
 * Properties:
 *   - cr_cifar_load either returns or fails with exit code 3 (never 70, a
 *     crash, a leak, UB or a file left open);
 *   - what it returns is exactly the files' records, in order;
 *   - every sample can be batched and augmented, and the epoch permutation
 *     of the set is a permutation. */
#include "fuzz_support.h"

#include "cresnet/data.h"
#include "cresnet/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int train;
    cr_cifar_set set;
} load_call;

static void load(void *context) {
    load_call *c = context;
    c->set = cr_cifar_load(fuzz_dir(), c->train);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    int train = data[0] & 1;
    cr_augment aug = {.crop_padding = data[1] % 33,
                      .hflip = (data[0] >> 1) & 1,
                      .rotate_deg = (float)data[2] * (180.0f / 255.0f),
                      .mean = {0.4914f, 0.4822f, 0.4465f},
                      .std = {0.2470f, 0.2435f, 0.2616f}};
    int epoch = data[3];
    const uint8_t *bytes = data + 4;
    size_t n = size - 4;

    char path[512];
    if (train) {
        size_t part = n / 5;
        for (int i = 0; i < 5; i++) {
            char name[32];
            snprintf(name, sizeof name, "data_batch_%d.bin", i + 1);
            size_t len = i < 4 ? part : n - 4 * part;
            fuzz_write_file(name, bytes + i * part, len, path, sizeof path);
        }
    } else {
        fuzz_write_file("test_batch.bin", bytes, n, path, sizeof path);
    }

    load_call call = {.train = train};
    int code = fuzz_run(load, &call);
    if (code == CR_EXIT_DATA) return 0;
    if (code != 0) fuzz_fail("cr_cifar_load exited %d, expected 0 or 3", code);

    cr_cifar_set *set = &call.set;
    if (set->count <= 0 || (size_t)set->count * CR_CIFAR_RECORD != n)
        fuzz_fail("loaded %d records from %zu bytes", set->count, n);
    for (int i = 0; i < set->count; i++) {
        const uint8_t *record = bytes + (size_t)i * CR_CIFAR_RECORD;
        if (set->labels[i] != record[0] ||
            memcmp(set->pixels + (size_t)i * CR_CIFAR_PIXELS, record + 1, CR_CIFAR_PIXELS) != 0)
            fuzz_fail("record %d differs from the file", i);
    }

    int *perm = malloc((size_t)set->count * sizeof *perm);
    cr_epoch_permutation(0, epoch, set->count, perm);
    char *seen = calloc((size_t)set->count, 1);
    for (int i = 0; i < set->count; i++) {
        if (perm[i] < 0 || perm[i] >= set->count || seen[perm[i]])
            fuzz_fail("epoch %d: not a permutation of %d samples", epoch, set->count);
        seen[perm[i]] = 1;
    }
    float *images = malloc((size_t)set->count * CR_CIFAR_PIXELS * sizeof *images);
    int32_t *labels = malloc((size_t)set->count * sizeof *labels);
    cr_cifar_batch(set, perm, set->count, aug.mean, aug.std, images, labels);
    for (int i = 0; i < set->count; i++) {
        if (labels[i] != set->labels[perm[i]]) fuzz_fail("batch label %d is wrong", i);
        cr_augment_image(set->pixels + (size_t)perm[i] * CR_CIFAR_PIXELS, &aug, 0, epoch,
                         (uint64_t)perm[i], images + (size_t)i * CR_CIFAR_PIXELS);
    }
    free(images), free(labels), free(seen), free(perm);
    cr_cifar_free(set);
    return 0;
}
