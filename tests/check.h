/* A minimal test harness: CHECK counts, reports the failing line, and
 * check_finish prints "N passed, N failed" and gives main's exit status. */
#ifndef CRESNET_TEST_CHECK_H
#define CRESNET_TEST_CHECK_H

#include "cresnet/rng.h"

#include <math.h>
#include <stdio.h>

static int checks_passed, checks_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            checks_passed++;                                                                       \
        } else {                                                                                   \
            checks_failed++;                                                                       \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                 \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* |a - b| <= tol * max(|a|, |b|, floor): relative, with an absolute floor. */
static inline int close_enough(double a, double b, double tol, double floor) {
    double scale = fmax(fmax(fabs(a), fabs(b)), floor);
    return fabs(a - b) <= tol * scale;
}

#define CHECK_CLOSE(a, b, tol, floor, what)                                                        \
    CHECK(close_enough((a), (b), (tol), (floor)), "%s: %.9g vs %.9g (tol %g)", (what),             \
          (double)(a), (double)(b), (double)(tol))

static inline int check_finish(void) {
    printf("%d passed, %d failed\n", checks_passed, checks_failed);
    return checks_failed ? 1 : 0;
}

/* Test data from the project's own generator: uniform in [-scale, scale). */
static inline void fill_random(float *x, size_t n, float scale, uint32_t object) {
    cr_rng_fill_symmetric(x, n, scale, 99, cr_rng_stream(CR_RNG_TEST, object));
}

/* ||a - ref|| / ||ref||; a NaN anywhere makes it NaN, which fails every check. */
static inline double relative_l2(const float *a, const float *ref, size_t n) {
    double err = 0.0, norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        err += d * d;
        norm += (double)ref[i] * ref[i];
    }
    if (err == 0.0) return 0.0;
    return norm > 0.0 ? sqrt(err / norm) : INFINITY;
}

static inline double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

#endif
