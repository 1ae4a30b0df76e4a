/* Forced into test_cuda_ops.c for test_cuda_ops_cpu_standin (label unit):
 * a second CPU backend stands in for the CUDA one, so every check of the
 * GPU test runs on any machine. The fp32 backends then agree exactly, so what it
 * tests is the GPU test itself (buffer sizes, expectations, tolerances
 * applied to the right tensors) and that two CPU backends share nothing;
 * tests of ops the CPU backend lacks (graphs) say so and are skipped. */
#ifndef CRESNET_TEST_CPU_STANDIN_H
#define CRESNET_TEST_CPU_STANDIN_H

/* Ahead of every header, as test_cuda_ops.c asks for setenv. */
#define _POSIX_C_SOURCE 200809L

#include "cresnet/backend.h"

/* bf16 stands in as the CPU's bf16 (a real second implementation, so the
 * bf16 checks compare two different computations here); tf32, which the
 * CPU lacks, as fp32. */
static inline cr_backend *cpu_standin_create(int device, const cr_cuda_options *options) {
    (void)device;
    return cr_backend_cpu_create(0, options->math == CR_MATH_BF16 ? CR_MATH_BF16 : CR_MATH_FP32);
}

static inline int cpu_standin_count(void) { return 1; }

#define cr_backend_cuda_create cpu_standin_create
#define cr_cuda_device_count cpu_standin_count

#endif
