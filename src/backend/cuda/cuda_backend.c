/* The CUDA backend's table: device memory, one stream, device selection.
 * Convolutions are cuDNN's graph API (cuda_conv.c); everything else is our
 * own kernels and cuBLAS GEMMs for the linear layer (cuda_kernels.cu).
 *
 * Every op is enqueued on the backend's one stream and returns at once;
 * copy_to_host and copy_to_device return only when the copy is done, and
 * synchronize waits for the stream. All state lives in the context: the
 * stream, the cuDNN and cuBLAS handles bound to it, the convolution plan
 * cache and two scratch buffers that grow on demand.
 *
 * The calling thread's current device must be the backend's: create sets
 * it, and cresnet drives a backend from one thread. */
#include "cuda.h"

#include "cresnet/error.h"

#include <nvtx3/nvToolsExt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- failures ---- */

void cuda_fail(const char *file, int line, const char *library, const char *call,
               const char *message) {
    cr_fatal_at(CR_EXIT_INTERNAL, file, line, library, "%s: %s", call, message);
}

void cuda_fail_cudnn(const char *file, int line, const char *call, cudnnStatus_t status) {
    char detail[512] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    cr_fatal_at(CR_EXIT_INTERNAL, file, line, "cuDNN", "%s: %s%s%s", call,
                cudnnGetErrorString(status), detail[0] ? ": " : "", detail);
}

/* ---- memory ---- */

static void *cuda_alloc(cr_backend *be, size_t bytes) {
    void *ptr = NULL;
    /* cudaMalloc aligns to 256 bytes; a zero-byte request still gets a
     * distinct, freeable pointer, as from the CPU backend. */
    cudaError_t err = cudaMalloc(&ptr, bytes ? bytes : 256);
    if (err != cudaSuccess)
        CR_FAIL(CR_EXIT_INTERNAL, "cuda backend", "allocating %zu bytes on device %d: %s", bytes,
                cuda_ctx(be)->device, cudaGetErrorString(err));
    return ptr;
}

static void cuda_free(cr_backend *be, void *ptr) {
    (void)be;
    CR_CUDA(cudaFree(ptr));
}

static void cuda_zero(cr_backend *be, void *ptr, size_t bytes) {
    CR_CUDA(cudaMemsetAsync(ptr, 0, bytes, cuda_ctx(be)->stream));
}

static void cuda_copy(cr_backend *be, void *dst, const void *src, size_t bytes) {
    CR_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_ctx(be)->stream));
}

/* Host copies go on the backend's stream, so they wait for the ops before
 * them (a blocking cudaMemcpy would use the legacy default stream, which a
 * non-blocking stream does not wait for), and then the stream is drained so
 * the host may reuse or read its buffer at once. */
static void cuda_copy_to_device(cr_backend *be, void *dst, const void *host_src, size_t bytes) {
    cudaStream_t stream = cuda_ctx(be)->stream;
    CR_CUDA(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream));
    CR_CUDA(cudaStreamSynchronize(stream));
}

static void cuda_copy_to_host(cr_backend *be, void *host_dst, const void *src, size_t bytes) {
    cudaStream_t stream = cuda_ctx(be)->stream;
    CR_CUDA(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    CR_CUDA(cudaStreamSynchronize(stream));
}

static void cuda_synchronize(cr_backend *be) {
    CR_CUDA(cudaStreamSynchronize(cuda_ctx(be)->stream));
}

/* ---- scratch ---- */

/* Grows *buf to at least `bytes`. Work already on the stream may still read
 * the old buffer, so the stream is drained before it is freed; growth
 * happens a handful of times per run (new shapes), never in steady state.
 * While a graph lives the old buffer is kept instead (it may be the one the
 * graph was recorded with) and freed with the backend. Growing while
 * recording cannot be done (no drain, no allocation): the trainer records
 * only a step that has already run once with the same shapes. */
static void *grow(cuda_context *ctx, void **buf, size_t *have, size_t bytes) {
    if (bytes <= *have) return *buf;
    enum cudaStreamCaptureStatus capturing;
    CR_CUDA(cudaStreamIsCapturing(ctx->stream, &capturing));
    if (capturing != cudaStreamCaptureStatusNone)
        CR_FAIL(CR_EXIT_INTERNAL, "cuda backend",
                "scratch of %zu bytes needed while recording a graph (have %zu)", bytes, *have);
    CR_CUDA(cudaStreamSynchronize(ctx->stream));
    if (ctx->live_graphs > 0 && *buf) {
        void **grown = realloc(ctx->retired, (size_t)(ctx->num_retired + 1) * sizeof *grown);
        if (!grown) CR_FAIL(CR_EXIT_INTERNAL, "cuda backend", "out of memory");
        ctx->retired = grown;
        ctx->retired[ctx->num_retired++] = *buf;
    } else {
        CR_CUDA(cudaFree(*buf));
    }
    *buf = NULL;
    *have = 0;
    CR_CUDA(cudaMalloc(buf, bytes));
    *have = bytes;
    return *buf;
}

void *cuda_workspace(cr_backend *be, size_t bytes) {
    cuda_context *ctx = cuda_ctx(be);
    if (bytes == 0) return NULL;
    return grow(ctx, &ctx->workspace, &ctx->workspace_bytes, bytes);
}

double *cuda_partials(cr_backend *be, size_t count) {
    cuda_context *ctx = cuda_ctx(be);
    return grow(ctx, &ctx->partials, &ctx->partials_bytes, (count ? count : 1) * sizeof(double));
}

void *cuda_weights_bf16(cr_backend *be, size_t count) {
    cuda_context *ctx = cuda_ctx(be);
    return grow(ctx, &ctx->weights_bf16, &ctx->weights_bf16_bytes,
                (count ? count : 1) * sizeof(cr_bf16));
}

/* NVTX v3 is header-only: nothing to link, and the calls cost nothing
 * unless a profiler such as Nsight Systems is attached. */
static void cuda_range_push(cr_backend *be, const char *name) {
    (void)be;
    nvtxRangePushA(name);
}

static void cuda_range_pop(cr_backend *be) {
    (void)be;
    nvtxRangePop();
}

/* Page-locked, so that staging copies run at full PCIe/NVLink speed. */
static void *cuda_host_alloc(cr_backend *be, size_t bytes) {
    (void)be;
    void *ptr = NULL;
    CR_CUDA(cudaMallocHost(&ptr, bytes ? bytes : 1));
    return ptr;
}

static void cuda_host_free(cr_backend *be, void *ptr) {
    (void)be;
    CR_CUDA(cudaFreeHost(ptr));
}

static int cuda_host_accessible(cr_backend *be, const void *ptr) {
    (void)be;
    struct cudaPointerAttributes attr;
    CR_CUDA(cudaPointerGetAttributes(&attr, ptr));
    return attr.type == cudaMemoryTypeHost || attr.type == cudaMemoryTypeUnregistered;
}

/* ---- graphs ---- */

struct cr_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
};

/* Thread-local capture: other threads' CUDA calls (none today) could not
 * invalidate the recording. */
static void cuda_graph_begin(cr_backend *be) {
    CR_CUDA(cudaStreamBeginCapture(cuda_ctx(be)->stream, cudaStreamCaptureModeThreadLocal));
}

/* A recording that failed (an op the stream could not capture invalidates
 * it) or will not instantiate is reported as NULL, its error cleared. */
static cr_graph *cuda_graph_end(cr_backend *be) {
    cuda_context *ctx = cuda_ctx(be);
    cudaGraph_t graph = NULL;
    cudaError_t err = cudaStreamEndCapture(ctx->stream, &graph);
    if (err != cudaSuccess || !graph) {
        (void)cudaGetLastError();
        if (graph) CR_CUDA(cudaGraphDestroy(graph));
        return NULL;
    }
    cudaGraphExec_t exec = NULL;
    if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        CR_CUDA(cudaGraphDestroy(graph));
        return NULL;
    }
    cr_graph *g = cr_calloc(1, sizeof *g, "cuda graph");
    g->graph = graph;
    g->exec = exec;
    ctx->live_graphs++;
    return g;
}

static void cuda_graph_launch(cr_backend *be, cr_graph *graph) {
    CR_CUDA(cudaGraphLaunch(graph->exec, cuda_ctx(be)->stream));
}

static void cuda_graph_free(cr_backend *be, cr_graph *graph) {
    if (!graph) return;
    cuda_context *ctx = cuda_ctx(be);
    CR_CUDA(cudaStreamSynchronize(ctx->stream));
    CR_CUDA(cudaGraphExecDestroy(graph->exec));
    CR_CUDA(cudaGraphDestroy(graph->graph));
    free(graph);
    ctx->live_graphs--;
}

static size_t device_bytes_in_use(void) {
    size_t free_bytes = 0, total = 0;
    CR_CUDA(cudaMemGetInfo(&free_bytes, &total));
    return total - free_bytes;
}

/* Everything on the device counts, cuDNN's and cuBLAS's workspaces too;
 * the CUDA context itself was there before. */
static size_t cuda_device_memory_used(cr_backend *be) {
    size_t now = device_bytes_in_use(), start = cuda_ctx(be)->used_at_start;
    return now > start ? now - start : 0;
}

static void cuda_describe(cr_backend *be, char *out, size_t len) {
    struct cudaDeviceProp prop;
    CR_CUDA(cudaGetDeviceProperties(&prop, cuda_ctx(be)->device));
    /* A run's summary then records that the kernels were not the default. */
    snprintf(out, len, "%s%s", prop.name,
             cuda_ctx(be)->bn_vector ? ", BatchNorm on 16-byte vectors (CRESNET_CUDA_BN=vector)"
                                     : "");
}

/* ---- the table ---- */

static void cuda_destroy(cr_backend *be) {
    cuda_context *ctx = cuda_ctx(be);
    CR_CUDA(cudaStreamSynchronize(ctx->stream));
    cuda_conv_cache_free(ctx->conv_cache);
    CR_CUDA(cudaFree(ctx->workspace));
    CR_CUDA(cudaFree(ctx->partials));
    CR_CUDA(cudaFree(ctx->weights_bf16));
    for (int i = 0; i < ctx->num_retired; i++) CR_CUDA(cudaFree(ctx->retired[i]));
    free(ctx->retired);
    CR_CUDNN(cudnnDestroy(ctx->cudnn));
    CR_CUBLAS(cublasDestroy(ctx->cublas));
    CR_CUDA(cudaFree(ctx->cublas_workspace));
    CR_CUDA(cudaStreamDestroy(ctx->stream));
    free(ctx);
    free(be);
}

static const cr_backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .zero = cuda_zero,
    .copy = cuda_copy,
    .copy_to_device = cuda_copy_to_device,
    .copy_to_host = cuda_copy_to_host,
    .synchronize = cuda_synchronize,
    .range_push = cuda_range_push,
    .range_pop = cuda_range_pop,
    .describe = cuda_describe,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .host_accessible = cuda_host_accessible,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
    .device_memory_used = cuda_device_memory_used,
    .device_memory = 1,
    .augment_batch = cuda_augment_batch,
    .conv_plan = cuda_conv_plan,
    .conv_plan_free = cuda_conv_plan_free,
    .conv_forward = cuda_conv_forward,
    .conv_backward_data = cuda_conv_backward_data,
    .conv_backward_weight = cuda_conv_backward_weight,
    .bn_sums = cuda_bn_sums,
    .bn_finalize = cuda_bn_finalize,
    .bn_running_stats = cuda_bn_running_stats,
    .bn_apply = cuda_bn_apply,
    .bn_backward_sums = cuda_bn_backward_sums,
    .bn_backward_apply = cuda_bn_backward_apply,
    .avgpool_forward = cuda_avgpool_forward,
    .avgpool_backward = cuda_avgpool_backward,
    .linear_forward = cuda_linear_forward,
    .linear_backward = cuda_linear_backward,
    .softmax_xent = cuda_softmax_xent,
    .sgd_step = cuda_sgd_step,
    .scale = cuda_scale,
    .to_activations = cuda_to_activations,
};

void *cr_backend_cuda_stream(cr_backend *be) {
    if (be->ops != &cuda_ops)
        cr_fatal(CR_EXIT_INTERNAL, "cuda backend", "the %s backend has no CUDA stream",
                 be->ops->name);
    return cuda_ctx(be)->stream;
}

int cr_cuda_device_count(void) {
    int count = 0;
    /* No driver or no device is an answer here, not an error: tests ask
     * before they create a backend. Clear the error so that no later check
     * reports it. */
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return count;
}

void cr_cuda_device_uuid(int device, unsigned char uuid[16]) {
    struct cudaDeviceProp prop;
    CR_CUDA(cudaGetDeviceProperties(&prop, device));
    memcpy(uuid, prop.uuid.bytes, 16);
}

/* The kernels are built for sm_80 and sm_90 (PTX for newer): refuse older
 * devices with a clear message rather than "no kernel image" later. */
static void check_device(int device) {
    int count = cr_cuda_device_count();
    if (count == 0) cr_fatal(CR_EXIT_USAGE, "cuda backend", "no CUDA device (or no driver)");
    if (device < 0 || device >= count)
        cr_fatal(CR_EXIT_USAGE, "cuda backend", "device %d outside 0..%d", device, count - 1);
    struct cudaDeviceProp prop;
    CR_CUDA(cudaGetDeviceProperties(&prop, device));
    if (prop.major < 8)
        cr_fatal(CR_EXIT_USAGE, "cuda backend",
                 "device %d (%s) has compute capability %d.%d; 8.0 or newer is required", device,
                 prop.name, prop.major, prop.minor);
}

cr_backend *cr_backend_cuda_create(int device, const cr_cuda_options *options) {
    cr_math math = options->math;
    check_device(device);
    CR_CUDA(cudaSetDevice(device));
    cuda_context *ctx = cr_calloc(1, sizeof *ctx, "cuda backend");
    ctx->device = device;
    ctx->math = math;
    ctx->autotune = options->autotune;
    ctx->deterministic = options->deterministic;
    /* The scalar BatchNorm kernels ran ResNetLarge's bf16 step 8-12%
     * faster than the 16-byte ones (docs/PERFORMANCE.md): those are opt-in. */
    const char *bn = getenv("CRESNET_CUDA_BN");
    ctx->bn_vector = bn && strcmp(bn, "vector") == 0;
    const char *engines = getenv("CRESNET_CUDNN_ENGINES"); /* a diagnostic: exact engines only */
    ctx->cudnn_direct_only = engines && strcmp(engines, "direct") == 0;
    CR_CUDA(cudaFree(NULL)); /* the context exists before the baseline */
    ctx->used_at_start = device_bytes_in_use();
    /* Non-blocking: the stream never waits on the legacy default stream
     * that libraries or other code might use. */
    CR_CUDA(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
    CR_CUDNN(cudnnCreate(&ctx->cudnn));
    CR_CUDNN(cudnnSetStream(ctx->cudnn, ctx->stream));
    CR_CUBLAS(cublasCreate(&ctx->cublas));
    CR_CUBLAS(cublasSetStream(ctx->cublas, ctx->stream));
    /* Our own workspace (cuBLAS's guide suggests 32 MiB on Hopper), so that
     * no GEMM allocates one while a graph is being recorded. */
    enum { CUBLAS_WORKSPACE = 32 << 20 };
    CR_CUDA(cudaMalloc(&ctx->cublas_workspace, CUBLAS_WORKSPACE));
    CR_CUBLAS(cublasSetWorkspace(ctx->cublas, ctx->cublas_workspace, CUBLAS_WORKSPACE));
    /* fp32 (and bf16, whose head is fp32): plain GEMMs, so the linear layer
     * matches the CPU backend to fp32 rounding; tf32: cuBLAS may round the
     * inputs for tensor cores. */
    CR_CUBLAS(cublasSetMathMode(ctx->cublas, math == CR_MATH_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                  : CUBLAS_DEFAULT_MATH));
    cr_backend *be = cr_calloc(1, sizeof *be, "cuda backend");
    be->ops = &cuda_ops;
    be->context = ctx;
    be->math = math;
    return be;
}
