/* data: CIFAR-10 in its official binary layout, turned into batches.
 *
 * Loads data_batch_1..5.bin (training) or test_batch.bin (test) from a
 * folder, checking every file (present, a whole number of 3,073-byte
 * records, labels 0-9): a bad file is exit 3 naming it, never a partial load.
 * Images stay uint8 in the file's layout (label, then R, G, B planes of
 * 32x32) until a batch is built: scaled to [0,1], normalised per channel and
 * written NHWC, the backends' activation layout.
 * Training batches come from a loader: a per-epoch permutation from
 * (seed, epoch), each global batch split into contiguous per-rank slices,
 * and per-sample augmentation (random crop with zero padding, horizontal
 * flip, rotation with torchvision RandomRotation semantics: nearest, fill 0)
 * whose randomness is Philox keyed by (seed, epoch, sample index), so a
 * sample's augmentation does not depend on the rank or thread that makes it.
 * Worker threads build the next batches while the caller computes: either
 * the images themselves, or, for a backend that keeps the uint8 images in
 * its own memory (backend.h: augment_batch), only each image's
 * cr_image_transform, which the backend applies.
 * Not here: devices (the caller uploads the batch or its transforms). */
#ifndef CRESNET_DATA_H
#define CRESNET_DATA_H

#include "cresnet/backend.h"

#include <stdint.h>

enum { CR_CIFAR_RECORD = 3073, CR_CIFAR_PIXELS = 3072 };

typedef struct {
    int count;
    uint8_t *labels; /* [count] */
    uint8_t *pixels; /* [count][3][32][32] */
} cr_cifar_set;

/* train: 1 for the five training files, 0 for the test file. Exits with
 * code 3 on any problem with the files. */
cr_cifar_set cr_cifar_load(const char *dir, int train);
void cr_cifar_free(cr_cifar_set *set);

/* images[i] (NHWC, 32x32x3 floats) = (pixel/255 - mean[c]) / std[c] of sample
 * indices[i]; labels[i] its label. */
void cr_cifar_batch(const cr_cifar_set *set, const int *indices, int n, const float mean[3],
                    const float std[3], float *images, int32_t *labels);

/* Augmentation settings; all off (0) gives plain normalisation. */
typedef struct {
    int crop_padding; /* random 32x32 crop of the image padded by this many zeros */
    int hflip;        /* flip left-right with probability 0.5 */
    float rotate_deg; /* rotate by an angle uniform in [-deg, deg] */
    float mean[3], std[3];
} cr_augment;

/* One augmented, normalised image (NHWC floats) of a sample in file layout
 * (3 planes of 32x32 bytes). The draws are Philox words of stream
 * (CR_RNG_AUGMENT, epoch) at indices derived from `sample`. */
void cr_augment_image(const uint8_t *planes, const cr_augment *aug, uint64_t seed, int epoch,
                      uint64_t sample, float *out);

/* The same augmentation of the same sample with its draws made and its
 * geometry in integer form, for a backend's augment_batch: applied to the
 * sample's image it gives exactly cr_augment_image's floats. */
cr_image_transform cr_augment_transform(const cr_augment *aug, uint64_t seed, int epoch,
                                        uint64_t sample);

/* perm[0..n) = a permutation of 0..n-1 that depends only on (seed, epoch). */
void cr_epoch_permutation(uint64_t seed, int epoch, int n, int *perm);

typedef struct {
    int epoch, step; /* step: batch index within the epoch */
    int global_size; /* images in the global batch */
    int size;        /* images in this rank's slice */
    float *images;   /* [size][32][32][3], owned by the loader; NULL with transforms_only */
    int32_t *labels; /* [size] */
    cr_image_transform *transforms; /* [size] with transforms_only, else NULL */
} cr_batch;

typedef struct cr_loader cr_loader;

typedef struct {
    const cr_cifar_set *set;
    const cr_augment *augment; /* training: augmentation; test: all zero but mean/std */
    int shuffle;               /* per-epoch permutation (training) or file order */
    int limit;                 /* use only the first `limit` samples of the set; 0 = all */
    int batch_size;            /* global */
    int rank, world_size;
    uint64_t seed;
    int num_threads;     /* worker threads, 0 = automatic */
    int transforms_only; /* batches carry transforms instead of images */
} cr_loader_args;

cr_loader *cr_loader_create(const cr_loader_args *args);
/* Batches per epoch (the last one may be partial), and images per epoch. */
int cr_loader_steps(const cr_loader *loader);
int cr_loader_images(const cr_loader *loader);
/* Starts producing the batches of `epoch` from batch `first_step` on; the
 * batch last returned by cr_loader_next is no longer valid. */
void cr_loader_start(cr_loader *loader, int epoch, int first_step);
/* The next batch of the epoch, in order; 0 once the epoch is done. The
 * batch stays valid until the next call. */
int cr_loader_next(cr_loader *loader, cr_batch *batch);
void cr_loader_free(cr_loader *loader);

/* ---- fetch: the official archive into a data folder ----
 * `cresnet data fetch [--dir DIR] [--from FILE] [--md5 HEX]`. */
#define CR_CIFAR_URL "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
#define CR_CIFAR_MD5 "c32a1d4ab5d03f1284b67883e8d87530"

/* Downloads CR_CIFAR_URL into a temporary file in `dir` (or reads the local
 * archive `from_file` when not NULL), checks its MD5 against `expected_md5`
 * (32 hex digits; NULL: CR_CIFAR_MD5; another value accepts a mirror or a
 * repack), extracts cifar-10-batches-bin/{data_batch_1..5.bin,
 * test_batch.bin, batches.meta.txt} into `dir` (NULL: $CRESNET_DATA, else
 * ./data/cifar-10-batches-bin; created if missing), replacing existing
 * files, and validates them with cr_cifar_load. Returns 0. Any problem exits
 * with code 3 (2 for a malformed expected_md5) and leaves no temporary file:
 * members are written as DIR/NAME.tmp, checked (record sizes, labels) and
 * renamed over DIR/NAME only once the whole archive has been read, so a bad
 * archive replaces nothing. Member names that are absolute or contain a `..`
 * component are refused; other members are ignored. */
int cr_data_fetch(const char *dir, const char *from_file, const char *expected_md5);

/* `cresnet data verify --from FILE [--md5 HEX]`: the archive's MD5 against
 * expected_md5 (as cr_data_fetch checks it), without unpacking; prints
 * "FILE: archive MD5 HEX: ok" and returns 0, or exits with code 3 (2 for a
 * malformed expected_md5). */
int cr_data_verify_archive(const char *path, const char *expected_md5);

#endif
