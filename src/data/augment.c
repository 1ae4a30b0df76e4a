/* augment: per-sample augmentation and the per-epoch permutation.
 *
 * The pipeline is the report's torchvision one on PIL images:
 *   RandomCrop(32, padding=p) -> RandomHorizontalFlip(0.5) ->
 *   RandomRotation(deg) (NEAREST, fill 0, expand False, centre default) ->
 *   ToTensor -> Normalize(mean, std),
 * reproduced to the byte on the uint8 image (tests/data/make_augment_fixture.py
 * checks it against torchvision 0.29 / Pillow 13).
 *
 * Random draws, all Philox words of stream (CR_RNG_AUGMENT, epoch) under
 * `seed`, so a sample's augmentation depends only on (seed, epoch, sample):
 *   word 4s+0: crop x = (uint64)u * (2p+1) >> 32, uniform integer in [0, 2p]
 *   word 4s+1: crop y, the same way
 *   word 4s+2: flip = u >> 31 (probability exactly 1/2)
 *   word 4s+3: angle = deg * (2 * ((u >> 8) * 2^-24) - 1) in double, uniform
 *              on a 2^24-point grid of [-deg, deg)
 * The multiply-shift integer draw is biased by at most (2p+1)/2^32, far below
 * anything measurable, and needs no rejection, so each draw is one word. */
#include "augment_internal.h"

#include "cresnet/error.h"
#include "cresnet/rng.h"

#include <math.h>
#include <string.h>

enum { SIDE = 32, AREA = SIDE * SIDE };

augment_params augment_draw(const cr_augment *aug, uint64_t seed, int epoch, uint64_t sample) {
    CR_ASSERT(epoch >= 0 && aug->crop_padding >= 0);
    uint64_t stream = cr_rng_stream(CR_RNG_AUGMENT, (uint32_t)epoch), base = 4 * sample;
    augment_params p = {.pad = aug->crop_padding};
    uint64_t range = 2 * (uint64_t)aug->crop_padding + 1;
    if (aug->crop_padding > 0) {
        p.crop_x = (int)(((uint64_t)cr_rng_u32(seed, stream, base + 0) * range) >> 32);
        p.crop_y = (int)(((uint64_t)cr_rng_u32(seed, stream, base + 1) * range) >> 32);
    }
    if (aug->hflip) p.flip = (int)(cr_rng_u32(seed, stream, base + 2) >> 31);
    if (aug->rotate_deg != 0.0f) {
        double u = (double)(cr_rng_u32(seed, stream, base + 3) >> 8) * 0x1p-24;
        p.angle = (double)aug->rotate_deg * (2.0 * u - 1.0);
    }
    return p;
}

/* Pad by p zeros, take the 32x32 window at (crop_x, crop_y), mirror it if
 * asked: out (HWC). Source columns are tabulated once; -1 is padding. */
static void crop_flip(const uint8_t *planes, const augment_params *p, uint8_t *out) {
    int column[SIDE];
    for (int x = 0; x < SIDE; x++) {
        int sx = (p->flip ? SIDE - 1 - x : x) + p->crop_x - p->pad;
        column[x] = sx >= 0 && sx < SIDE ? sx : -1;
    }
    for (int y = 0; y < SIDE; y++) {
        uint8_t *row = out + y * SIDE * 3;
        int sy = y + p->crop_y - p->pad;
        if (sy < 0 || sy >= SIDE) {
            memset(row, 0, SIDE * 3);
            continue;
        }
        const uint8_t *r = planes + sy * SIDE, *g = r + AREA, *b = g + AREA;
        for (int x = 0; x < SIDE; x++) {
            int sx = column[x];
            row[3 * x + 0] = sx < 0 ? 0 : r[sx];
            row[3 * x + 1] = sx < 0 ? 0 : g[sx];
            row[3 * x + 2] = sx < 0 ? 0 : b[sx];
        }
    }
}

/* Python's round(x, 15) for |x| <= 1: CPython rounds the exact binary
 * value to 15 decimals half-to-even (dtoa) and reads the decimal back
 * correctly rounded. Here: n = that integer count of 1e-15, from the exact
 * product x * 1e15 = hi + lo (fma gives lo exactly); n < 2^53 and 1e15 are
 * exact doubles, so the division n / 1e15 is the same correctly rounded
 * value. (Checked against printf("%.15f") + strtod on millions of values.) */
static double round15(double x) {
    double hi = x * 1e15, lo = fma(x, 1e15, -hi);
    /* nearbyint is right unless hi is half-way, where lo picks the side.
     * Comparisons, not hi - n: a compiler may not fuse them with x * 1e15. */
    double n = nearbyint(hi);
    if (hi == n + 0.5 && lo > 0.0)
        n += 1.0;
    else if (hi == n - 0.5 && lo < 0.0)
        n -= 1.0;
    return n / 1e15;
}

/* Python's float `%`: the result takes the divisor's sign. */
static double python_mod(double x, double m) {
    double r = fmod(x, m);
    if (r != 0.0 && (r < 0.0) != (m < 0.0)) r += m;
    return r;
}

/* PIL's FIX: 16.16 fixed point, FLOOR(v * 65536 + 0.5) where FLOOR
 * truncates non-negative values. v * 65536 is exact, so no rounding order
 * (or fused multiply-add) can change the result. */
static int pil_fix(double v) {
    double t = v * 65536.0 + 0.5;
    return t < 0.0 ? (int)floor(t) : (int)t;
}

/* PIL's fast paths for right angles (Image.transpose): out[r][c] = in[src]. */
static void rotate_right_angle(const uint8_t *in, int quarter_turns, uint8_t *out) {
    for (int r = 0; r < SIDE; r++)
        for (int c = 0; c < SIDE; c++) {
            int sr = r, sc = c;
            if (quarter_turns == 1) sr = c, sc = SIDE - 1 - r;            /* ROTATE_90 */
            if (quarter_turns == 2) sr = SIDE - 1 - r, sc = SIDE - 1 - c; /* ROTATE_180 */
            if (quarter_turns == 3) sr = SIDE - 1 - c, sc = r;            /* ROTATE_270 */
            memcpy(out + (r * SIDE + c) * 3, in + (sr * SIDE + sc) * 3, 3);
        }
}

/* PIL's ImagingScaleAffine, used when the rounded sine is exactly zero (an
 * angle within ~3e-14 degrees of 0 or 180 but not equal to it): a per-axis
 * nearest lookup with double accumulation. */
static void rotate_scale(const uint8_t *in, const double m[6], uint8_t *out) {
    int xintab[SIDE] = {0}, xmin = SIDE, xmax = 0;
    double xo = m[2] + m[0] * 0.5, yo = m[5] + m[4] * 0.5;
    for (int x = 0; x < SIDE; x++, xo += m[0]) {
        int xin = xo < 0.0 ? -1 : (int)xo;
        if (xin >= 0 && xin < SIDE) {
            xmax = x + 1;
            if (x < xmin) xmin = x;
            xintab[x] = xin;
        }
    }
    for (int y = 0; y < SIDE; y++, yo += m[4]) {
        int yin = yo < 0.0 ? -1 : (int)yo;
        if (yin < 0 || yin >= SIDE) continue;
        for (int x = xmin; x < xmax; x++)
            memcpy(out + (y * SIDE + x) * 3, in + (yin * SIDE + xintab[x]) * 3, 3);
    }
}

/* PIL's coefficients for affine_fixed: the matrix rounded to 16.16 fixed
 * point, the translation moved to the first output pixel's centre. */
static void fixed_coefficients(const double m[6], int32_t a[6]) {
    a[0] = pil_fix(m[0]), a[1] = pil_fix(m[1]), a[3] = pil_fix(m[3]), a[4] = pil_fix(m[4]);
    a[2] = pil_fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
    a[5] = pil_fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
}

/* PIL's affine_fixed: the matrix maps output pixel centres to input
 * coordinates; in 16.16 fixed point, input pixel = floor(coordinate). The
 * accumulation is integer, hence exact. */
static void rotate_fixed(const uint8_t *in, const double m[6], uint8_t *out) {
    int32_t a[6];
    fixed_coefficients(m, a);
    int a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
    for (int y = 0; y < SIDE; y++, a2 += a1, a5 += a4) {
        int xx = a2, yy = a5;
        for (int x = 0; x < SIDE; x++, xx += a0, yy += a3) {
            /* Negative coordinates are outside: no shift of a negative int. */
            if (xx < 0 || yy < 0) continue;
            int xin = xx >> 16, yin = yy >> 16;
            if (xin < SIDE && yin < SIDE)
                memcpy(out + (y * SIDE + x) * 3, in + (yin * SIDE + xin) * 3, 3);
        }
    }
}

/* PIL's Image.rotate(angle, NEAREST, expand=False, center=None,
 * fillcolor=0) on a 32x32 RGB image, which is what torchvision's
 * F.rotate does for PIL input (it does not use _get_inverse_affine_matrix
 * there). Every step is PIL's, in its order, in double:
 *   a = angle % 360 (Python semantics); 0, 90, 180, 270 take transposes;
 *   r = -(a * pi/180); matrix = [c, s, 0, -s, c, 0] with c = round(cos r, 15),
 *   s = round(sin r, 15); translation so the centre (16, 16) stays put:
 *   m2 = c*-16 + s*-16 + 0 + 16, m5 = -s*-16 + c*-16 + 0 + 16.
 * Output pixel (x, y) samples input pixel (floor(m0*(x+.5) + m1*(y+.5) + m2),
 * floor(m3*(x+.5) + m4*(y+.5) + m5)), with the coefficients rounded to
 * 1/65536 and summed incrementally in 16.16 fixed point as PIL does; samples
 * outside the image stay 0. Positive angles turn the picture
 * counter-clockwise as displayed (y down).
 * Returns the quarter turns (0..3) where PIL takes a transpose, else -1
 * with the matrix in m. */
static int rotation_matrix(double angle, double m[6]) {
    double a = python_mod(angle, 360.0);
    if (a == 0.0 || a == 90.0 || a == 180.0 || a == 270.0) return (int)(a / 90.0);
    const double deg_to_rad = 3.14159265358979323846 / 180.0;
    double r = -(a * deg_to_rad);
    /* round(-sin r, 15) = -round(sin r, 15): half-to-even is symmetric. */
    double c = round15(cos(r)), s = round15(sin(r));
    m[0] = c, m[1] = s, m[2] = 0.0, m[3] = -s, m[4] = c, m[5] = 0.0;
    double m2 = m[0] * -16.0 + m[1] * -16.0 + m[2], m5 = m[3] * -16.0 + m[4] * -16.0 + m[5];
    m[2] = m2 + 16.0;
    m[5] = m5 + 16.0;
    return -1;
}

static void rotate_pil(const uint8_t *in, double angle, uint8_t *out) {
    double m[6];
    int quarter_turns = rotation_matrix(angle, m);
    if (quarter_turns >= 0) {
        rotate_right_angle(in, quarter_turns, out);
        return;
    }
    memset(out, 0, AREA * 3);
    if (m[1] == 0.0 && m[3] == 0.0)
        rotate_scale(in, m, out);
    else
        rotate_fixed(in, m, out);
}

void augment_apply(const uint8_t *planes, const augment_params *p, uint8_t *out) {
    CR_ASSERT(p->pad >= 0 && p->crop_x >= 0 && p->crop_x <= 2 * p->pad && p->crop_y >= 0 &&
              p->crop_y <= 2 * p->pad);
    if (p->angle == 0.0) {
        crop_flip(planes, p, out);
        return;
    }
    uint8_t cropped[AREA * 3];
    crop_flip(planes, p, cropped);
    rotate_pil(cropped, p->angle, out);
}

/* The transposes as fixed-point maps, output (x, y) -> input (xin, yin):
 * ROTATE_90 reads (31-y, x), ROTATE_180 (31-x, 31-y), ROTATE_270 (y, 31-x);
 * +1/2 (32768) lands inside the pixel so that floor is exact. */
static void right_angle_coefficients(int quarter_turns, int32_t a[6]) {
    enum { ONE = 65536, HALF = 32768, LAST = 31 * ONE + HALF };
    static const int32_t table[4][6] = {
        {ONE, 0, HALF, 0, ONE, HALF},
        {0, -ONE, LAST, ONE, 0, HALF},
        {-ONE, 0, LAST, 0, -ONE, LAST},
        {0, ONE, HALF, -ONE, 0, LAST},
    };
    memcpy(a, table[quarter_turns], sizeof table[0]);
}

cr_image_transform augment_transform(const augment_params *p, int32_t sample) {
    cr_image_transform t = {
        .sample = sample, .pad = p->pad, .crop_x = p->crop_x, .crop_y = p->crop_y, .flip = p->flip};
    if (p->angle == 0.0) return t;
    t.rotate = 1;
    double m[6];
    int quarter_turns = rotation_matrix(p->angle, m);
    if (quarter_turns >= 0) {
        right_angle_coefficients(quarter_turns, t.fix);
        return t;
    }
    /* PIL's scale path runs where the rounded sine is 0, so the rounded
     * cosine is exactly +-1 and m2, m5 are 0 or 32: per axis x -> x or
     * 31 - x, which the fixed-point map gives too. */
    if (m[1] == 0.0 && m[3] == 0.0) CR_ASSERT((m[0] == 1.0 || m[0] == -1.0) && m[4] == m[0]);
    fixed_coefficients(m, t.fix);
    return t;
}

cr_image_transform cr_augment_transform(const cr_augment *aug, uint64_t seed, int epoch,
                                        uint64_t sample) {
    CR_ASSERT(sample <= INT32_MAX);
    augment_params p = augment_draw(aug, seed, epoch, sample);
    return augment_transform(&p, (int32_t)sample);
}

void cr_augment_image(const uint8_t *planes, const cr_augment *aug, uint64_t seed, int epoch,
                      uint64_t sample, float *out) {
    augment_params p = augment_draw(aug, seed, epoch, sample);
    uint8_t image[AREA * 3];
    augment_apply(planes, &p, image);
    /* The expression of cr_cifar_batch, so no augmentation gives its bits.
     * The channel pattern repeats every 3 floats: blocks of 24 let the
     * compiler vectorise the division without changing any result. */
    float mean24[24], std24[24];
    for (int k = 0; k < 24; k++) mean24[k] = aug->mean[k % 3], std24[k] = aug->std[k % 3];
    for (int i = 0; i < AREA * 3; i += 24)
        for (int k = 0; k < 24; k++)
            out[i + k] = ((float)image[i + k] / 255.0f - mean24[k]) / std24[k];
}

/* Lemire's nearly-divisionless draw of an integer in [0, bound), exact: the
 * few products whose low word falls below 2^32 mod bound are rejected and
 * the next word is used. *index counts words used. */
static uint32_t draw_below(uint64_t seed, uint64_t stream, uint64_t *index, uint32_t bound) {
    uint64_t m = (uint64_t)cr_rng_u32(seed, stream, (*index)++) * bound;
    if ((uint32_t)m < bound) {
        uint32_t threshold = (uint32_t)(-bound) % bound;
        while ((uint32_t)m < threshold) m = (uint64_t)cr_rng_u32(seed, stream, (*index)++) * bound;
    }
    return (uint32_t)(m >> 32);
}

/* Fisher-Yates from the identity: for i = n-1 down to 1, swap perm[i] with
 * perm[j], j uniform in [0, i], drawn from words 0, 1, 2, ... of stream
 * (CR_RNG_SHUFFLE, epoch). */
void cr_epoch_permutation(uint64_t seed, int epoch, int n, int *perm) {
    CR_ASSERT(epoch >= 0 && n >= 0);
    uint64_t stream = cr_rng_stream(CR_RNG_SHUFFLE, (uint32_t)epoch), index = 0;
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)draw_below(seed, stream, &index, (uint32_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
