#include "cresnet/data.h"

#include "cresnet/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Size check before reading: a file that is not whole records is refused
 * before any of it is used. */
static int records_in(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) cr_fatal(CR_EXIT_DATA, path, "cannot open: %s", strerror(errno));
    if (!S_ISREG(st.st_mode)) cr_fatal(CR_EXIT_DATA, path, "not a regular file");
    if (st.st_size == 0 || st.st_size % CR_CIFAR_RECORD != 0)
        cr_fatal(CR_EXIT_DATA, path, "size %lld is not a positive multiple of %d bytes",
                 (long long)st.st_size, CR_CIFAR_RECORD);
    return (int)(st.st_size / CR_CIFAR_RECORD);
}

static void read_file(const char *path, int first, int count, cr_cifar_set *set) {
    FILE *f = cr_fopen(path, "rb", CR_EXIT_DATA);
    uint8_t record[CR_CIFAR_RECORD];
    for (int i = 0; i < count; i++) {
        cr_fread_exact(record, sizeof record, f, path, CR_EXIT_DATA);
        if (record[0] > 9)
            cr_fatal(CR_EXIT_DATA, path, "record %d has label %d, expected 0-9", i, record[0]);
        set->labels[first + i] = record[0];
        memcpy(set->pixels + (size_t)(first + i) * CR_CIFAR_PIXELS, record + 1, CR_CIFAR_PIXELS);
    }
    fclose(f);
}

cr_cifar_set cr_cifar_load(const char *dir, int train) {
    enum { MAX_FILES = 5 };
    char paths[MAX_FILES][4096];
    int num_files = train ? 5 : 1, counts[MAX_FILES], total = 0;
    for (int i = 0; i < num_files; i++) {
        if (train)
            snprintf(paths[i], sizeof paths[i], "%s/data_batch_%d.bin", dir, i + 1);
        else
            snprintf(paths[i], sizeof paths[i], "%s/test_batch.bin", dir);
        counts[i] = records_in(paths[i]);
        total += counts[i];
    }
    cr_cifar_set set = {.count = total};
    set.labels = cr_malloc((size_t)total, "cifar labels");
    set.pixels = cr_malloc((size_t)total * CR_CIFAR_PIXELS, "cifar pixels");
    for (int i = 0, first = 0; i < num_files; first += counts[i], i++)
        read_file(paths[i], first, counts[i], &set);
    return set;
}

void cr_cifar_free(cr_cifar_set *set) {
    free(set->labels);
    free(set->pixels);
    set->labels = set->pixels = NULL;
    set->count = 0;
}

void cr_cifar_batch(const cr_cifar_set *set, const int *indices, int n, const float mean[3],
                    const float std[3], float *images, int32_t *labels) {
    for (int i = 0; i < n; i++) {
        int idx = indices[i];
        CR_ASSERT(idx >= 0 && idx < set->count);
        const uint8_t *planes = set->pixels + (size_t)idx * CR_CIFAR_PIXELS;
        float *out = images + (size_t)i * CR_CIFAR_PIXELS;
        for (int p = 0; p < 1024; p++)
            for (int c = 0; c < 3; c++)
                out[p * 3 + c] = ((float)planes[c * 1024 + p] / 255.0f - mean[c]) / std[c];
        labels[i] = set->labels[idx];
    }
}
