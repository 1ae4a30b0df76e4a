/* The CPU backend against PyTorch (float64) on fixtures written by
 * make_golden.py: for each model, from the same initial state and batch of
 * 16 real CIFAR-10 images, in training and in eval mode: logits and loss
 * (relative error <= 1e-5), every parameter gradient (relative L2 <= 1e-4),
 * every parameter and momentum buffer after one SGD step (<= 1e-5), and the
 * BatchNorm running statistics (<= 1e-5). Large tensors are compared on
 * the fixture's strided sample (every ceil(n/2048)-th element).
 *
 * A ReLU input within float32 rounding of zero may fall on either side in
 * float32, and one such flip can move a whole gradient channel. The fixture
 * measures, per tensor, how far flipping each of those ambiguous inputs
 * moves the reference (flip_bound); that is added to the tolerance of
 * gradients, parameters and momentum. Logits and loss get no allowance.
 * usage: test_golden FIXTURE_DIR small|medium|large|custom */
#include "check.h"
#include "cresnet/backend.h"
#include "cresnet/comm.h"
#include "cresnet/io.h"
#include "cresnet/model.h"

#include <stdlib.h>
#include <string.h>

enum { BATCH = 16, SAMPLE_CAP = 2048 };

static cr_safetensors open_fixture(const char *dir, const char *name) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    cr_safetensors st;
    if (cr_safetensors_read(path, &st, err, sizeof err) != 0) {
        printf("FAIL cannot read %s: %s\n", path, err);
        exit(1);
    }
    return st;
}

static const float *tensor(const cr_safetensors *st, const char *name, size_t expect) {
    const cr_st_tensor *t = cr_safetensors_find(st, name);
    if (!t || strcmp(t->dtype, "F32") != 0 || (expect && cr_st_numel(t) != expect)) {
        printf("FAIL fixture tensor %s missing or not F32[%zu]\n", name, expect);
        exit(1);
    }
    return (const float *)(st->data + t->begin);
}

static size_t sample_stride(size_t n) { return (n + SAMPLE_CAP - 1) / SAMPLE_CAP; }

/* Relative L2 error of ours (PyTorch layout, n elements, sampled) against
 * the fixture's sampled reference. */
static double sampled_error(const float *ours, size_t n, const float *reference) {
    double err = 0.0, norm = 0.0;
    size_t stride = sample_stride(n);
    for (size_t i = 0, k = 0; i < n; i += stride, k++) {
        double d = (double)ours[i] - reference[k];
        err += d * d;
        norm += (double)reference[k] * reference[k];
    }
    return norm > 0.0 ? sqrt(err / norm) : sqrt(err);
}

/* Every tensor of a flat host buffer against `<prefix>.<name>` in the
 * fixture, each within tol (+ allowance[i] when allowance is not NULL). */
static void compare_all(const cr_safetensors *fx, const cr_tensor_info *tensors, int count,
                        const float *flat, const char *prefix, double tol, const float *allowance) {
    for (int i = 0; i < count; i++) {
        const cr_tensor_info *t = &tensors[i];
        char name[160];
        snprintf(name, sizeof name, "%s.%s", prefix, t->name);
        const cr_st_tensor *ref = cr_safetensors_find(fx, name);
        if (!ref) continue; /* e.g. no running stats in eval mode */
        float *torch = malloc(t->count * sizeof(float));
        cr_tensor_to_torch(t, flat + t->offset, torch);
        CHECK(cr_st_numel(ref) ==
                  (t->count + sample_stride(t->count) - 1) / sample_stride(t->count),
              "%s sample size", name);
        double err = sampled_error(torch, t->count, (const float *)(fx->data + ref->begin));
        double limit = tol + (allowance ? allowance[i] : 0.0);
        CHECK(err <= limit, "%s: relative L2 error %.3g > %.3g", name, err, limit);
        free(torch);
    }
}

typedef struct {
    cr_backend *be;
    cr_model *model;
    const cr_model_layout *layout;
    float *params, *buffers, *momentum; /* host, initial state */
    float *images;
    int32_t *labels;
} golden_case;

/* Fixture state: our init for conv/linear (checked against the fixture's
 * copy), the fixture's BatchNorm values, generated momentum buffers. */
static void initial_state(golden_case *gc, const cr_safetensors *fx) {
    const cr_model_layout *l = gc->layout;
    gc->params = malloc(l->param_count * sizeof(float));
    gc->buffers = malloc(l->buffer_count * sizeof(float));
    gc->momentum = malloc(l->param_count * sizeof(float));
    cr_model_init(l, 1234, gc->params, gc->buffers);
    compare_all(fx, l->params, l->num_params, gc->params, "init", 0.0, NULL);
    const cr_tensor_info *groups[2] = {l->params, l->buffers};
    int counts[2] = {l->num_params, l->num_buffers};
    float *flats[2] = {gc->params, gc->buffers};
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < counts[g]; i++) {
            const cr_tensor_info *t = &groups[g][i];
            if (t->kind == CR_TENSOR_CONV_WEIGHT || t->kind == CR_TENSOR_LINEAR_WEIGHT ||
                t->kind == CR_TENSOR_LINEAR_BIAS)
                continue;
            char name[160];
            snprintf(name, sizeof name, "state.%s", t->name);
            memcpy(flats[g] + t->offset, tensor(fx, name, t->count), t->count * sizeof(float));
        }
    for (int p = 0; p < l->num_params; p++) {
        const cr_tensor_info *t = &l->params[p];
        float *torch = malloc(t->count * sizeof(float));
        cr_rng_fill_symmetric(torch, t->count, 0.01f, 1234, cr_rng_stream(CR_RNG_TEST, p));
        cr_tensor_from_torch(t, torch, gc->momentum + t->offset);
        free(torch);
    }
}

static void load_input(golden_case *gc, const cr_safetensors *in) {
    const float *nchw = tensor(in, "input", (size_t)BATCH * 3 * 32 * 32);
    gc->images = malloc((size_t)BATCH * 32 * 32 * 3 * sizeof(float));
    for (int n = 0; n < BATCH; n++)
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 32 * 32; p++)
                gc->images[(n * 1024 + p) * 3 + c] = nchw[(n * 3 + c) * 1024 + p];
    const cr_st_tensor *labels = cr_safetensors_find(in, "labels");
    CHECK(labels && strcmp(labels->dtype, "I32") == 0 && cr_st_numel(labels) == BATCH, "labels");
    gc->labels = malloc(BATCH * sizeof(int32_t));
    memcpy(gc->labels, in->data + labels->begin, BATCH * sizeof(int32_t));
}

static void run_mode(golden_case *gc, const cr_safetensors *fx, const char *mode) {
    const cr_model_layout *l = gc->layout;
    cr_model *m = gc->model;
    cr_backend *be = gc->be;
    size_t pbytes = l->param_count * sizeof(float), bbytes = l->buffer_count * sizeof(float);
    be->ops->copy_to_device(be, cr_model_params(m), gc->params, pbytes);
    be->ops->copy_to_device(be, cr_model_buffers(m), gc->buffers, bbytes);
    be->ops->copy_to_device(be, cr_model_momentum(m), gc->momentum, pbytes);
    int training = strcmp(mode, "train") == 0;
    char name[64];

    cr_comm *comm = cr_comm_none_create();
    cr_forward_result r =
        cr_model_forward(m, gc->images, gc->labels, BATCH, training, 1.0f / BATCH, comm);
    snprintf(name, sizeof name, "%s.loss", mode);
    CHECK_CLOSE(r.loss_sum / BATCH, tensor(fx, name, 1)[0], 1e-5, 0.0, name);
    float logits[BATCH * CR_NUM_CLASSES];
    be->ops->copy_to_host(be, logits, cr_model_logits(m), sizeof logits);
    snprintf(name, sizeof name, "%s.logits", mode);
    double err =
        sampled_error(logits, BATCH * CR_NUM_CLASSES, tensor(fx, name, BATCH * CR_NUM_CLASSES));
    CHECK(err <= 1e-5, "%s: relative L2 error %.3g", name, err);

    cr_model_backward(m, comm, NULL);
    cr_sgd_args sgd = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = 1};
    float *host = malloc(pbytes > bbytes ? pbytes : bbytes);
    be->ops->copy_to_host(be, host, cr_model_grads(m), pbytes);
    const float *allowance[3];
    const char *kinds[3] = {"grad", "param", "momentum"};
    for (int k = 0; k < 3; k++) {
        snprintf(name, sizeof name, "%s.flip_bound.%s", mode, kinds[k]);
        allowance[k] = tensor(fx, name, (size_t)l->num_params);
    }
    snprintf(name, sizeof name, "%s.grad", mode);
    compare_all(fx, l->params, l->num_params, host, name, 1e-4, allowance[0]);
    be->ops->sgd_step(be, cr_model_params(m), cr_model_grads(m), cr_model_momentum(m),
                      l->param_count, &sgd);
    be->ops->copy_to_host(be, host, cr_model_params(m), pbytes);
    snprintf(name, sizeof name, "%s.param", mode);
    compare_all(fx, l->params, l->num_params, host, name, 1e-5, allowance[1]);
    be->ops->copy_to_host(be, host, cr_model_momentum(m), pbytes);
    snprintf(name, sizeof name, "%s.momentum", mode);
    compare_all(fx, l->params, l->num_params, host, name, 1e-4, allowance[2]);
    be->ops->copy_to_host(be, host, cr_model_buffers(m), bbytes);
    snprintf(name, sizeof name, "%s.running", mode);
    compare_all(fx, l->buffers, l->num_buffers, host, name, 1e-5, NULL);
    if (!training) /* eval mode leaves the running statistics alone */
        CHECK(memcmp(host, gc->buffers, bbytes) == 0, "eval changed running statistics");
    free(host);
    comm->ops->destroy(comm);
}

/* "[8, 16]" -> {8, 16}; returns the count. */
static int parse_int_list(const char *text, int *out, int max) {
    int n = 0;
    for (const char *p = text; *p && n < max;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) {
            p++;
            continue;
        }
        out[n++] = (int)v;
        p = end;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s FIXTURE_DIR small|medium|large|custom\n", argv[0]);
        return 2;
    }
    cr_safetensors in = open_fixture(argv[1], "input");
    cr_safetensors fx = open_fixture(argv[1], argv[2]);
    /* The architecture as the fixture records it, through the same entry
     * point a config's model section uses. */
    const char *widths_text = cr_safetensors_meta(&fx, "widths");
    const char *blocks_text = cr_safetensors_meta(&fx, "blocks");
    CHECK(widths_text && blocks_text, "fixture metadata names widths and blocks");
    if (!widths_text || !blocks_text) return check_finish();
    int widths[CR_MAX_STAGES], blocks[CR_MAX_STAGES];
    int nw = parse_int_list(widths_text, widths, CR_MAX_STAGES);
    int nb = parse_int_list(blocks_text, blocks, CR_MAX_STAGES);
    cr_model_desc desc;
    char err[256];
    if (cr_model_describe("custom", widths, nw, blocks, nb, &desc, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    golden_case gc = {.be = cr_backend_cpu_create(0, CR_MATH_FP32)};
    gc.model = cr_model_create(gc.be, &desc, BATCH, 1234);
    gc.layout = cr_model_get_layout(gc.model);
    initial_state(&gc, &fx);
    load_input(&gc, &in);
    run_mode(&gc, &fx, "train");
    run_mode(&gc, &fx, "eval");
    cr_model_free(gc.model);
    gc.be->ops->destroy(gc.be);
    free(gc.params), free(gc.buffers), free(gc.momentum), free(gc.images), free(gc.labels);
    cr_safetensors_free(&in);
    cr_safetensors_free(&fx);
    return check_finish();
}
