/* Convolutions through cuDNN's graph (backend) API, from C.
 *
 * Each pass (forward, backward-data, backward-filter) is a graph of one
 * convolution operation over NHWC activations and KRSC filters (= our OHWI).
 * cuDNN's heuristics (mode A, then the fallback list) rank engine
 * configurations; the first acceptable one that finalizes into an execution
 * plan is kept. Acceptable means, with CR_MATH_FP32, fp32 arithmetic
 * throughout: engines noted as tensor-core (TF32 on float data),
 * down-converting or reducing in lower precision are skipped, so results
 * match the CPU backend to fp32 rounding. CR_MATH_TF32 also accepts the
 * tensor-core engines (TF32 inputs, fp32 accumulation), never the
 * down-converting or reduced-precision ones. CR_MATH_BF16 describes x, w and
 * y as bf16 with fp32 compute and accepts what TF32 accepts; the weights go
 * in as a bf16 copy made per call (cuda_weights_bf16, a few MB at most) and
 * the weight gradient comes out in bf16 and is widened into the float
 * gradient, as PyTorch's autocast does. With fp32, deterministic engines are
 * preferred among the acceptable ones, then the heuristic's order; with
 * tf32 and bf16, the heuristic's order alone.
 *
 * Execution plans are made on first use and kept in a cache in the context,
 * keyed by (shape, pass, alignment): layers of one shape share a plan, and a
 * batch-size change and back (the last, partial batch of an epoch) finds its
 * plans again instead of running the heuristics anew. The cache lives as
 * long as the backend; it holds a few plans per distinct shape.
 *
 * Alignment: a plan states the byte alignment of its pointers. Plans are made
 * for 16-byte aligned pointers (cudaMalloc's, most offsets into the flat
 * parameter buffer) and, only when a call needs it, for 4-byte aligned ones
 * (a weight at an odd float offset of the parameter buffer is legal) or
 * 2-byte aligned ones (a bf16 tensor at an odd element offset).
 *
 * device.autotune times up to MAX_TUNED acceptable engines once per plan
 * on scratch buffers and keeps the fastest.
 *
 * Not here: fusing BatchNorm into the convolution. */
#include "cuda.h"

#include "cresnet/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PASS_FORWARD, PASS_BACKWARD_DATA, PASS_BACKWARD_FILTER, NUM_PASSES };
static const char *const pass_names[NUM_PASSES] = {"forward", "backward-data", "backward-filter"};

enum { ALIGNED_16, ALIGNED_4, ALIGNED_2, NUM_ALIGNMENTS };
static const int64_t alignment_bytes[NUM_ALIGNMENTS] = {16, 4, 2};

/* The variant pack names tensors by these ids: the x-shaped tensor (x or dx),
 * the filter (w or dw), the y-shaped tensor (y or dy). */
enum { UID_X = 1, UID_W = 2, UID_Y = 3 };

typedef struct {
    cudnnBackendDescriptor_t plan;
    int64_t workspace_bytes;
} conv_exec;

/* One execution plan and every descriptor it was built from: cuDNN may refer
 * to them, so they live and die together. */
enum { ENTRY_DESCRIPTORS = 7 };
typedef struct {
    cr_conv_shape shape;
    int pass, alignment;
    conv_exec exec;
    cudnnBackendDescriptor_t owned[ENTRY_DESCRIPTORS];
    int num_owned;
} cache_entry;

struct cuda_conv_cache {
    cache_entry *entries;
    int count, capacity;
};

struct cr_conv_plan {
    cr_conv_shape shape;
    conv_exec exec[NUM_PASSES][NUM_ALIGNMENTS]; /* looked up on first use */
};

/* ---- descriptors ---- */

#define SET(desc, attr, type, count, values)                                                       \
    CR_CUDNN(cudnnBackendSetAttribute((desc), (attr), (type), (count), (values)))

static cudnnBackendDescriptor_t descriptor(cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t desc;
    CR_CUDNN(cudnnBackendCreateDescriptor(type, &desc));
    return desc;
}

static void destroy(cudnnBackendDescriptor_t desc) {
    if (desc) CR_CUDNN(cudnnBackendDestroyDescriptor(desc));
}

/* A 4-D tensor in cuDNN's {N, C, H, W} order with NHWC strides. The filter
 * KRSC is the same with {K, C, R, S} for {N, C, H, W}. */
static cudnnBackendDescriptor_t tensor(int64_t uid, int64_t n, int64_t c, int64_t h, int64_t w,
                                       int64_t alignment, cudnnDataType_t type) {
    int64_t dims[4] = {n, c, h, w};
    int64_t strides[4] = {h * w * c, 1, w * c, c};
    cudnnBackendDescriptor_t t = descriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    SET(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    SET(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
    SET(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
    SET(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    SET(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    CR_CUDNN(cudnnBackendFinalize(t));
    return t;
}

/* Cross-correlation (what PyTorch and oneDNN call convolution), symmetric
 * padding, fp32 accumulation. */
static cudnnBackendDescriptor_t convolution(const cr_conv_shape *s) {
    int64_t spatial_dims = 2;
    int64_t pad[2] = {s->pad, s->pad}, stride[2] = {s->stride, s->stride}, dilation[2] = {1, 1};
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    cudnnBackendDescriptor_t conv = descriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    SET(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
    SET(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
    SET(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial_dims);
    SET(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilation);
    SET(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride);
    SET(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad);
    SET(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad);
    CR_CUDNN(cudnnBackendFinalize(conv));
    return conv;
}

/* The convolution operation of a pass: out = 1 * conv(...) + 0 * out, so
 * each pass overwrites its output (dw included, as the interface says). */
static cudnnBackendDescriptor_t operation(int pass, cudnnBackendDescriptor_t conv,
                                          cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t w,
                                          cudnnBackendDescriptor_t y) {
    static const cudnnBackendDescriptorType_t types[NUM_PASSES] = {
        CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
    };
    /* Per pass: alpha, beta, convolution, x-shaped, filter-shaped, y-shaped. */
    static const cudnnBackendAttributeName_t names[NUM_PASSES][6] = {
        {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY},
    };
    const cudnnBackendAttributeName_t *name = names[pass];
    float alpha = 1.0f, beta = 0.0f; /* CUDNN_TYPE_FLOAT: the compute type is float */
    cudnnBackendDescriptor_t op = descriptor(types[pass]);
    SET(op, name[0], CUDNN_TYPE_FLOAT, 1, &alpha);
    SET(op, name[1], CUDNN_TYPE_FLOAT, 1, &beta);
    SET(op, name[2], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv);
    SET(op, name[3], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SET(op, name[4], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w);
    SET(op, name[5], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    CR_CUDNN(cudnnBackendFinalize(op));
    return op;
}

static cudnnBackendDescriptor_t operation_graph(cudnnHandle_t handle, cudnnBackendDescriptor_t op) {
    cudnnBackendDescriptor_t graph = descriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    SET(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op);
    SET(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    CR_CUDNN(cudnnBackendFinalize(graph));
    return graph;
}

/* ---- choosing an engine ---- */

/* Engine configurations for the graph, best first; *count of them (0 when
 * the heuristic has nothing for this graph). The caller destroys them. */
static cudnnBackendDescriptor_t *heuristic_configs(cudnnBackendDescriptor_t graph,
                                                   cudnnBackendHeurMode_t mode, int64_t *count) {
    *count = 0;
    cudnnBackendDescriptor_t heur = descriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    SET(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    SET(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) {
        destroy(heur);
        return NULL;
    }
    int64_t available = 0;
    CR_CUDNN(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                      CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &available, NULL));
    /* The results are copied into descriptors we create. */
    cudnnBackendDescriptor_t *configs =
        cr_calloc(available > 0 ? (size_t)available : 1, sizeof *configs, "cuDNN heuristics");
    for (int64_t i = 0; i < available; i++)
        configs[i] = descriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t got = 0;
    CR_CUDNN(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                      CUDNN_TYPE_BACKEND_DESCRIPTOR, available, &got, configs));
    for (int64_t i = got; i < available; i++) destroy(configs[i]);
    destroy(heur);
    *count = got < available ? got : available;
    return configs;
}

enum { ENGINE_REJECTED, ENGINE_DETERMINISTIC, ENGINE_NONDETERMINISTIC };

typedef struct {
    int readable;
    int64_t index; /* the engine's global index, -1 when not known */
    int64_t count;
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
} engine_notes;

/* The numerical notes (and global index) of a configuration's engine. */
static engine_notes notes_of(cudnnBackendDescriptor_t config) {
    engine_notes n = {.index = -1};
    cudnnBackendDescriptor_t engine = descriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    int64_t engines = 0, indices = 0;
    n.readable =
        cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                 1, &engines, &engine) == CUDNN_STATUS_SUCCESS &&
        cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                 CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT,
                                 &n.count, n.notes) == CUDNN_STATUS_SUCCESS;
    if (engines == 1)
        (void)cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                                       &indices, &n.index);
    destroy(engine);
    if (!n.readable) n.count = 0;
    if (n.count > CUDNN_NUMERICAL_NOTE_TYPE_COUNT) n.count = CUDNN_NUMERICAL_NOTE_TYPE_COUNT;
    return n;
}

/* FFT and Winograd engines: fp32 arithmetic with their own rounding. */
static int is_fft_or_winograd(cudnnBackendNumericalNote_t note) {
    return note == CUDNN_NUMERICAL_NOTE_FFT || note == CUDNN_NUMERICAL_NOTE_WINOGRAD ||
           note == CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4 ||
           note == CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6 ||
           note == CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13;
}

/* The arithmetic a note names, for the log; "" for other notes. */
static const char *arithmetic_of(cudnnBackendNumericalNote_t note) {
    if (is_fft_or_winograd(note)) return note == CUDNN_NUMERICAL_NOTE_FFT ? "fft" : "winograd";
    return note == CUDNN_NUMERICAL_NOTE_TENSOR_CORE ? "tensor-core" : "";
}

/* What the engine's numerical notes say about a configuration. One whose
 * notes cannot be read is passed over like one with unwanted notes;
 * direct_only passes over FFT and Winograd engines too. */
static int engine_kind(cudnnBackendDescriptor_t config, cr_math math, int direct_only) {
    engine_notes n = notes_of(config);
    if (!n.readable) return ENGINE_REJECTED;
    int kind = ENGINE_DETERMINISTIC;
    for (int64_t i = 0; i < n.count; i++) {
        if (direct_only && is_fft_or_winograd(n.notes[i])) return ENGINE_REJECTED;
        switch (n.notes[i]) {
        case CUDNN_NUMERICAL_NOTE_TENSOR_CORE: /* on float data: TF32 */
            if (math != CR_MATH_FP32) break;
            return ENGINE_REJECTED;
        case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS:
        case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION: return ENGINE_REJECTED;
        case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC: kind = ENGINE_NONDETERMINISTIC; break;
        default: break; /* FFT and Winograd among them: fine unless direct_only */
        }
    }
    return kind;
}

/* The execution plan of a configuration, or NULL where the engine does not
 * support this graph on this device: finalize refusing is part of the search. */
static cudnnBackendDescriptor_t try_plan(cudnnHandle_t handle, cudnnBackendDescriptor_t config) {
    cudnnBackendDescriptor_t plan = descriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    SET(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    SET(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &config);
    if (cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS) return plan;
    destroy(plan);
    return NULL;
}

static int64_t plan_workspace(cudnnBackendDescriptor_t plan) {
    int64_t count = 0, bytes = 0;
    CR_CUDNN(cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                      CUDNN_TYPE_INT64, 1, &count, &bytes));
    return bytes;
}

/* A plan asking for more workspace than this is passed over for the next
 * engine rather than failing the allocation later. */
#define MAX_WORKSPACE_BYTES ((int64_t)1 << 30)

/* What an engine search needs besides the graph. With autotune, x, w, y
 * are device buffers of the pass's three shapes to time candidates on. */
typedef struct {
    cudnnHandle_t handle;
    cr_math math;
    int autotune;
    int deterministic; /* only engines without the nondeterministic note */
    int direct_only;   /* no FFT or Winograd engines (CRESNET_CUDNN_ENGINES=direct) */
    cudaStream_t stream;
    void *x, *w, *y;
} engine_search;

/* Milliseconds per run of a plan, or INFINITY where it cannot run (no
 * memory for its workspace, or cuDNN refuses at execution): that candidate
 * is passed over, not the job failed. One run warms up; then the stream is
 * held by a spin of about a millisecond while the timed runs are queued
 * behind it, so the events measure the device's time, not the host's
 * launches (a small convolution takes less than cuDNN's launch overhead).
 * The data are whatever the buffers hold: a convolution's speed does not
 * depend on its values. */
enum { TIMED_RUNS = 5, MAX_TUNED = 8 };
static float time_plan(const engine_search *es, cudnnBackendDescriptor_t plan) {
    void *workspace = NULL;
    int64_t bytes = plan_workspace(plan);
    if (bytes > 0 && cudaMalloc(&workspace, (size_t)bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return INFINITY;
    }
    int64_t uids[3] = {UID_X, UID_W, UID_Y};
    void *pointers[3] = {es->x, es->w, es->y};
    cudnnBackendDescriptor_t pack = descriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    SET(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
    SET(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, pointers);
    SET(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    CR_CUDNN(cudnnBackendFinalize(pack));
    float ms = INFINITY;
    if (cudnnBackendExecute(es->handle, plan, pack) == CUDNN_STATUS_SUCCESS) {
        cudaEvent_t start, stop;
        CR_CUDA(cudaEventCreate(&start));
        CR_CUDA(cudaEventCreate(&stop));
        cuda_spin(es->stream, 1000);
        CR_CUDA(cudaEventRecord(start, es->stream));
        for (int i = 0; i < TIMED_RUNS; i++) CR_CUDNN(cudnnBackendExecute(es->handle, plan, pack));
        CR_CUDA(cudaEventRecord(stop, es->stream));
        CR_CUDA(cudaEventSynchronize(stop));
        CR_CUDA(cudaEventElapsedTime(&ms, start, stop));
        ms /= TIMED_RUNS;
        CR_CUDA(cudaEventDestroy(start));
        CR_CUDA(cudaEventDestroy(stop));
    }
    CR_CUDA(cudaStreamSynchronize(es->stream)); /* before the workspace goes */
    destroy(pack);
    CR_CUDA(cudaFree(workspace));
    return ms;
}

/* Walks the heuristic's list: with fp32, deterministic engines first (runs
 * that repeat bit for bit), then the rest; with tf32, the heuristic's order
 * (a deterministic fp32 engine ranked low would push out the tensor-core
 * ones TF32 is for); with deterministic set, deterministic engines only,
 * in the heuristic's order. Without autotune the first engine that makes a plan
 * wins; with it, the fastest of up to MAX_TUNED of the first kind that has
 * any. On success the chosen configuration is moved to *config (the caller
 * owns it) and its kind to *kind; every other one is destroyed. */
static cudnnBackendDescriptor_t plan_from_heuristic(const engine_search *es,
                                                    cudnnBackendDescriptor_t graph,
                                                    cudnnBackendHeurMode_t mode,
                                                    cudnnBackendDescriptor_t *config, int *kind) {
    int64_t count;
    cudnnBackendDescriptor_t *configs = heuristic_configs(graph, mode, &count);
    cudnnBackendDescriptor_t plan = NULL;
    int *kinds = cr_calloc(count > 0 ? (size_t)count : 1, sizeof *kinds, "cuDNN heuristics");
    for (int64_t i = 0; i < count; i++)
        kinds[i] = engine_kind(configs[i], es->math, es->direct_only);
    const int preference[] = {ENGINE_DETERMINISTIC, ENGINE_NONDETERMINISTIC};
    int ordered = es->math == CR_MATH_FP32 || es->deterministic; /* by kind, then rank */
    int rounds = ordered && !es->deterministic ? 2 : 1, tried = 0;
    int64_t best = -1;
    float best_ms = 0.0f;
    for (int p = 0; p < rounds && !plan; p++) {
        for (int64_t i = 0; i < count && tried < MAX_TUNED; i++) {
            if (kinds[i] == ENGINE_REJECTED || (ordered && kinds[i] != preference[p])) continue;
            cudnnBackendDescriptor_t candidate = try_plan(es->handle, configs[i]);
            if (candidate && plan_workspace(candidate) > MAX_WORKSPACE_BYTES) {
                destroy(candidate);
                candidate = NULL;
            }
            if (!candidate) continue;
            tried++;
            float ms = es->autotune ? time_plan(es, candidate) : 0.0f;
            if (isinf(ms) || (plan && ms >= best_ms)) { /* cannot run, or slower */
                destroy(candidate);
                continue;
            }
            destroy(plan);
            plan = candidate, best = i, best_ms = ms;
            if (!es->autotune) break;
        }
    }
    if (plan) {
        *config = configs[best];
        configs[best] = NULL;
        *kind = kinds[best];
    }
    for (int64_t i = 0; i < count; i++) destroy(configs[i]);
    free(configs);
    free(kinds);
    return plan;
}

/* ---- the cache ---- */

static void entry_own(cache_entry *e, cudnnBackendDescriptor_t desc) {
    CR_ASSERT(e->num_owned < ENTRY_DESCRIPTORS);
    e->owned[e->num_owned++] = desc;
}

/* CRESNET_CUDNN_LOG set: one line per plan made, for a first look at a new
 * GPU (which engine, deterministic or not, how much workspace). */
static void log_choice(const cache_entry *e, cudnnBackendDescriptor_t config, int kind) {
    engine_notes n = notes_of(config);
    char arithmetic[64] = "";
    for (int64_t i = 0; i < n.count; i++) {
        const char *name = arithmetic_of(n.notes[i]);
        /* a Winograd engine may carry the general note and a tile's */
        if (name[0] && !strstr(arithmetic, name) &&
            strlen(arithmetic) + strlen(name) + 1 < sizeof arithmetic) {
            strcat(arithmetic, " ");
            strcat(arithmetic, name);
        }
    }
    const cr_conv_shape *s = &e->shape;
    fprintf(stderr,
            "cuDNN: %s %dx%d s%d %d->%d on %dx%d batch %d (%lld-byte aligned): engine %lld, %s, "
            "workspace %lld bytes, notes:%s\n",
            pass_names[e->pass], s->kernel, s->kernel, s->stride, s->in_c, s->out_c, s->in_h,
            s->in_w, s->batch, (long long)alignment_bytes[e->alignment], (long long)n.index,
            kind == ENGINE_DETERMINISTIC ? "deterministic" : "non-deterministic",
            (long long)e->exec.workspace_bytes, arithmetic[0] ? arithmetic : " none");
}

/* Device buffers of the pass's x-, filter- and y-shaped tensors for timing
 * (autotune), or none. */
static void search_buffers(engine_search *es, const cr_conv_shape *s) {
    if (!es->autotune) return;
    size_t x = (size_t)s->batch * s->in_h * s->in_w * s->in_c;
    size_t w = (size_t)s->out_c * s->kernel * s->kernel * s->in_c;
    size_t y = (size_t)s->batch * s->out_h * s->out_w * s->out_c;
    size_t sizes[3] = {x, w, y};
    void **buffers[3] = {&es->x, &es->w, &es->y};
    for (int i = 0; i < 3; i++) {
        CR_CUDA(cudaMalloc(buffers[i], sizes[i] * sizeof(float)));
        CR_CUDA(cudaMemsetAsync(*buffers[i], 0, sizes[i] * sizeof(float), es->stream));
    }
}

static void search_buffers_free(engine_search *es) {
    if (!es->autotune) return;
    CR_CUDA(cudaStreamSynchronize(es->stream));
    CR_CUDA(cudaFree(es->x));
    CR_CUDA(cudaFree(es->w));
    CR_CUDA(cudaFree(es->y));
}

static void entry_build(cache_entry *e, const cuda_context *ctx) {
    const cr_conv_shape *s = &e->shape;
    cudnnHandle_t handle = ctx->cudnn;
    cr_math math = ctx->math;
    int64_t align = alignment_bytes[e->alignment];
    cudnnDataType_t type = math == CR_MATH_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t x = tensor(UID_X, s->batch, s->in_c, s->in_h, s->in_w, align, type);
    cudnnBackendDescriptor_t w =
        tensor(UID_W, s->out_c, s->in_c, s->kernel, s->kernel, align, type);
    cudnnBackendDescriptor_t y = tensor(UID_Y, s->batch, s->out_c, s->out_h, s->out_w, align, type);
    cudnnBackendDescriptor_t conv = convolution(s);
    cudnnBackendDescriptor_t op = operation(e->pass, conv, x, w, y);
    cudnnBackendDescriptor_t graph = operation_graph(handle, op);
    cudnnBackendDescriptor_t owned[] = {x, w, y, conv, op, graph};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) entry_own(e, owned[i]);

    const cudnnBackendHeurMode_t modes[] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    cudnnBackendDescriptor_t config = NULL, plan = NULL;
    int kind = ENGINE_REJECTED;
    engine_search es = {.handle = handle,
                        .math = math,
                        .autotune = ctx->autotune,
                        .deterministic = ctx->deterministic,
                        .direct_only = ctx->cudnn_direct_only,
                        .stream = ctx->stream};
    search_buffers(&es, s);
    for (size_t m = 0; m < sizeof modes / sizeof modes[0] && !plan; m++)
        plan = plan_from_heuristic(&es, graph, modes[m], &config, &kind);
    search_buffers_free(&es);
    if (!plan)
        cr_fatal(CR_EXIT_INTERNAL, "cuDNN",
                 "no %s%s engine for the %s pass of a %dx%d stride-%d convolution %d->%d on "
                 "%dx%dx%d (batch %d, %lld-byte aligned)",
                 ctx->deterministic ? "deterministic " : "",
                 math == CR_MATH_TF32   ? "fp32/tf32"
                 : math == CR_MATH_BF16 ? "bf16"
                                        : "fp32",
                 pass_names[e->pass], s->kernel, s->kernel, s->stride, s->in_c, s->out_c, s->in_h,
                 s->in_w, s->in_c, s->batch, (long long)align);
    entry_own(e, config);
    e->exec.workspace_bytes = plan_workspace(plan);
    e->exec.plan = plan;
    if (getenv("CRESNET_CUDNN_LOG")) log_choice(e, config, kind);
}

/* cr_conv_shape is ten ints: no padding, so memcmp compares exactly them. */
static int same_key(const cache_entry *e, const cr_conv_shape *s, int pass, int alignment) {
    return e->pass == pass && e->alignment == alignment && memcmp(&e->shape, s, sizeof *s) == 0;
}

static conv_exec cached_plan(cuda_context *ctx, const cr_conv_shape *s, int pass, int alignment) {
    if (!ctx->conv_cache) ctx->conv_cache = cr_calloc(1, sizeof *ctx->conv_cache, "conv cache");
    cuda_conv_cache *cache = ctx->conv_cache;
    for (int i = 0; i < cache->count; i++)
        if (same_key(&cache->entries[i], s, pass, alignment)) return cache->entries[i].exec;
    if (cache->count == cache->capacity) {
        int capacity = cache->capacity ? 2 * cache->capacity : 16;
        cache_entry *grown = realloc(cache->entries, (size_t)capacity * sizeof *grown);
        if (!grown) cr_fatal(CR_EXIT_INTERNAL, "conv cache", "out of memory");
        cache->entries = grown;
        cache->capacity = capacity;
    }
    /* Engine search and plan finalize may allocate: not while recording
     * (the trainer records only shapes that have run before). */
    enum cudaStreamCaptureStatus capturing;
    CR_CUDA(cudaStreamIsCapturing(ctx->stream, &capturing));
    if (capturing != cudaStreamCaptureStatusNone)
        cr_fatal(CR_EXIT_INTERNAL, "cuda backend",
                 "a convolution plan was first needed while recording a graph");
    cache_entry *e = &cache->entries[cache->count];
    memset(e, 0, sizeof *e);
    e->shape = *s;
    e->pass = pass;
    e->alignment = alignment;
    entry_build(e, ctx);
    cache->count++;
    return e->exec;
}

void cuda_conv_cache_free(cuda_conv_cache *cache) {
    if (!cache) return;
    for (int i = 0; i < cache->count; i++) {
        cache_entry *e = &cache->entries[i];
        destroy(e->exec.plan);
        for (int k = e->num_owned - 1; k >= 0; k--) destroy(e->owned[k]);
    }
    free(cache->entries);
    free(cache);
}

/* ---- the ops ---- */

cr_conv_plan *cuda_conv_plan(cr_backend *be, const cr_conv_shape *shape) {
    (void)be;
    const cr_conv_shape *s = shape;
    if (s->batch < 1 || s->in_h < 1 || s->in_w < 1 || s->in_c < 1 || s->out_c < 1 ||
        s->kernel < 1 || s->stride < 1 || s->pad < 0 || s->out_h < 1 || s->out_w < 1)
        cr_fatal(CR_EXIT_INTERNAL, "cuda backend", "invalid convolution shape");
    cr_conv_plan *plan = cr_calloc(1, sizeof *plan, "conv plan");
    plan->shape = *s;
    return plan;
}

/* The execution plans stay in the cache for the next plan of this shape. */
void cuda_conv_plan_free(cr_backend *be, cr_conv_plan *plan) {
    (void)be;
    free(plan);
}

/* The class of the least aligned of three pointers (bf16 tensors at an odd
 * element offset are only 2-byte aligned). */
static int alignment_of(const void *x, const void *w, const void *y) {
    uintptr_t bits = (uintptr_t)x | (uintptr_t)w | (uintptr_t)y;
    return (bits & 15) == 0 ? ALIGNED_16 : (bits & 3) == 0 ? ALIGNED_4 : ALIGNED_2;
}

/* Runs one pass; x, w, y are the x-, filter- and y-shaped tensors, whichever
 * of them is the output. */
static void conv_run(cr_backend *be, cr_conv_plan *plan, int pass, const void *x, const void *w,
                     const void *y) {
    cuda_context *ctx = cuda_ctx(be);
    int alignment = alignment_of(x, w, y);
    conv_exec *exec = &plan->exec[pass][alignment];
    if (!exec->plan) *exec = cached_plan(ctx, &plan->shape, pass, alignment);
    void *workspace = cuda_workspace(be, (size_t)exec->workspace_bytes);

    int64_t uids[3] = {UID_X, UID_W, UID_Y};
    void *pointers[3] = {(void *)x, (void *)w, (void *)y};
    cudnnBackendDescriptor_t pack = descriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    SET(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
    SET(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, pointers);
    SET(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    CR_CUDNN(cudnnBackendFinalize(pack));
    /* Enqueued on the handle's stream, the backend's; the pack is read here
     * and may go at once. */
    CR_CUDNN(cudnnBackendExecute(ctx->cudnn, exec->plan, pack));
    destroy(pack);
}

static size_t weight_count(const cr_conv_plan *plan) {
    const cr_conv_shape *s = &plan->shape;
    return (size_t)s->out_c * s->kernel * s->kernel * s->in_c;
}

/* The weights as the plan's data type wants them: the float weights, or a
 * bf16 copy of them. */
static const void *weights_in(cr_backend *be, const cr_conv_plan *plan, const float *w) {
    if (be->math != CR_MATH_BF16) return w;
    void *copy = cuda_weights_bf16(be, weight_count(plan));
    cuda_float_to_bf16(be, w, weight_count(plan), copy);
    return copy;
}

void cuda_conv_forward(cr_backend *be, cr_conv_plan *plan, const void *x, const float *w, void *y) {
    conv_run(be, plan, PASS_FORWARD, x, weights_in(be, plan, w), y);
}

void cuda_conv_backward_data(cr_backend *be, cr_conv_plan *plan, const void *dy, const float *w,
                             void *dx) {
    conv_run(be, plan, PASS_BACKWARD_DATA, dx, weights_in(be, plan, w), dy);
}

void cuda_conv_backward_weight(cr_backend *be, cr_conv_plan *plan, const void *x, const void *dy,
                               float *dw) {
    if (be->math != CR_MATH_BF16) {
        conv_run(be, plan, PASS_BACKWARD_FILTER, x, dw, dy);
        return;
    }
    void *dw_bf16 = cuda_weights_bf16(be, weight_count(plan));
    conv_run(be, plan, PASS_BACKWARD_FILTER, x, dw_bf16, dy);
    cuda_bf16_to_float(be, dw_bf16, weight_count(plan), dw);
}
