#include "check.h"
#include "cresnet/rng.h"

/* Known-answer vectors of Philox4x32-10 from the Random123 distribution. */
static void test_known_answers(void) {
    static const struct {
        uint32_t ctr[4], key[2], expect[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}, {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
        uint32_t out[4];
        cr_philox4x32_10(kat[k].ctr, kat[k].key, out);
        for (int i = 0; i < 4; i++)
            CHECK(out[i] == kat[k].expect[i], "vector %zu word %d: %08x", k, i, out[i]);
    }
}

static void test_counter_mapping(void) {
    /* Word i of a stream is lane i%4 of block i/4: independent of call order. */
    uint32_t ctr[4] = {1, 0, 7, 3}, key[2] = {42, 0}, out[4];
    cr_philox4x32_10(ctr, key, out);
    uint64_t stream = ((uint64_t)3 << 32) | 7;
    for (int lane = 0; lane < 4; lane++)
        CHECK(cr_rng_u32(42, stream, 4 + lane) == out[lane], "lane %d", lane);
}

static void test_uniform(void) {
    double sum = 0.0, sum_sq = 0.0;
    float lo = 1.0f, hi = 0.0f;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        float u = cr_rng_uniform(5, cr_rng_stream(CR_RNG_TEST, 1), (uint64_t)i);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        sum += u;
        sum_sq += (double)u * u;
    }
    double mean = sum / n, var = sum_sq / n - mean * mean;
    CHECK(lo >= 0.0f && hi < 1.0f, "range [%g, %g]", lo, hi);
    CHECK(fabs(mean - 0.5) < 0.005, "mean %g", mean);
    CHECK(fabs(var - 1.0 / 12.0) < 0.002, "variance %g", var);
    CHECK(cr_rng_uniform(5, 1, 3) != cr_rng_uniform(6, 1, 3), "seed changes values");
    CHECK(cr_rng_uniform(5, 1, 3) != cr_rng_uniform(5, 2, 3), "stream changes values");
}

int main(void) {
    test_known_answers();
    test_counter_mapping();
    test_uniform();
    return check_finish();
}
