/* Data: CIFAR file checks, the epoch permutation, augmentation (statistics,
 * determinism, byte equality with torchvision/PIL) and the threaded loader
 * (order, coverage, rank slices, restarts).
 * usage: test_data DATA_DIR FIXTURE_DIR
 *   DATA_DIR: a folder with test_batch.bin (the real CIFAR-10 test set)
 *   FIXTURE_DIR: tests/data/fixtures (augment_fixture.bin) */
#define _POSIX_C_SOURCE 200809L

#include "check.h"
#include "augment_internal.h"
#include "cresnet/data.h"
#include "cresnet/error.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const float MEAN[3] = {0.4914f, 0.4822f, 0.4465f}, STD[3] = {0.2470f, 0.2435f, 0.2616f};
enum { IMG = CR_CIFAR_PIXELS };

/* ---- synthetic CIFAR files ---- */

/* Record i of a synthetic file: label i % 10, pixels from (tag, i). */
static void write_records(const char *path, int count, int tag, int bad_label_at, long extra) {
    FILE *f = fopen(path, "wb");
    CR_ASSERT(f);
    uint8_t record[CR_CIFAR_RECORD];
    for (int i = 0; i < count; i++) {
        record[0] = (uint8_t)(i == bad_label_at ? 10 : i % 10);
        for (int p = 0; p < IMG; p++) record[1 + p] = (uint8_t)(p * 7 + i * 13 + tag * 31);
        fwrite(record, 1, sizeof record, f);
    }
    for (long k = 0; k < extra; k++) fputc(0, f);
    fclose(f);
}

static const int COUNTS[5] = {3, 2, 1, 4, 2};

static void write_synthetic_set(const char *dir) {
    char path[512];
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, i + 1);
        write_records(path, COUNTS[i], i, -1, 0);
    }
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    write_records(path, 3, 9, -1, 0);
}

static void test_load_valid(const char *dir) {
    write_synthetic_set(dir);
    cr_cifar_set train = cr_cifar_load(dir, 1), test = cr_cifar_load(dir, 0);
    CHECK(train.count == 12 && test.count == 3, "counts %d %d", train.count, test.count);
    int ok = 1;
    for (int f = 0, s = 0; f < 5; f++)
        for (int i = 0; i < COUNTS[f]; i++, s++) {
            ok &= train.labels[s] == i % 10;
            for (int p = 0; p < IMG; p += 101)
                ok &= train.pixels[(size_t)s * IMG + p] == (uint8_t)(p * 7 + i * 13 + f * 31);
        }
    CHECK(ok, "training records in file order");
    CHECK(test.pixels[2 * IMG + 5] == (uint8_t)(5 * 7 + 2 * 13 + 9 * 31), "test record");
    cr_cifar_free(&train);
    cr_cifar_free(&test);
}

/* Runs cr_cifar_load in a child (it exits on error); returns its exit code
 * and leaves its stderr in `err`. */
static int load_in_child(const char *dir, int train, char *err, size_t err_size) {
    char log[512];
    snprintf(log, sizeof log, "%s/stderr.txt", dir);
    fflush(stdout);
    pid_t pid = fork();
    CR_ASSERT(pid >= 0);
    if (pid == 0) {
        if (!freopen(log, "w", stderr)) _exit(99);
        cr_cifar_set set = cr_cifar_load(dir, train);
        cr_cifar_free(&set);
        _exit(0);
    }
    int status = 0;
    CR_ASSERT(waitpid(pid, &status, 0) == pid);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(err, 1, err_size - 1, f) : 0;
    err[n] = '\0';
    if (f) fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_data_error(const char *dir, int train, const char *file, const char *what) {
    char err[1024], path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int code = load_in_child(dir, train, err, sizeof err);
    CHECK(code == CR_EXIT_DATA, "%s: exit code %d", what, code);
    CHECK(strstr(err, path) != NULL, "%s: stderr names %s: %s", what, path, err);
    CHECK(strncmp(err, "cresnet: error: ", 16) == 0, "%s: message format: %s", what, err);
}

static void test_load_errors(const char *dir) {
    char path[512];
    write_synthetic_set(dir);
    snprintf(path, sizeof path, "%s/data_batch_3.bin", dir);
    remove(path);
    expect_data_error(dir, 1, "data_batch_3.bin", "missing file");

    write_synthetic_set(dir);
    snprintf(path, sizeof path, "%s/data_batch_2.bin", dir);
    write_records(path, 2, 1, -1, 5);
    expect_data_error(dir, 1, "data_batch_2.bin", "size not whole records");

    write_synthetic_set(dir);
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    write_records(path, 0, 0, -1, 0);
    expect_data_error(dir, 0, "test_batch.bin", "empty file");

    write_synthetic_set(dir);
    snprintf(path, sizeof path, "%s/data_batch_4.bin", dir);
    write_records(path, 4, 3, 2, 0);
    expect_data_error(dir, 1, "data_batch_4.bin", "label 10");

    char err[1024];
    write_synthetic_set(dir);
    CHECK(load_in_child(dir, 1, err, sizeof err) == 0, "valid set loads in child: %s", err);
}

/* ---- permutation ---- */

static int is_permutation(const int *perm, int n) {
    char *seen = calloc((size_t)n + 1, 1);
    int ok = 1;
    for (int i = 0; i < n; i++) {
        ok &= perm[i] >= 0 && perm[i] < n && !seen[perm[i]];
        if (perm[i] >= 0 && perm[i] < n) seen[perm[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_permutation(void) {
    enum { N = 50000 };
    int *a = malloc(N * sizeof(int)), *b = malloc(N * sizeof(int));
    cr_epoch_permutation(7, 3, N, a);
    CHECK(is_permutation(a, N), "permutation of %d", N);
    cr_epoch_permutation(7, 3, N, b);
    CHECK(memcmp(a, b, N * sizeof(int)) == 0, "same (seed, epoch) gives the same order");
    cr_epoch_permutation(7, 4, N, b);
    CHECK(memcmp(a, b, N * sizeof(int)) != 0, "epoch changes the order");
    cr_epoch_permutation(8, 3, N, b);
    CHECK(memcmp(a, b, N * sizeof(int)) != 0, "seed changes the order");
    int fixed = 0;
    for (int i = 0; i < N; i++) fixed += a[i] == i;
    CHECK(fixed < 10, "shuffled: %d fixed points", fixed);
    cr_epoch_permutation(7, 3, 1, a);
    CHECK(a[0] == 0, "n = 1");
    cr_epoch_permutation(7, 3, 0, a);

    /* All 24 orders of 4 items equally likely: chi-square over 24000 epochs. */
    int counts[256] = {0};
    for (int e = 0; e < 24000; e++) {
        int p[4];
        cr_epoch_permutation(1, e, 4, p);
        counts[p[0] * 64 + p[1] * 16 + p[2] * 4 + p[3]]++;
    }
    double chi2 = 0.0;
    int distinct = 0;
    for (int k = 0; k < 256; k++)
        if (counts[k]) {
            distinct++;
            chi2 += (counts[k] - 1000.0) * (counts[k] - 1000.0) / 1000.0;
        }
    CHECK(distinct == 24, "%d distinct orders of 4", distinct);
    CHECK(chi2 < 49.7, "chi-square %g with 23 degrees of freedom (p = 0.001 at 49.7)", chi2);
    free(a);
    free(b);
}

/* ---- augmentation ---- */

static const cr_augment AUG = {.crop_padding = 2,
                               .hflip = 1,
                               .rotate_deg = 5.0f,
                               .mean = {0.4914f, 0.4822f, 0.4465f},
                               .std = {0.2470f, 0.2435f, 0.2616f}};

static cr_augment no_augment(void) {
    cr_augment a = {0};
    memcpy(a.mean, MEAN, sizeof MEAN);
    memcpy(a.std, STD, sizeof STD);
    return a;
}

static void test_draw_statistics(void) {
    enum { N = 40000 };
    int crop_x[5] = {0}, crop_y[5] = {0}, flips = 0, in_range = 1;
    double angle_sum = 0.0, lo = 0.0, hi = 0.0;
    for (int s = 0; s < N; s++) {
        augment_params p = augment_draw(&AUG, 11, 2, (uint64_t)s);
        in_range &= p.pad == 2 && p.crop_x >= 0 && p.crop_x <= 4 && p.crop_y >= 0 &&
                    p.crop_y <= 4 && (p.flip == 0 || p.flip == 1) && p.angle >= -5.0 &&
                    p.angle < 5.0;
        if (!in_range) break;
        crop_x[p.crop_x]++;
        crop_y[p.crop_y]++;
        flips += p.flip;
        angle_sum += p.angle;
        lo = p.angle < lo ? p.angle : lo;
        hi = p.angle > hi ? p.angle : hi;
    }
    CHECK(in_range, "parameters in range");
    CHECK(fabs(flips / (double)N - 0.5) < 0.01, "flip rate %g", flips / (double)N);
    for (int k = 0; k < 5; k++) {
        CHECK(fabs(crop_x[k] / (double)N - 0.2) < 0.01, "crop x = %d: %d", k, crop_x[k]);
        CHECK(fabs(crop_y[k] / (double)N - 0.2) < 0.01, "crop y = %d: %d", k, crop_y[k]);
    }
    CHECK(fabs(angle_sum / N) < 0.05, "mean angle %g", angle_sum / N);
    CHECK(lo < -4.99 && hi > 4.99, "angles span [%g, %g]", lo, hi);

    cr_augment off = no_augment();
    augment_params p = augment_draw(&off, 11, 2, 5);
    CHECK(p.pad == 0 && p.crop_x == 0 && p.crop_y == 0 && p.flip == 0 && p.angle == 0.0,
          "all off draws the identity");
    /* Word 4s+k: the documented conversions of the documented words. */
    uint64_t stream = cr_rng_stream(CR_RNG_AUGMENT, 2);
    p = augment_draw(&AUG, 11, 2, 1234);
    uint32_t w[4];
    for (int k = 0; k < 4; k++) w[k] = cr_rng_u32(11, stream, 4 * 1234 + k);
    CHECK(p.crop_x == (int)(((uint64_t)w[0] * 5) >> 32) &&
              p.crop_y == (int)(((uint64_t)w[1] * 5) >> 32) && p.flip == (int)(w[2] >> 31) &&
              p.angle == 5.0 * (2.0 * ((w[3] >> 8) * 0x1p-24) - 1.0),
          "draws follow the documented words");
}

static void normalise(const uint8_t *hwc, float *out) {
    for (int i = 0; i < IMG; i++) out[i] = ((float)hwc[i] / 255.0f - MEAN[i % 3]) / STD[i % 3];
}

static void test_augment_image(const cr_cifar_set *set) {
    float *a = malloc(IMG * sizeof(float)), *b = malloc(IMG * sizeof(float));
    uint8_t hwc[IMG];
    const uint8_t *planes = set->pixels + 17 * IMG;
    cr_augment_image(planes, &AUG, 5, 1, 17, a);
    cr_augment_image(planes, &AUG, 5, 1, 17, b);
    CHECK(memcmp(a, b, IMG * sizeof(float)) == 0, "same (seed, epoch, sample): same image");
    augment_params p = augment_draw(&AUG, 5, 1, 17);
    augment_apply(planes, &p, hwc);
    normalise(hwc, b);
    CHECK(memcmp(a, b, IMG * sizeof(float)) == 0, "image = normalise(apply(draw))");

    int differ_epoch = 0, differ_seed = 0;
    for (int s = 0; s < 20; s++) {
        const uint8_t *img = set->pixels + (size_t)s * IMG;
        cr_augment_image(img, &AUG, 5, 1, (uint64_t)s, a);
        cr_augment_image(img, &AUG, 5, 2, (uint64_t)s, b);
        differ_epoch += memcmp(a, b, IMG * sizeof(float)) != 0;
        cr_augment_image(img, &AUG, 6, 1, (uint64_t)s, b);
        differ_seed += memcmp(a, b, IMG * sizeof(float)) != 0;
    }
    CHECK(differ_epoch >= 18 && differ_seed >= 18, "epoch/seed change images: %d %d", differ_epoch,
          differ_seed);

    /* No augmentation: exactly cr_cifar_batch's bits. */
    cr_augment off = no_augment();
    float *batch = malloc(64 * IMG * sizeof(float));
    int indices[64], same = 1;
    int32_t labels[64];
    for (int i = 0; i < 64; i++) indices[i] = (i * 157) % set->count;
    cr_cifar_batch(set, indices, 64, MEAN, STD, batch, labels);
    for (int i = 0; i < 64; i++) {
        cr_augment_image(set->pixels + (size_t)indices[i] * IMG, &off, 9, 3, (uint64_t)indices[i],
                         a);
        same &= memcmp(a, batch + (size_t)i * IMG, IMG * sizeof(float)) == 0;
    }
    CHECK(same, "no augmentation equals cr_cifar_batch bit for bit");
    free(batch);
    free(a);
    free(b);
}

/* Crop and flip by hand: out[y][x] = padded input at (y + cy, x' + cx). */
static void test_crop_flip_by_hand(const cr_cifar_set *set) {
    const uint8_t *planes = set->pixels + 3 * IMG;
    augment_params p = {.pad = 2, .crop_x = 4, .crop_y = 1, .flip = 1};
    uint8_t out[IMG];
    augment_apply(planes, &p, out);
    int ok = 1;
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++)
            for (int c = 0; c < 3; c++) {
                int sy = y + 1 - 2, sx = (31 - x) + 4 - 2;
                int want =
                    sy >= 0 && sy < 32 && sx >= 0 && sx < 32 ? planes[c * 1024 + sy * 32 + sx] : 0;
                ok &= out[(y * 32 + x) * 3 + c] == want;
            }
    CHECK(ok, "crop (4, 1) of padding 2, flipped");
}

/* ---- the integer form of the augmentation (backend.h) ---- */

static void apply_transform(const uint8_t *planes, const cr_image_transform *t, uint8_t *out) {
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) {
            int src = cr_image_transform_source(t, x, y);
            for (int c = 0; c < 3; c++)
                out[(y * 32 + x) * 3 + c] = src < 0 ? 0 : planes[c * 1024 + src];
        }
}

static int transform_matches_apply(const uint8_t *planes, const augment_params *p) {
    uint8_t want[IMG], got[IMG];
    augment_apply(planes, p, want);
    cr_image_transform t = augment_transform(p, 0);
    apply_transform(planes, &t, got);
    return memcmp(want, got, IMG) == 0;
}

/* Every path of PIL's rotation (transposes, the scale path of a sine that
 * rounds to 0, the fixed-point path) and drawn parameters: the transform
 * picks exactly augment_apply's pixels, so a backend applying it on its
 * own images builds the CPU path's batch. */
static void test_transform(const cr_cifar_set *set) {
    const double angles[] = {0,           90, 180,  270, -90, 360,     450,    1e-14, -1e-14,
                             180 + 1e-13, 45, -3.7, 5,   -5,  179.999, -179.5, 0.0001};
    int ok = 1, rotated_differs = 0;
    for (size_t a = 0; a < sizeof angles / sizeof angles[0]; a++)
        for (int k = 0; k < 8; k++) {
            augment_params p = {.pad = k % 3,
                                .crop_x = k % 3 ? k % 5 % (2 * (k % 3) + 1) : 0,
                                .crop_y = k % 3 ? 1 : 0,
                                .flip = k & 1,
                                .angle = angles[a]};
            const uint8_t *planes = set->pixels + (size_t)(a * 8 + k) * IMG;
            int same = transform_matches_apply(planes, &p);
            if (!same) fprintf(stderr, "  angle %g, case %d differs\n", angles[a], k);
            ok &= same;
        }
    CHECK(ok, "transform = augment_apply at right angles, near-zero sines, arbitrary angles");

    const cr_augment wide = {.crop_padding = 4, .hflip = 1, .rotate_deg = 180};
    const cr_augment *augs[] = {&AUG, &wide};
    int drawn_ok = 1;
    for (int g = 0; g < 2; g++)
        for (int s = 0; s < 3000; s++) {
            augment_params p = augment_draw(augs[g], 5, 3, (uint64_t)s);
            const uint8_t *planes = set->pixels + (size_t)(s % set->count) * IMG;
            drawn_ok &= transform_matches_apply(planes, &p);
            cr_image_transform t = cr_augment_transform(augs[g], 5, 3, (uint64_t)s);
            cr_image_transform u = augment_transform(&p, s);
            drawn_ok &= memcmp(&t, &u, sizeof t) == 0 && t.sample == s;
            rotated_differs |= t.rotate && (t.fix[0] != 65536 || t.fix[1] != 0);
        }
    CHECK(drawn_ok, "transform = augment_apply on 6,000 drawn parameter sets");
    CHECK(rotated_differs, "the drawn transforms include real rotations");
}

/* Byte equality with torchvision + PIL on the fixture's explicit params. */
static void test_fixture(const cr_cifar_set *set, const char *fixture_dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/augment_fixture.bin", fixture_dir);
    FILE *f = cr_fopen(path, "rb", CR_EXIT_DATA);
    char magic[8];
    uint32_t count;
    cr_fread_exact(magic, 8, f, path, CR_EXIT_DATA);
    cr_fread_exact(&count, 4, f, path, CR_EXIT_DATA);
    CHECK(memcmp(magic, "CRAUG1\0\0", 8) == 0 && count > 50, "fixture header, %u cases", count);
    int exact = 0, rotated = 0;
    for (uint32_t k = 0; k < count; k++) {
        int32_t head[5];
        double angle;
        uint8_t want[IMG], got[IMG];
        cr_fread_exact(head, sizeof head, f, path, CR_EXIT_DATA);
        cr_fread_exact(&angle, sizeof angle, f, path, CR_EXIT_DATA);
        cr_fread_exact(want, IMG, f, path, CR_EXIT_DATA);
        augment_params p = {
            .pad = head[1], .crop_x = head[2], .crop_y = head[3], .flip = head[4], .angle = angle};
        augment_apply(set->pixels + (size_t)head[0] * IMG, &p, got);
        int max_diff = 0;
        for (int i = 0; i < IMG; i++) {
            int d = abs((int)got[i] - (int)want[i]);
            max_diff = d > max_diff ? d : max_diff;
        }
        exact += max_diff == 0;
        rotated += angle != 0.0;
        CHECK(max_diff == 0,
              "case %u (image %d, pad %d, crop %d,%d, flip %d, angle %.17g): max diff %d", k,
              head[0], head[1], head[2], head[3], head[4], angle, max_diff);
    }
    fclose(f);
    printf("fixture: %d of %u cases byte-exact (%d rotated)\n", exact, count, rotated);
}

/* ---- loader ---- */

typedef struct {
    int steps, total;
    int sizes[128], global_sizes[128];
    float *images;
    int32_t *labels;
} epoch_out;

static cr_loader_args loader_args(const cr_cifar_set *set, const cr_augment *aug, int shuffle,
                                  int limit, int batch, int rank, int world, int threads) {
    return (cr_loader_args){.set = set,
                            .augment = aug,
                            .shuffle = shuffle,
                            .limit = limit,
                            .batch_size = batch,
                            .rank = rank,
                            .world_size = world,
                            .seed = 42,
                            .num_threads = threads};
}

/* Drains the loader from its current position into out (appending). */
static void drain(cr_loader *l, int epoch, int first_step, epoch_out *out) {
    cr_batch b;
    int step = first_step, ok = 1;
    while (cr_loader_next(l, &b)) {
        ok &= b.epoch == epoch && b.step == step;
        CR_ASSERT(out->steps < 128);
        out->sizes[out->steps] = b.size;
        out->global_sizes[out->steps++] = b.global_size;
        memcpy(out->images + (size_t)out->total * IMG, b.images, (size_t)b.size * IMG * 4);
        memcpy(out->labels + out->total, b.labels, (size_t)b.size * 4);
        out->total += b.size;
        step++;
    }
    CHECK(ok, "batches carry epoch %d and steps in order from %d", epoch, first_step);
    CHECK(!cr_loader_next(l, &b), "0 again after the epoch");
}

static epoch_out new_epoch_out(int capacity) {
    return (epoch_out){.images = malloc((size_t)capacity * IMG * sizeof(float)),
                       .labels = malloc((size_t)capacity * sizeof(int32_t))};
}

static void free_epoch_out(epoch_out *e) {
    free(e->images);
    free(e->labels);
}

static epoch_out run_epoch(const cr_loader_args *args, int epoch, int first_step) {
    epoch_out out = new_epoch_out(args->set->count);
    cr_loader *l = cr_loader_create(args);
    cr_loader_start(l, epoch, first_step);
    drain(l, epoch, first_step, &out);
    cr_loader_free(l);
    return out;
}

/* The images and labels an epoch should hold: the order's first `used`
 * samples, augmented. */
static int matches_reference(const cr_cifar_set *set, const cr_augment *aug, const int *order,
                             int used, int epoch, const epoch_out *got) {
    float *img = malloc(IMG * sizeof(float));
    int ok = got->total == used;
    for (int i = 0; ok && i < used; i++) {
        cr_augment_image(set->pixels + (size_t)order[i] * IMG, aug, 42, epoch, (uint64_t)order[i],
                         img);
        ok &= memcmp(img, got->images + (size_t)i * IMG, IMG * sizeof(float)) == 0;
        ok &= got->labels[i] == set->labels[order[i]];
    }
    free(img);
    return ok;
}

/* transforms_only: the same batches (order, slices, labels) carrying each
 * sample's cr_augment_transform instead of its floats. */
static void test_loader_transforms(const cr_cifar_set *set) {
    cr_loader_args a = loader_args(set, &AUG, 1, 1000, 96, 1, 3, 2);
    a.transforms_only = 1;
    cr_loader *l = cr_loader_create(&a);
    int *order = malloc((size_t)set->count * sizeof(int));
    cr_epoch_permutation(42, 4, 1000, order);
    cr_loader_start(l, 4, 0);
    cr_batch b;
    int ok = 1, batches = 0;
    while (cr_loader_next(l, &b)) {
        int n = b.global_size, first = b.step * 96 + n / 3; /* rank 1's slice */
        ok &= b.images == NULL && b.transforms != NULL && b.size == 2 * n / 3 - n / 3;
        for (int i = 0; ok && i < b.size; i++) {
            int sample = order[first + i];
            cr_image_transform want = cr_augment_transform(&AUG, 42, 4, (uint64_t)sample);
            ok &= memcmp(&want, &b.transforms[i], sizeof want) == 0;
            ok &= b.labels[i] == set->labels[sample];
        }
        batches++;
    }
    CHECK(ok && batches == 11, "transforms_only batches carry the slice's transforms (%d)",
          batches);
    cr_loader_free(l);
    free(order);
}

static void test_loader_order(const cr_cifar_set *set) {
    cr_augment off = no_augment();
    int *order = malloc((size_t)set->count * sizeof(int));
    for (int i = 0; i < set->count; i++) order[i] = i;

    /* File order, limit 1000, batch 128: 7 full batches and one of 104. */
    cr_loader_args a = loader_args(set, &off, 0, 1000, 128, 0, 1, 2);
    cr_loader *l = cr_loader_create(&a);
    CHECK(cr_loader_steps(l) == 8, "steps %d", cr_loader_steps(l));
    cr_loader_free(l);
    epoch_out e = run_epoch(&a, 0, 0);
    CHECK(e.steps == 8 && e.sizes[0] == 128 && e.sizes[7] == 104 && e.global_sizes[7] == 104,
          "batch sizes: %d batches, last %d", e.steps, e.sizes[e.steps - 1]);
    CHECK(matches_reference(set, &off, order, 1000, 0, &e), "file order, limit 1000");
    free_epoch_out(&e);

    /* Shuffled, whole set, batch 256 (last 16): every sample once, in the
     * order of the permutation. */
    a = loader_args(set, &off, 1, 0, 256, 0, 1, 3);
    e = run_epoch(&a, 4, 0);
    cr_epoch_permutation(42, 4, set->count, order);
    CHECK(e.steps == 40 && e.sizes[39] == set->count - 39 * 256, "%d batches, last %d", e.steps,
          e.sizes[e.steps - 1]);
    CHECK(matches_reference(set, &off, order, set->count, 4, &e), "shuffled epoch 4 in order");
    free_epoch_out(&e);

    /* Limit with shuffle: a fixed subset, the first 500 samples, permuted. */
    a = loader_args(set, &AUG, 1, 500, 64, 0, 1, 1);
    e = run_epoch(&a, 6, 0);
    cr_epoch_permutation(42, 6, 500, order);
    CHECK(matches_reference(set, &AUG, order, 500, 6, &e), "shuffle + limit + augmentation");
    free_epoch_out(&e);
    free(order);
}

/* Ranks' slices, concatenated, are the single-rank batch, image for image. */
static void test_loader_ranks(const cr_cifar_set *set) {
    cr_loader_args a = loader_args(set, &AUG, 1, 1000, 130, 0, 1, 2);
    epoch_out whole = run_epoch(&a, 3, 0);
    for (int world = 2; world <= 4; world += 2) {
        epoch_out parts[4];
        for (int r = 0; r < world; r++) {
            cr_loader_args ar = loader_args(set, &AUG, 1, 1000, 130, r, world, 1 + r % 2);
            parts[r] = run_epoch(&ar, 3, 0);
        }
        int ok = 1, offset[4] = {0}, pos = 0;
        for (int step = 0; step < whole.steps; step++) {
            int n = whole.sizes[step];
            for (int r = 0; r < world; r++) {
                int size = parts[r].sizes[step];
                ok &= size == (r + 1) * n / world - r * n / world;
                ok &= parts[r].global_sizes[step] == n;
                ok &= memcmp(parts[r].images + (size_t)offset[r] * IMG,
                             whole.images + (size_t)pos * IMG, (size_t)size * IMG * 4) == 0;
                ok &=
                    memcmp(parts[r].labels + offset[r], whole.labels + pos, (size_t)size * 4) == 0;
                offset[r] += size;
                pos += size;
            }
        }
        CHECK(ok && pos == 1000, "%d ranks concatenate to the single-rank epoch", world);
        for (int r = 0; r < world; r++) free_epoch_out(&parts[r]);
    }
    free_epoch_out(&whole);

    /* More ranks than images in a batch: empty slices are fine. */
    cr_loader_args tiny = loader_args(set, &AUG, 0, 6, 3, 0, 4, 1);
    epoch_out e = run_epoch(&tiny, 0, 0);
    CHECK(e.steps == 2 && e.total == 0, "rank 0 of 4 with batch 3: %d images", e.total);
    free_epoch_out(&e);
}

/* Restarts discard in-flight work; a resumed epoch is the tail of a full one;
 * thread count never changes the bytes. */
static void test_loader_restart(const cr_cifar_set *set) {
    cr_loader_args a = loader_args(set, &AUG, 1, 1200, 100, 0, 1, 1);
    epoch_out full = run_epoch(&a, 2, 0);
    size_t tail_offset = (size_t)5 * 100 * IMG;

    a.num_threads = 4;
    epoch_out four = run_epoch(&a, 2, 0);
    CHECK(four.total == full.total &&
              memcmp(four.images, full.images, (size_t)full.total * IMG * 4) == 0,
          "4 threads give the bytes of 1");
    free_epoch_out(&four);

    cr_loader *l = cr_loader_create(&a);
    cr_batch b;
    cr_loader_start(l, 2, 0);
    CHECK(cr_loader_next(l, &b) && cr_loader_next(l, &b), "two batches");
    cr_loader_start(l, 2, 5);
    epoch_out tail = new_epoch_out(1200);
    drain(l, 2, 5, &tail);
    CHECK(tail.total == 700 &&
              memcmp(tail.images, full.images + tail_offset, (size_t)700 * IMG * 4) == 0,
          "restart at step 5 = tail of the epoch (%d images)", tail.total);

    /* Restart with work in flight, repeatedly, then once more for real. */
    for (int k = 0; k < 20; k++) {
        cr_loader_start(l, 7 + k % 3, k % 12);
        for (int j = 0; j < k % 3; j++) cr_loader_next(l, &b);
    }
    cr_loader_start(l, 2, 5);
    cr_loader_start(l, 2, 5);
    tail.total = tail.steps = 0;
    drain(l, 2, 5, &tail);
    CHECK(tail.total == 700 &&
              memcmp(tail.images, full.images + tail_offset, (size_t)700 * IMG * 4) == 0,
          "after restarts in flight: still the tail");
    cr_loader_start(l, 2, cr_loader_steps(l));
    CHECK(!cr_loader_next(l, &b), "starting at the end gives no batch");
    cr_loader_free(l);
    free_epoch_out(&tail);
    free_epoch_out(&full);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATA_DIR FIXTURE_DIR\n", argv[0]);
        return CR_EXIT_USAGE;
    }
    char dir[] = "/tmp/cresnet_data_XXXXXX";
    CR_ASSERT(mkdtemp(dir));
    test_load_valid(dir);
    test_load_errors(dir);
    char path[512];
    const char *names[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                           "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin",
                           "stderr.txt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        remove(path);
    }
    rmdir(dir);

    test_permutation();
    test_draw_statistics();
    cr_cifar_set set = cr_cifar_load(argv[1], 0);
    test_augment_image(&set);
    test_crop_flip_by_hand(&set);
    test_fixture(&set, argv[2]);
    test_transform(&set);
    test_loader_order(&set);
    test_loader_ranks(&set);
    test_loader_restart(&set);
    test_loader_transforms(&set);
    cr_cifar_free(&set);
    return check_finish();
}
