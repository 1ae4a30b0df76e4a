/* rng: counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 *
 * Every random value in cresnet is a pure function of (seed, stream, index):
 * no generator state is carried from call to call, so a value never depends
 * on which rank or thread asks for it, or in what order. Streams name the
 * purpose (parameter init, augmentation, shuffling) and the object (tensor
 * number, epoch); index is the element or sample.
 * Not here: distributions beyond uniform, or any global generator. */
#ifndef CRESNET_RNG_H
#define CRESNET_RNG_H

#include <stdint.h>

/* Purposes, the high 32 bits of a stream. */
enum {
    CR_RNG_INIT = 1,    /* parameter initialisation, low bits: tensor number */
    CR_RNG_TEST = 2,    /* values made up by tests and golden fixtures */
    CR_RNG_SHUFFLE = 3, /* per-epoch permutation, low bits: epoch */
    CR_RNG_AUGMENT = 4, /* per-sample augmentation, low bits: epoch */
};

static inline uint64_t cr_rng_stream(uint32_t purpose, uint32_t object) {
    return ((uint64_t)purpose << 32) | object;
}

/* The raw block function: 10 rounds of Philox4x32 on ctr with key. */
void cr_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Word `index` of stream `stream` under `seed`: lane index%4 of the block at
 * counter {index/4 (64 bits), stream (64 bits)}, key {seed (64 bits)}. */
uint32_t cr_rng_u32(uint64_t seed, uint64_t stream, uint64_t index);

/* Uniform in [0, 1) with 24 random bits: (u32 >> 8) * 2^-24, exact in float. */
float cr_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);

/* Fills out[0..n) with uniform values in [-bound, bound): (2u - 1) * bound. */
void cr_rng_fill_symmetric(float *out, uint64_t n, float bound, uint64_t seed, uint64_t stream);

#endif
