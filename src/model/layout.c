/* Model descriptions, the parameter layout they imply, and initialisation. */
#include "model_internal.h"

#include "cresnet/error.h"
#include "cresnet/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cr_model_preset(const char *arch, cr_model_desc *desc) {
    static const struct {
        const char *name;
        int num_stages, widths[4];
    } presets[] = {
        {"small", 3, {16, 32, 64}},
        {"medium", 4, {32, 64, 128, 256}},
        {"large", 4, {64, 128, 256, 512}},
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(arch, presets[i].name) != 0) continue;
        memset(desc, 0, sizeof *desc);
        desc->num_stages = presets[i].num_stages;
        for (int s = 0; s < desc->num_stages; s++) {
            desc->widths[s] = presets[i].widths[s];
            desc->blocks[s] = 1;
        }
        return 0;
    }
    return -1;
}

int cr_model_describe(const char *arch, const int *widths, int num_widths, const int *blocks,
                      int num_blocks, cr_model_desc *desc, char *err, size_t err_len) {
    if (strcmp(arch, "custom") != 0) {
        if (cr_model_preset(arch, desc) == 0) return 0;
        snprintf(err, err_len, "unknown model '%s' (expected small, medium, large or custom)",
                 arch);
        return -1;
    }
    if (num_widths < 1 || num_widths > CR_MAX_STAGES) {
        snprintf(err, err_len, "custom model needs 1 to %d widths, got %d", CR_MAX_STAGES,
                 num_widths);
        return -1;
    }
    if (num_blocks != 0 && num_blocks != num_widths) {
        snprintf(err, err_len, "blocks has %d entries but widths has %d", num_blocks, num_widths);
        return -1;
    }
    memset(desc, 0, sizeof *desc);
    desc->num_stages = num_widths;
    for (int s = 0; s < num_widths; s++) {
        desc->widths[s] = widths[s];
        desc->blocks[s] = num_blocks ? blocks[s] : 1;
        if (widths[s] < 1 || widths[s] > CR_MAX_WIDTH) {
            snprintf(err, err_len, "widths[%d] = %d: must be in 1..%d", s, widths[s], CR_MAX_WIDTH);
            return -1;
        }
        if (desc->blocks[s] < 1 || desc->blocks[s] > CR_MAX_BLOCKS) {
            snprintf(err, err_len, "blocks[%d] = %d: must be in 1..%d", s, desc->blocks[s],
                     CR_MAX_BLOCKS);
            return -1;
        }
    }
    return 0;
}

int model_num_blocks(const cr_model_desc *desc) {
    int total = 0;
    for (int s = 0; s < desc->num_stages; s++) total += desc->blocks[s];
    return total;
}

block_geometry model_block(const cr_model_desc *desc, int k) {
    int hw = CR_IMAGE_SIZE, in_c = desc->widths[0];
    for (int s = 0; s < desc->num_stages; s++) {
        for (int b = 0; b < desc->blocks[s]; b++) {
            int stride = (s > 0 && b == 0) ? 2 : 1;
            int out_hw = (hw - 1) / stride + 1;
            if (k-- == 0) {
                int out_c = desc->widths[s];
                return (block_geometry){.stage = s,
                                        .index = b,
                                        .in_c = in_c,
                                        .out_c = out_c,
                                        .stride = stride,
                                        .in_hw = hw,
                                        .out_hw = out_hw,
                                        .has_shortcut = stride != 1 || in_c != out_c};
            }
            hw = out_hw;
            in_c = desc->widths[s];
        }
    }
    CR_ASSERT(!"block index out of range");
    return (block_geometry){0};
}

/* Layout construction: tensors are appended in state_dict order. */
typedef struct {
    cr_model_layout *layout;
    int params_capacity, buffers_capacity;
} layout_builder;

static cr_tensor_info *append(layout_builder *lb, int is_buffer, const char *name,
                              cr_tensor_kind kind, int ndim, const int *shape) {
    cr_model_layout *l = lb->layout;
    int *num = is_buffer ? &l->num_buffers : &l->num_params;
    int *capacity = is_buffer ? &lb->buffers_capacity : &lb->params_capacity;
    cr_tensor_info **list = is_buffer ? &l->buffers : &l->params;
    size_t *total = is_buffer ? &l->buffer_count : &l->param_count;
    if (*num == *capacity) {
        *capacity = *capacity ? 2 * *capacity : 64;
        *list = realloc(*list, sizeof(cr_tensor_info) * (size_t)*capacity);
        if (!*list) cr_fatal(CR_EXIT_INTERNAL, "model", "out of memory");
    }
    cr_tensor_info *t = &(*list)[(*num)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = kind;
    t->ndim = ndim;
    t->count = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->count *= (size_t)shape[d];
    }
    t->fan_in = ndim > 1 ? (int)(t->count / (size_t)shape[0]) : 0;
    t->offset = *total;
    *total += t->count;
    return t;
}

static void add_conv(layout_builder *lb, const char *name, int out_c, int in_c, int k) {
    char full[96];
    snprintf(full, sizeof full, "%s.weight", name);
    append(lb, 0, full, CR_TENSOR_CONV_WEIGHT, 4, (int[]){out_c, in_c, k, k});
}

static void add_bn(layout_builder *lb, const char *name, int channels) {
    static const struct {
        const char *suffix;
        cr_tensor_kind kind;
        int is_buffer;
    } parts[] = {{"weight", CR_TENSOR_BN_WEIGHT, 0},
                 {"bias", CR_TENSOR_BN_BIAS, 0},
                 {"running_mean", CR_TENSOR_BN_RUNNING_MEAN, 1},
                 {"running_var", CR_TENSOR_BN_RUNNING_VAR, 1}};
    for (size_t i = 0; i < 4; i++) {
        char full[96];
        snprintf(full, sizeof full, "%s.%s", name, parts[i].suffix);
        append(lb, parts[i].is_buffer, full, parts[i].kind, 1, &channels);
    }
}

cr_model_layout cr_model_layout_make(const cr_model_desc *desc) {
    cr_model_layout layout = {.desc = *desc};
    layout_builder lb = {.layout = &layout};
    add_conv(&lb, "conv1", desc->widths[0], CR_IMAGE_CHANNELS, 3);
    add_bn(&lb, "bn1", desc->widths[0]);
    for (int k = 0; k < model_num_blocks(desc); k++) {
        block_geometry g = model_block(desc, k);
        char prefix[32], name[48];
        snprintf(prefix, sizeof prefix, "layer%d.%d", g.stage + 1, g.index);
        snprintf(name, sizeof name, "%s.conv1", prefix);
        add_conv(&lb, name, g.out_c, g.in_c, 3);
        snprintf(name, sizeof name, "%s.bn1", prefix);
        add_bn(&lb, name, g.out_c);
        snprintf(name, sizeof name, "%s.conv2", prefix);
        add_conv(&lb, name, g.out_c, g.out_c, 3);
        snprintf(name, sizeof name, "%s.bn2", prefix);
        add_bn(&lb, name, g.out_c);
        if (!g.has_shortcut) continue;
        snprintf(name, sizeof name, "%s.shortcut.0", prefix);
        add_conv(&lb, name, g.out_c, g.in_c, 1);
        snprintf(name, sizeof name, "%s.shortcut.1", prefix);
        add_bn(&lb, name, g.out_c);
    }
    int last = desc->widths[desc->num_stages - 1];
    append(&lb, 0, "linear.weight", CR_TENSOR_LINEAR_WEIGHT, 2, (int[]){CR_NUM_CLASSES, last});
    cr_tensor_info *bias =
        append(&lb, 0, "linear.bias", CR_TENSOR_LINEAR_BIAS, 1, (int[]){CR_NUM_CLASSES});
    bias->fan_in = last; /* PyTorch bounds the bias by the weight's fan-in */
    return layout;
}

void cr_model_layout_free(cr_model_layout *layout) {
    free(layout->params);
    free(layout->buffers);
    layout->params = layout->buffers = NULL;
}

const cr_tensor_info *cr_model_layout_find(const cr_model_layout *layout, const char *name) {
    for (int i = 0; i < layout->num_params; i++)
        if (strcmp(layout->params[i].name, name) == 0) return &layout->params[i];
    for (int i = 0; i < layout->num_buffers; i++)
        if (strcmp(layout->buffers[i].name, name) == 0) return &layout->buffers[i];
    return NULL;
}

/* OIHW index of OHWI position: both orders share O outermost. */
static void conv_permute(const cr_tensor_info *t, const float *src, float *dst, int to_torch) {
    int O = t->shape[0], I = t->shape[1], H = t->shape[2], W = t->shape[3];
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++)
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    size_t oihw = (((size_t)o * I + i) * H + h) * W + w;
                    size_t ohwi = (((size_t)o * H + h) * W + w) * I + i;
                    if (to_torch)
                        dst[oihw] = src[ohwi];
                    else
                        dst[ohwi] = src[oihw];
                }
}

void cr_tensor_to_torch(const cr_tensor_info *t, const float *ours, float *torch) {
    if (t->kind == CR_TENSOR_CONV_WEIGHT)
        conv_permute(t, ours, torch, 1);
    else
        memcpy(torch, ours, t->count * sizeof(float));
}

void cr_tensor_from_torch(const cr_tensor_info *t, const float *torch, float *ours) {
    if (t->kind == CR_TENSOR_CONV_WEIGHT)
        conv_permute(t, torch, ours, 0);
    else
        memcpy(ours, torch, t->count * sizeof(float));
}

static void fill(float *dst, size_t n, float value) {
    for (size_t i = 0; i < n; i++) dst[i] = value;
}

void cr_model_init(const cr_model_layout *layout, uint64_t seed, float *params, float *buffers) {
    for (int p = 0; p < layout->num_params; p++) {
        const cr_tensor_info *t = &layout->params[p];
        float *dst = params + t->offset;
        switch (t->kind) {
        case CR_TENSOR_BN_WEIGHT: fill(dst, t->count, 1.0f); break;
        case CR_TENSOR_BN_BIAS: fill(dst, t->count, 0.0f); break;
        default: {
            /* kaiming_uniform_(a=sqrt(5)): gain sqrt(1/3), bound = gain*sqrt(3/fan_in). */
            float bound = (float)(1.0 / sqrt((double)t->fan_in));
            float *torch_order = cr_malloc(t->count * sizeof(float), "init");
            cr_rng_fill_symmetric(torch_order, t->count, bound, seed,
                                  cr_rng_stream(CR_RNG_INIT, (uint32_t)p));
            cr_tensor_from_torch(t, torch_order, dst);
            free(torch_order);
        }
        }
    }
    for (int b = 0; b < layout->num_buffers; b++) {
        const cr_tensor_info *t = &layout->buffers[b];
        fill(buffers + t->offset, t->count, t->kind == CR_TENSOR_BN_RUNNING_VAR ? 1.0f : 0.0f);
    }
}
