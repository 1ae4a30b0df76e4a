/* The forward and backward passes: the report's ResNet as backend calls.
 *
 * Every activation the backward pass needs is kept from the forward pass;
 * BatchNorm, the residual add and ReLU are one fused pass each way. Gradients
 * of activations live in three rotating scratch buffers: a block's input
 * gradient leaves as two halves (main path and shortcut) that the next
 * BatchNorm backward sums as it reads them, so no pass is spent adding. */
#include "model_internal.h"

#include "cresnet/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    cr_conv_shape shape;
    cr_conv_plan *plan;
    size_t weight; /* offset in params */
    char name[48]; /* PyTorch's module name, for device.debug */
} conv_layer;

typedef struct {
    int channels;
    size_t weight;  /* gamma's offset in params; beta follows */
    size_t running; /* running_mean's offset in buffers; running_var follows */
    float *stats;   /* device [2C]: mean, invstd of the last forward */
    float *sums;    /* device [2C]: sums of the last forward, then backward */
    char name[48];
} bn_layer;

typedef struct {
    block_geometry g;
    conv_layer conv1, conv2, shortcut_conv;
    bn_layer bn1, bn2, shortcut_bn;
    void *a1, *h1, *a2, *s, *sn, *out; /* device activations; s, sn with a shortcut */
} block;

struct cr_model {
    cr_backend *be;
    cr_model_layout layout;
    int max_batch, batch, training;
    double global_batch;  /* images in this step over all ranks sharing BN statistics */
    float *count_scratch; /* device [1]: the all-reduced batch size */
    int64_t batches_tracked;
    float *params, *grads, *momentum, *buffers;
    conv_layer stem_conv;
    bn_layer stem_bn;
    void *a0, *h0; /* stem activations */
    int num_blocks;
    block *blocks;
    size_t linear_weight, linear_bias;
    float *pooled, *d_pooled, *logits, *d_logits, *loss_sum;
    int32_t *predicted;
    void *scratch[3];          /* activation gradients */
    void *input;               /* the images as activations, where those are not floats */
    const void *network_input; /* input, or the float images themselves */
    cr_comm *comm;
    model_debug *debug; /* device.debug, else NULL */
};

/* device.debug's check after a layer of a training pass: of floats
 * (probe), or of activations (probe_activations). */
static void probe(cr_model *m, const char *layer, const char *what, const float *data,
                  size_t count) {
    if (m->debug && m->training) model_debug_probe(m->debug, layer, what, data, count, 4);
}

static void probe_activations(cr_model *m, const char *layer, const char *what, const void *data,
                              size_t count) {
    if (m->debug && m->training)
        model_debug_probe(m->debug, layer, what, data, count, cr_activation_bytes(m->be));
}

static size_t conv_weight_count(const conv_layer *c) {
    const cr_conv_shape *s = &c->shape;
    return (size_t)s->out_c * s->kernel * s->kernel * s->in_c;
}

static float *device_floats(cr_model *m, size_t count) {
    return m->be->ops->alloc(m->be, count * sizeof(float));
}

static void *device_activations(cr_model *m, size_t count) {
    return m->be->ops->alloc(m->be, count * (size_t)cr_activation_bytes(m->be));
}

static size_t offset_of(const cr_model *m, const char *name) {
    const cr_tensor_info *t = cr_model_layout_find(&m->layout, name);
    CR_ASSERT(t != NULL);
    return t->offset;
}

static conv_layer conv_make(cr_model *m, const char *name, int hw, int in_c, int out_c, int kernel,
                            int stride) {
    char full[96];
    snprintf(full, sizeof full, "%s.weight", name);
    conv_layer c = {.weight = offset_of(m, full)};
    snprintf(c.name, sizeof c.name, "%s", name);
    c.shape = cr_conv_shape_make(0, hw, hw, in_c, out_c, kernel, stride, kernel / 2);
    return c;
}

static bn_layer bn_make(cr_model *m, const char *name, int channels) {
    char full[96];
    bn_layer bn = {.channels = channels};
    snprintf(bn.name, sizeof bn.name, "%s", name);
    snprintf(full, sizeof full, "%s.weight", name);
    bn.weight = offset_of(m, full);
    snprintf(full, sizeof full, "%s.running_mean", name);
    bn.running = offset_of(m, full);
    bn.stats = device_floats(m, 2 * (size_t)channels);
    bn.sums = device_floats(m, 2 * (size_t)channels);
    return bn;
}

static void block_make(cr_model *m, block *b, int k) {
    block_geometry g = model_block(&m->layout.desc, k);
    char prefix[32], name[48];
    snprintf(prefix, sizeof prefix, "layer%d.%d", g.stage + 1, g.index);
    b->g = g;
#define NAME(suffix) (snprintf(name, sizeof name, "%s." suffix, prefix), name)
    b->conv1 = conv_make(m, NAME("conv1"), g.in_hw, g.in_c, g.out_c, 3, g.stride);
    b->bn1 = bn_make(m, NAME("bn1"), g.out_c);
    b->conv2 = conv_make(m, NAME("conv2"), g.out_hw, g.out_c, g.out_c, 3, 1);
    b->bn2 = bn_make(m, NAME("bn2"), g.out_c);
    if (g.has_shortcut) {
        b->shortcut_conv = conv_make(m, NAME("shortcut.0"), g.in_hw, g.in_c, g.out_c, 1, g.stride);
        b->shortcut_bn = bn_make(m, NAME("shortcut.1"), g.out_c);
    }
#undef NAME
    size_t size = (size_t)m->max_batch * g.out_hw * g.out_hw * g.out_c;
    b->a1 = device_activations(m, size);
    b->h1 = device_activations(m, size);
    b->a2 = device_activations(m, size);
    b->out = device_activations(m, size);
    if (g.has_shortcut) {
        b->s = device_activations(m, size);
        b->sn = device_activations(m, size);
    }
}

static void conv_set_batch(cr_model *m, conv_layer *c, int batch) {
    if (c->plan && c->shape.batch == batch) return;
    if (c->plan) m->be->ops->conv_plan_free(m->be, c->plan);
    c->shape.batch = batch;
    c->plan = m->be->ops->conv_plan(m->be, &c->shape);
}

/* Plans are per batch size; a change (the last, partial batch) replans. */
static void set_batch(cr_model *m, int batch) {
    if (batch < 1 || batch > m->max_batch)
        cr_fatal(CR_EXIT_INTERNAL, "model", "batch %d outside 1..%d", batch, m->max_batch);
    if (batch == m->batch) return;
    conv_set_batch(m, &m->stem_conv, batch);
    for (int k = 0; k < m->num_blocks; k++) {
        block *b = &m->blocks[k];
        conv_set_batch(m, &b->conv1, batch);
        conv_set_batch(m, &b->conv2, batch);
        if (b->g.has_shortcut) conv_set_batch(m, &b->shortcut_conv, batch);
    }
    m->batch = batch;
}

cr_model *cr_model_create(cr_backend *be, const cr_model_desc *desc, int max_batch, uint64_t seed) {
    cr_model *m = cr_calloc(1, sizeof *m, "model");
    m->be = be;
    m->layout = cr_model_layout_make(desc);
    m->max_batch = max_batch;
    const cr_model_layout *l = &m->layout;
    m->params = device_floats(m, l->param_count);
    m->grads = device_floats(m, l->param_count);
    m->momentum = device_floats(m, l->param_count);
    m->buffers = device_floats(m, l->buffer_count);
    be->ops->zero(be, m->grads, l->param_count * sizeof(float));
    be->ops->zero(be, m->momentum, l->param_count * sizeof(float));

    float *host_params = cr_malloc(l->param_count * sizeof(float), "model init");
    float *host_buffers = cr_malloc(l->buffer_count * sizeof(float), "model init");
    cr_model_init(l, seed, host_params, host_buffers);
    be->ops->copy_to_device(be, m->params, host_params, l->param_count * sizeof(float));
    be->ops->copy_to_device(be, m->buffers, host_buffers, l->buffer_count * sizeof(float));
    free(host_params);
    free(host_buffers);

    int w0 = desc->widths[0];
    size_t largest = (size_t)max_batch * CR_IMAGE_SIZE * CR_IMAGE_SIZE * w0;
    m->stem_conv = conv_make(m, "conv1", CR_IMAGE_SIZE, CR_IMAGE_CHANNELS, w0, 3, 1);
    m->stem_bn = bn_make(m, "bn1", w0);
    m->a0 = device_activations(m, largest);
    m->h0 = device_activations(m, largest);
    if (cr_activation_bytes(be) != sizeof(float))
        m->input = device_activations(m, (size_t)max_batch * CR_IMAGE_SIZE * CR_IMAGE_SIZE *
                                             CR_IMAGE_CHANNELS);
    m->num_blocks = model_num_blocks(desc);
    m->blocks = cr_calloc((size_t)m->num_blocks, sizeof(block), "model");
    for (int k = 0; k < m->num_blocks; k++) {
        block_make(m, &m->blocks[k], k);
        block_geometry g = m->blocks[k].g;
        size_t in_size = (size_t)max_batch * g.in_hw * g.in_hw * g.in_c;
        size_t out_size = (size_t)max_batch * g.out_hw * g.out_hw * g.out_c;
        if (in_size > largest) largest = in_size;
        if (out_size > largest) largest = out_size;
    }
    for (int i = 0; i < 3; i++) m->scratch[i] = device_activations(m, largest);
    m->linear_weight = offset_of(m, "linear.weight");
    m->linear_bias = offset_of(m, "linear.bias");
    int last = desc->widths[desc->num_stages - 1];
    m->pooled = device_floats(m, (size_t)max_batch * last);
    m->d_pooled = device_floats(m, (size_t)max_batch * last);
    m->logits = device_floats(m, (size_t)max_batch * CR_NUM_CLASSES);
    m->d_logits = device_floats(m, (size_t)max_batch * CR_NUM_CLASSES);
    m->loss_sum = device_floats(m, 2); /* loss sum, correct count */
    m->count_scratch = device_floats(m, 1);
    m->predicted = be->ops->alloc(be, (size_t)max_batch * sizeof(int32_t));
    return m;
}

static void conv_free(cr_model *m, conv_layer *c) {
    if (c->plan) m->be->ops->conv_plan_free(m->be, c->plan);
}

static void bn_free(cr_model *m, bn_layer *bn) {
    m->be->ops->free(m->be, bn->stats);
    m->be->ops->free(m->be, bn->sums);
}

void cr_model_free(cr_model *m) {
    if (!m) return;
    cr_backend *be = m->be;
    void (*release)(cr_backend *, void *) = be->ops->free;
    for (int k = 0; k < m->num_blocks; k++) {
        block *b = &m->blocks[k];
        conv_free(m, &b->conv1);
        conv_free(m, &b->conv2);
        bn_free(m, &b->bn1);
        bn_free(m, &b->bn2);
        void *acts[] = {b->a1, b->h1, b->a2, b->out, b->s, b->sn};
        for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
            if (acts[i]) release(be, acts[i]);
        if (b->g.has_shortcut) {
            conv_free(m, &b->shortcut_conv);
            bn_free(m, &b->shortcut_bn);
        }
    }
    free(m->blocks);
    conv_free(m, &m->stem_conv);
    bn_free(m, &m->stem_bn);
    void *bufs[] = {m->params,     m->grads,    m->momentum,   m->buffers,
                    m->a0,         m->h0,       m->scratch[0], m->scratch[1],
                    m->scratch[2], m->pooled,   m->d_pooled,   m->logits,
                    m->d_logits,   m->loss_sum, m->predicted,  m->count_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) release(be, bufs[i]);
    if (m->input) release(be, m->input);
    cr_model_layout_free(&m->layout);
    model_debug_free(m->debug);
    free(m);
}

void cr_model_set_debug(cr_model *m, int on) {
    if (on && !m->debug) m->debug = model_debug_create(m->be);
    if (!on) model_debug_free(m->debug), m->debug = NULL;
}

void cr_model_print_layer_times(cr_model *m, FILE *out) {
    if (m->debug) model_debug_print(m->debug, out);
}

const cr_model_layout *cr_model_get_layout(const cr_model *m) { return &m->layout; }
float *cr_model_params(cr_model *m) { return m->params; }
float *cr_model_grads(cr_model *m) { return m->grads; }
float *cr_model_momentum(cr_model *m) { return m->momentum; }
float *cr_model_buffers(cr_model *m) { return m->buffers; }
const float *cr_model_logits(cr_model *m) { return m->logits; }
int64_t cr_model_batches_tracked(const cr_model *m) { return m->batches_tracked; }
void cr_model_set_batches_tracked(cr_model *m, int64_t count) { m->batches_tracked = count; }

/* ---- forward ---- */

static long rows_of(const cr_model *m, int hw) { return (long)m->batch * hw * hw; }

/* Statistics are shared over the ranks when a communicator is given. */
static int synced(const cr_model *m) { return m->comm && m->comm->world_size > 1; }

/* Values per channel behind BN statistics of a layer with `rows` local rows. */
static double stat_count(const cr_model *m, long rows) {
    return (double)rows / m->batch * m->global_batch;
}

/* Ranks may hold slices of different sizes (the last, partial batch). */
static void agree_global_batch(cr_model *m) {
    m->global_batch = m->batch;
    if (!m->training || !synced(m)) return;
    float n = (float)m->batch;
    m->be->ops->copy_to_device(m->be, m->count_scratch, &n, sizeof n);
    m->comm->ops->allreduce_sum(m->comm, m->count_scratch, 1);
    m->be->ops->copy_to_host(m->be, &n, m->count_scratch, sizeof n);
    m->global_batch = n;
}

static cr_bn_view bn_view(const cr_model *m, const bn_layer *bn, long rows) {
    return (cr_bn_view){.rows = rows,
                        .channels = bn->channels,
                        .mean = bn->stats,
                        .invstd = bn->stats + bn->channels,
                        .gamma = m->params + bn->weight,
                        .beta = m->params + bn->weight + bn->channels};
}

static void bn_forward(cr_model *m, bn_layer *bn, const void *x, long rows, const void *residual,
                       int relu, void *y) {
    const cr_backend_ops *ops = m->be->ops;
    int C = bn->channels;
    float *running_mean = m->buffers + bn->running, *running_var = running_mean + C;
    if (m->training) {
        ops->bn_sums(m->be, x, rows, C, running_mean, bn->sums);
        if (synced(m)) m->comm->ops->allreduce_sum(m->comm, bn->sums, 2 * (size_t)C);
        ops->bn_finalize(m->be, bn->sums, stat_count(m, rows), C, running_mean, CR_BN_EPS,
                         CR_BN_MOMENTUM, bn->stats, bn->stats + C, running_mean, running_var);
    } else {
        ops->bn_running_stats(m->be, running_mean, running_var, C, CR_BN_EPS, bn->stats,
                              bn->stats + C);
    }
    cr_bn_view view = bn_view(m, bn, rows);
    ops->bn_apply(m->be, &view, x, residual, relu, y);
    probe_activations(m, bn->name, "output", y, (size_t)rows * bn->channels);
}

static void conv_forward(cr_model *m, conv_layer *c, const void *x, void *y) {
    m->be->ops->conv_forward(m->be, c->plan, x, m->params + c->weight, y);
    const cr_conv_shape *s = &c->shape;
    probe_activations(m, c->name, "output", y, (size_t)s->batch * s->out_h * s->out_w * s->out_c);
}

static void block_forward(cr_model *m, block *b, const void *x) {
    long rows = rows_of(m, b->g.out_hw);
    conv_forward(m, &b->conv1, x, b->a1);
    bn_forward(m, &b->bn1, b->a1, rows, NULL, 1, b->h1);
    conv_forward(m, &b->conv2, b->h1, b->a2);
    const void *residual = x;
    if (b->g.has_shortcut) {
        conv_forward(m, &b->shortcut_conv, x, b->s);
        bn_forward(m, &b->shortcut_bn, b->s, rows, NULL, 0, b->sn);
        residual = b->sn;
    }
    bn_forward(m, &b->bn2, b->a2, rows, residual, 1, b->out);
}

static int last_hw(const cr_model *m) {
    return m->num_blocks ? m->blocks[m->num_blocks - 1].g.out_hw : CR_IMAGE_SIZE;
}

static int last_channels(const cr_model *m) {
    return m->layout.desc.widths[m->layout.desc.num_stages - 1];
}

void cr_model_prepare(cr_model *m, const float *images, int batch, int training, cr_comm *comm) {
    set_batch(m, batch);
    m->training = training;
    m->comm = comm;
    m->network_input = m->input ? m->input : images;
    agree_global_batch(m);
    if (training) m->batches_tracked++;
    if (m->debug && training) model_debug_begin(m->debug, 0, m->batches_tracked);
}

void cr_model_forward_enqueue(cr_model *m, const float *images, const int32_t *labels, int batch,
                              int training, float grad_scale, cr_comm *comm) {
    const cr_backend_ops *ops = m->be->ops;
    cr_model_prepare(m, images, batch, training, comm);
    if (m->input)
        ops->to_activations(m->be, images,
                            (size_t)batch * CR_IMAGE_SIZE * CR_IMAGE_SIZE * CR_IMAGE_CHANNELS,
                            m->input);
    conv_forward(m, &m->stem_conv, m->network_input, m->a0);
    bn_forward(m, &m->stem_bn, m->a0, rows_of(m, CR_IMAGE_SIZE), NULL, 1, m->h0);
    const void *x = m->h0;
    for (int k = 0; k < m->num_blocks; k++) {
        block_forward(m, &m->blocks[k], x);
        x = m->blocks[k].out;
    }
    int hw = last_hw(m), C = last_channels(m);
    ops->avgpool_forward(m->be, x, batch, hw * hw, C, m->pooled);
    probe(m, "avgpool", "output", m->pooled, (size_t)batch * C);
    ops->linear_forward(m->be, m->pooled, m->params + m->linear_weight, m->params + m->linear_bias,
                        batch, C, CR_NUM_CLASSES, m->logits);
    probe(m, "linear", "output", m->logits, (size_t)batch * CR_NUM_CLASSES);
    ops->softmax_xent(m->be, m->logits, labels, batch, CR_NUM_CLASSES, grad_scale,
                      grad_scale > 0 ? m->d_logits : NULL, m->loss_sum, m->predicted);
    probe(m, "loss", "value", m->loss_sum, 1);
}

/* One copy, one wait: the loss kernel counted the hits beside the loss. */
cr_forward_result cr_model_result(cr_model *m) {
    float sums[2];
    m->be->ops->copy_to_host(m->be, sums, m->loss_sum, sizeof sums);
    return (cr_forward_result){
        .loss_sum = sums[0], .correct = (int)lrintf(sums[1]), .predicted = m->predicted};
}

cr_forward_result cr_model_forward(cr_model *m, const float *images, const int32_t *labels,
                                   int batch, int training, float grad_scale, cr_comm *comm) {
    cr_model_forward_enqueue(m, images, labels, batch, training, grad_scale, comm);
    return cr_model_result(m);
}

/* ---- backward ---- */

/* A scratch buffer that holds none of the live gradients. */
static void *scratch_other(cr_model *m, const void *busy1, const void *busy2) {
    for (int i = 0; i < 3; i++)
        if (m->scratch[i] != busy1 && m->scratch[i] != busy2) return m->scratch[i];
    CR_ASSERT(!"no free scratch buffer");
    return NULL;
}

/* dx from dy (+ dy2) through BN (and the ReLU after it when relu); also the
 * gradients of gamma and beta, and dz into d_residual when not NULL. dx may
 * be dy. */
static void bn_backward(cr_model *m, bn_layer *bn, const void *x, const void *y, long rows,
                        const void *dy, const void *dy2, int relu, void *dx, void *d_residual) {
    const cr_backend_ops *ops = m->be->ops;
    cr_bn_view view = bn_view(m, bn, rows);
    size_t C = (size_t)bn->channels;
    ops->bn_backward_sums(m->be, &view, x, y, dy, dy2, relu, bn->sums);
    /* This rank's share of dgamma, dbeta; the gradient all-reduce sums them. */
    ops->copy(m->be, m->grads + bn->weight, bn->sums, 2 * C * sizeof(float));
    if (m->training && synced(m)) m->comm->ops->allreduce_sum(m->comm, bn->sums, 2 * C);
    ops->bn_backward_apply(m->be, &view, x, y, dy, dy2, relu, bn->sums, stat_count(m, rows),
                           m->training, dx, d_residual);
    probe(m, bn->name, "weight and bias gradient", m->grads + bn->weight, 2 * C);
    probe_activations(m, bn->name, "input gradient", dx, (size_t)rows * C);
    if (d_residual)
        probe_activations(m, bn->name, "residual gradient", d_residual, (size_t)rows * C);
}

static void conv_weight_grad(cr_model *m, conv_layer *c, const void *x, const void *dy) {
    m->be->ops->conv_backward_weight(m->be, c->plan, x, dy, m->grads + c->weight);
    probe(m, c->name, "weight gradient", m->grads + c->weight, conv_weight_count(c));
}

static void conv_data_grad(cr_model *m, conv_layer *c, const void *dy, void *dx) {
    m->be->ops->conv_backward_data(m->be, c->plan, dy, m->params + c->weight, dx);
    const cr_conv_shape *s = &c->shape;
    probe_activations(m, c->name, "input gradient", dx,
                      (size_t)s->batch * s->in_h * s->in_w * s->in_c);
}

/* Takes the output gradient (g[0] + g[1], g[1] may be NULL) and leaves the
 * input gradient the same way, in scratch buffers. */
static void block_backward(cr_model *m, block *b, const void *x, void *g[2]) {
    long rows = rows_of(m, b->g.out_hw);
    void *d_a2 = g[0];
    void *d_res = g[1] ? g[1] : scratch_other(m, g[0], NULL);
    bn_backward(m, &b->bn2, b->a2, b->out, rows, g[0], g[1], 1, d_a2, d_res);
    conv_weight_grad(m, &b->conv2, b->h1, d_a2);
    void *d_h1 = scratch_other(m, d_a2, d_res);
    conv_data_grad(m, &b->conv2, d_a2, d_h1);
    void *d_a1 = d_h1;
    bn_backward(m, &b->bn1, b->a1, b->h1, rows, d_h1, NULL, 1, d_a1, NULL);
    conv_weight_grad(m, &b->conv1, x, d_a1);
    void *d_x = d_a2; /* free again */
    conv_data_grad(m, &b->conv1, d_a1, d_x);
    g[0] = d_x;
    g[1] = d_res; /* identity shortcut: the residual's gradient passes as is */
    if (!b->g.has_shortcut) return;
    void *d_s = d_res;
    bn_backward(m, &b->shortcut_bn, b->s, b->sn, rows, d_res, NULL, 0, d_s, NULL);
    conv_weight_grad(m, &b->shortcut_conv, x, d_s);
    void *d_x_shortcut = d_a1; /* free again */
    conv_data_grad(m, &b->shortcut_conv, d_s, d_x_shortcut);
    g[1] = d_x_shortcut;
}

static void report_ready(const cr_grad_hook *hook, size_t first) {
    if (hook) hook->ready(hook->context, first);
}

void cr_model_backward(cr_model *m, cr_comm *comm, const cr_grad_hook *hook) {
    const cr_backend_ops *ops = m->be->ops;
    m->comm = comm;
    int hw = last_hw(m), C = last_channels(m);
    if (m->debug) model_debug_begin(m->debug, 1, m->batches_tracked);
    ops->linear_backward(m->be, m->pooled, m->params + m->linear_weight, m->d_logits, m->batch, C,
                         CR_NUM_CLASSES, m->d_pooled, m->grads + m->linear_weight,
                         m->grads + m->linear_bias);
    probe(m, "linear", "weight and bias gradient", m->grads + m->linear_weight,
          (size_t)(C + 1) * CR_NUM_CLASSES);
    probe(m, "linear", "input gradient", m->d_pooled, (size_t)m->batch * C);
    report_ready(hook, m->linear_weight);
    void *g[2] = {m->scratch[0], NULL};
    ops->avgpool_backward(m->be, m->d_pooled, m->batch, hw * hw, C, g[0]);
    probe_activations(m, "avgpool", "input gradient", g[0], (size_t)m->batch * hw * hw * C);
    for (int k = m->num_blocks - 1; k >= 0; k--) {
        const void *x = k > 0 ? m->blocks[k - 1].out : m->h0;
        block_backward(m, &m->blocks[k], x, g);
        report_ready(hook, m->blocks[k].conv1.weight); /* a block's first tensor */
    }
    bn_backward(m, &m->stem_bn, m->a0, m->h0, rows_of(m, CR_IMAGE_SIZE), g[0], g[1], 1, g[0], NULL);
    conv_weight_grad(m, &m->stem_conv, m->network_input, g[0]);
    report_ready(hook, 0);
}
