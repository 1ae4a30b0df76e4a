/* An activation read as a float and written from one, whatever type T the
 * backend stores (float, or cr_bf16 rounded as the CPU backend rounds): the
 * device code's one place for it, shared by cuda_bn.cuh and cuda_ops.cuh.
 * Needs cresnet/backend.h before it. */
#ifndef CRESNET_CUDA_ACTIVATIONS_CUH
#define CRESNET_CUDA_ACTIVATIONS_CUH

namespace {

__device__ float load(const float *p, long i) { return p[i]; }
__device__ float load(const cr_bf16 *p, long i) { return cr_bf16_to_float(p[i]); }
__device__ void store(float *p, long i, float v) { p[i] = v; }
__device__ void store(cr_bf16 *p, long i, float v) { p[i] = cr_bf16_from_float(v); }

} // namespace

#endif
