/* torchsummary's table, reproduced from the model description alone: rows in
 * the order PyTorch's forward hooks fire (a block after its children), the
 * same column widths, thousands separators and size estimates. */
#include "model_internal.h"

#include <stdio.h>

typedef struct {
    FILE *out;
    int row;
    long long total_params;
    long long total_outputs; /* activations, as torchsummary sums them */
} summary_state;

static void thousands(long long value, char *buf, size_t len) {
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%lld", value);
    size_t j = 0;
    for (int i = 0; i < n && j + 1 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0 && j + 2 < len) buf[j++] = ',';
        buf[j++] = digits[i];
    }
    buf[j] = '\0';
}

static void row(summary_state *st, const char *type, int c, int hw, long long params) {
    char layer[48], shape[48], count[32];
    snprintf(layer, sizeof layer, "%s-%d", type, ++st->row);
    if (hw > 0)
        snprintf(shape, sizeof shape, "[-1, %d, %d, %d]", c, hw, hw);
    else
        snprintf(shape, sizeof shape, "[-1, %d]", c);
    thousands(params, count, sizeof count);
    fprintf(st->out, "%20s  %25s %15s\n", layer, shape, count);
    st->total_params += params;
    st->total_outputs += (long long)c * (hw > 0 ? hw * hw : 1);
}

static void conv_bn_rows(summary_state *st, int in_c, int out_c, int k, int hw) {
    row(st, "Conv2d", out_c, hw, (long long)out_c * in_c * k * k);
    row(st, "BatchNorm2d", out_c, hw, 2LL * out_c);
}

/* Multiply-adds of one image through a convolution producing hw x hw. */
static double conv_macs(int in_c, int out_c, int k, int hw) {
    return (double)hw * hw * out_c * in_c * k * k;
}

double cr_model_train_flops(const cr_model_desc *desc) {
    double stem = conv_macs(CR_IMAGE_CHANNELS, desc->widths[0], 3, CR_IMAGE_SIZE), rest = 0.0;
    for (int k = 0; k < model_num_blocks(desc); k++) {
        block_geometry g = model_block(desc, k);
        rest += conv_macs(g.in_c, g.out_c, 3, g.out_hw) + conv_macs(g.out_c, g.out_c, 3, g.out_hw);
        if (g.has_shortcut) rest += conv_macs(g.in_c, g.out_c, 1, g.out_hw);
    }
    rest += (double)CR_NUM_CLASSES * desc->widths[desc->num_stages - 1];
    /* Forward and weight gradient of every layer, input gradient of all but the stem. */
    return 2.0 * (2.0 * stem + 3.0 * rest);
}

void cr_model_print_summary(const cr_model_desc *desc, FILE *out) {
    const char *rule = "----------------------------------------------------------------";
    const char *double_rule = "================================================================";
    summary_state st = {.out = out};
    fprintf(out, "%s\n%20s  %25s %15s\n%s\n", rule, "Layer (type)", "Output Shape", "Param #",
            double_rule);
    conv_bn_rows(&st, CR_IMAGE_CHANNELS, desc->widths[0], 3, CR_IMAGE_SIZE);
    for (int k = 0; k < model_num_blocks(desc); k++) {
        block_geometry g = model_block(desc, k);
        conv_bn_rows(&st, g.in_c, g.out_c, 3, g.out_hw);
        conv_bn_rows(&st, g.out_c, g.out_c, 3, g.out_hw);
        if (g.has_shortcut) conv_bn_rows(&st, g.in_c, g.out_c, 1, g.out_hw);
        row(&st, "BasicBlock", g.out_c, g.out_hw, 0);
    }
    int last = desc->widths[desc->num_stages - 1];
    row(&st, "Linear", CR_NUM_CLASSES, 0, (long long)CR_NUM_CLASSES * last + CR_NUM_CLASSES);

    char total[32];
    thousands(st.total_params, total, sizeof total);
    double mb = 1024.0 * 1024.0;
    double input_mb = CR_IMAGE_CHANNELS * CR_IMAGE_SIZE * CR_IMAGE_SIZE * 4.0 / mb;
    double output_mb = 2.0 * (double)st.total_outputs * 4.0 / mb; /* x2 for gradients */
    double params_mb = (double)st.total_params * 4.0 / mb;
    fprintf(out, "%s\nTotal params: %s\nTrainable params: %s\nNon-trainable params: 0\n%s\n",
            double_rule, total, total, rule);
    fprintf(out, "Input size (MB): %0.2f\n", input_mb);
    fprintf(out, "Forward/backward pass size (MB): %0.2f\n", output_mb);
    fprintf(out, "Params size (MB): %0.2f\n", params_mb);
    fprintf(out, "Estimated Total Size (MB): %0.2f\n%s\n", input_mb + output_mb + params_mb, rule);
}
