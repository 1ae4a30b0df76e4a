/* Model descriptions and layouts: the report's parameter counts, PyTorch's
 * names and order, the checks on custom descriptions, initialisation
 * statistics and layout conversion. The passes themselves are checked
 * against PyTorch in tests/golden (including a custom multi-block model). */
#include "check.h"
#include "cresnet/model.h"

#include <stdlib.h>
#include <string.h>

static void test_presets(void) {
    static const struct {
        const char *arch;
        size_t params;
        int tensors;
    } expect[] = {{"small", 78042, 29}, {"medium", 1228970, 38}, {"large", 4903242, 38}};
    for (int i = 0; i < 3; i++) {
        cr_model_desc desc;
        CHECK(cr_model_preset(expect[i].arch, &desc) == 0, "%s", expect[i].arch);
        cr_model_layout l = cr_model_layout_make(&desc);
        CHECK(l.param_count == expect[i].params, "%s: %zu params", expect[i].arch, l.param_count);
        CHECK(l.num_params == expect[i].tensors, "%s: %d tensors", expect[i].arch, l.num_params);
        cr_model_layout_free(&l);
    }
}

/* ResNetSmall by hand, multiply-adds per image: stem 32*32*16*3*9 = 442,368;
 * layer1 2 x 32*32*16*16*9 = 4,718,592; layer2 16*16*32*(16+32)*9 +
 * 16*16*32*16 = 3,670,016; layer3 8*8*64*(32+64)*9 + 8*8*64*32 =
 * 3,670,016; linear 640. Training: 2 FLOPs each, forward + weight gradient
 * everywhere, input gradient but for the stem. */
static void test_flops(void) {
    cr_model_desc desc;
    cr_model_preset("small", &desc);
    double stem = 442368, rest = 4718592 + 3670016 + 3670016 + 640;
    double want = 2 * (2 * stem + 3 * rest);
    CHECK(cr_model_train_flops(&desc) == want, "small: %.0f training FLOPs per image, want %.0f",
          cr_model_train_flops(&desc), want);
    cr_model_preset("large", &desc);
    CHECK(cr_model_train_flops(&desc) > 10 * want, "large: %.3g FLOPs",
          cr_model_train_flops(&desc));
}

static void test_names(void) {
    cr_model_desc desc;
    cr_model_preset("small", &desc);
    cr_model_layout l = cr_model_layout_make(&desc);
    const char *first[] = {"conv1.weight",          "bn1.weight",          "bn1.bias",
                           "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
                           "layer1.0.conv2.weight"};
    for (int i = 0; i < 7; i++)
        CHECK(strcmp(l.params[i].name, first[i]) == 0, "param %d is %s", i, l.params[i].name);
    CHECK(strcmp(l.params[l.num_params - 1].name, "linear.bias") == 0, "last param");
    const cr_tensor_info *sc = cr_model_layout_find(&l, "layer2.0.shortcut.0.weight");
    CHECK(sc && sc->shape[0] == 32 && sc->shape[1] == 16 && sc->shape[2] == 1, "shortcut conv");
    CHECK(cr_model_layout_find(&l, "layer1.0.shortcut.0.weight") == NULL, "identity shortcut");
    const cr_tensor_info *rv = cr_model_layout_find(&l, "layer3.0.shortcut.1.running_var");
    CHECK(rv && rv->kind == CR_TENSOR_BN_RUNNING_VAR && rv->count == 64, "running var");
    /* Views tile the flat buffers exactly, in order. */
    size_t offset = 0;
    for (int i = 0; i < l.num_params; i++) {
        CHECK(l.params[i].offset == offset, "%s offset", l.params[i].name);
        offset += l.params[i].count;
    }
    CHECK(offset == l.param_count, "params tile the buffer");
    CHECK(l.buffer_count == 2 * (16 + 16 + 16 + 32 + 32 + 32 + 64 + 64 + 64), "%zu buffers",
          l.buffer_count);
    cr_model_layout_free(&l);
}

static void expect_invalid(const char *arch, const int *w, int nw, const int *b, int nb,
                           const char *fragment) {
    cr_model_desc desc;
    char err[256] = "";
    int rc = cr_model_describe(arch, w, nw, b, nb, &desc, err, sizeof err);
    CHECK(rc == -1 && strstr(err, fragment), "%s: rc %d, message '%s'", fragment, rc, err);
}

static void test_describe(void) {
    int widths[] = {8, 16, 0}, negative[] = {8, 16, -4}, blocks[] = {2, 1, 3};
    cr_model_desc desc;
    char err[256];
    CHECK(cr_model_describe("custom", widths, 2, blocks, 2, &desc, err, sizeof err) == 0, "%s",
          err);
    CHECK(desc.num_stages == 2 && desc.blocks[0] == 2 && desc.widths[1] == 16, "custom desc");
    CHECK(cr_model_describe("custom", widths, 2, NULL, 0, &desc, err, sizeof err) == 0 &&
              desc.blocks[1] == 1,
          "blocks default to 1");
    expect_invalid("huge", NULL, 0, NULL, 0, "unknown model 'huge'");
    expect_invalid("custom", widths, 0, NULL, 0, "needs 1 to 8 widths");
    expect_invalid("custom", widths, 3, NULL, 0, "widths[2] = 0");
    expect_invalid("custom", negative, 3, NULL, 0, "widths[2] = -4");
    expect_invalid("custom", widths, 2, blocks, 3, "blocks has 3 entries but widths has 2");
    int zero_blocks[] = {1, 0};
    expect_invalid("custom", widths, 2, zero_blocks, 2, "blocks[1] = 0");
}

static void test_init(void) {
    cr_model_desc desc;
    cr_model_preset("medium", &desc);
    cr_model_layout l = cr_model_layout_make(&desc);
    float *p = malloc(l.param_count * sizeof(float)), *b = malloc(l.buffer_count * sizeof(float));
    float *again = malloc(l.param_count * sizeof(float));
    cr_model_init(&l, 3, p, b);
    for (int i = 0; i < l.num_params; i++) {
        const cr_tensor_info *t = &l.params[i];
        const float *v = p + t->offset;
        if (t->kind == CR_TENSOR_BN_WEIGHT || t->kind == CR_TENSOR_BN_BIAS) {
            float expect = t->kind == CR_TENSOR_BN_WEIGHT ? 1.0f : 0.0f;
            int ok = 1;
            for (size_t k = 0; k < t->count; k++) ok &= v[k] == expect;
            CHECK(ok, "%s constant", t->name);
            continue;
        }
        /* uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance bound^2/3 */
        double bound = 1.0 / sqrt(t->fan_in), sum = 0.0, sq = 0.0, peak = 0.0;
        for (size_t k = 0; k < t->count; k++) {
            sum += v[k];
            sq += (double)v[k] * v[k];
            peak = fmax(peak, fabs(v[k]));
        }
        CHECK(peak <= bound, "%s within bound", t->name);
        if (t->count < 10000) continue;
        double mean = sum / t->count, var = sq / t->count - mean * mean;
        CHECK(fabs(mean) < 0.02 * bound, "%s mean %g", t->name, mean);
        CHECK(fabs(var / (bound * bound / 3.0) - 1.0) < 0.03, "%s variance", t->name);
    }
    const cr_tensor_info *rv = cr_model_layout_find(&l, "bn1.running_var");
    CHECK(b[rv->offset] == 1.0f && b[0] == 0.0f, "running stats 0 and 1");
    cr_model_init(&l, 3, again, b);
    CHECK(memcmp(p, again, l.param_count * sizeof(float)) == 0, "same seed, same weights");
    cr_model_init(&l, 4, again, b);
    CHECK(memcmp(p, again, l.param_count * sizeof(float)) != 0, "other seed, other weights");
    free(p), free(b), free(again);
    cr_model_layout_free(&l);
}

static void test_torch_layout(void) {
    cr_model_desc desc;
    cr_model_preset("small", &desc);
    cr_model_layout l = cr_model_layout_make(&desc);
    const cr_tensor_info *t = cr_model_layout_find(&l, "layer2.0.conv1.weight"); /* [32,16,3,3] */
    float *ours = malloc(t->count * sizeof(float)), *torch = malloc(t->count * sizeof(float));
    float *back = malloc(t->count * sizeof(float));
    for (size_t i = 0; i < t->count; i++) ours[i] = (float)i;
    cr_tensor_to_torch(t, ours, torch);
    /* torch[o][i][h][w] = ours[o][h][w][i]; pick o=5, i=7, h=2, w=1 */
    CHECK(torch[((5 * 16 + 7) * 3 + 2) * 3 + 1] == ours[((5 * 3 + 2) * 3 + 1) * 16 + 7],
          "OIHW from OHWI");
    cr_tensor_from_torch(t, torch, back);
    CHECK(memcmp(ours, back, t->count * sizeof(float)) == 0, "round trip");
    free(ours), free(torch), free(back);
    cr_model_layout_free(&l);
}

int main(void) {
    test_presets();
    test_flops();
    test_names();
    test_describe();
    test_init();
    test_torch_layout();
    return check_finish();
}
