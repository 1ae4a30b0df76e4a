/* cresnet: the command line. Parses the subcommand and its options and hands
 * over to the modules; holds no logic of its own. */
#include "cresnet/config.h"
#include "cresnet/data.h"
#include "cresnet/error.h"
#include "cresnet/model.h"
#include "cresnet/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out, "usage: cresnet train   -c CONFIG [-o key=value]...\n"
                 "       cresnet eval    -c CONFIG --checkpoint FILE [-o key=value]...\n"
                 "       cresnet summary (-m small|medium|large | -c CONFIG)\n"
                 "       cresnet bench   -c CONFIG [--steps N] [--warmup N] [-o key=value]...\n"
                 "       cresnet data    fetch [--dir DIR] [--from FILE] [--md5 HEX]\n"
                 "       cresnet data    verify [--dir DIR]\n"
                 "\n"
                 "Config keys and defaults: docs/config.md. Exit codes: 0 ok, 2 usage or config,\n"
                 "3 data, 4 checkpoint, 5 NaN/Inf, 6 communication.\n");
}

typedef struct {
    const char *config, *model, *checkpoint, *dir, *from, *md5;
    const char *overrides[256];
    int num_overrides, steps, warmup;
    const char *rest[4]; /* positional words */
    int num_rest;
} options;

static int parse_count(const char *flag, const char *text) {
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 0 || v > 1000000000)
        cr_fatal(CR_EXIT_USAGE, flag, "expected a non-negative integer, got '%s'", text);
    return (int)v;
}

static options parse(const char *cmd, int argc, char **argv) {
    options o = {.steps = 50, .warmup = 5};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(a, "-c") == 0 && has_value)
            o.config = argv[++i];
        else if (strcmp(a, "-m") == 0 && has_value)
            o.model = argv[++i];
        else if (strcmp(a, "--checkpoint") == 0 && has_value)
            o.checkpoint = argv[++i];
        else if (strcmp(a, "--dir") == 0 && has_value)
            o.dir = argv[++i];
        else if (strcmp(a, "--from") == 0 && has_value)
            o.from = argv[++i];
        else if (strcmp(a, "--md5") == 0 && has_value)
            o.md5 = argv[++i];
        else if (strcmp(a, "--steps") == 0 && has_value)
            o.steps = parse_count("--steps", argv[++i]);
        else if (strcmp(a, "--warmup") == 0 && has_value)
            o.warmup = parse_count("--warmup", argv[++i]);
        else if (strcmp(a, "-o") == 0 && has_value && o.num_overrides < 256)
            o.overrides[o.num_overrides++] = argv[++i];
        else if (a[0] != '-' && o.num_rest < 4)
            o.rest[o.num_rest++] = a;
        else
            cr_fatal(CR_EXIT_USAGE, cmd, "unexpected argument '%s' (try cresnet --help)", a);
    }
    return o;
}

static cr_config load_config(const char *cmd, const options *o) {
    if (!o->config) cr_fatal(CR_EXIT_USAGE, cmd, "missing -c CONFIG");
    cr_config cfg;
    cr_config_load(o->config, o->overrides, o->num_overrides, &cfg);
    return cfg;
}

static int cmd_summary(const options *o) {
    cr_model_desc desc;
    if (o->model) {
        char err[256];
        if (cr_model_describe(o->model, NULL, 0, NULL, 0, &desc, err, sizeof err) != 0)
            cr_fatal(CR_EXIT_USAGE, "model.arch", "%s", err);
    } else if (o->config) {
        cr_config cfg = load_config("summary", o);
        desc = cr_config_model(&cfg);
    } else {
        cr_fatal(CR_EXIT_USAGE, "summary", "missing -m small|medium|large or -c CONFIG");
    }
    cr_model_print_summary(&desc, stdout);
    return 0;
}

static int cmd_data(const options *o) {
    if (o->num_rest == 1 && strcmp(o->rest[0], "fetch") == 0)
        return cr_data_fetch(o->dir, o->from, o->md5);
    if (o->num_rest != 1 || strcmp(o->rest[0], "verify") != 0)
        cr_fatal(CR_EXIT_USAGE, "data", "expected 'fetch' or 'verify'");
    const char *env = getenv("CRESNET_DATA");
    const char *dir = o->dir ? o->dir : env && env[0] ? env : "./data/cifar-10-batches-bin";
    for (int train = 1; train >= 0; train--) {
        cr_cifar_set set = cr_cifar_load(dir, train);
        long per_class[CR_NUM_CLASSES] = {0};
        for (int i = 0; i < set.count; i++) per_class[set.labels[i]]++;
        printf("%s: %d images, per class:", train ? "train" : "test", set.count);
        for (int k = 0; k < CR_NUM_CLASSES; k++) printf(" %ld", per_class[k]);
        printf("\n");
        cr_cifar_free(&set);
    }
    printf("%s: ok\n", dir);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CR_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    options o = parse(cmd, argc - 2, argv + 2);
    if (strcmp(cmd, "summary") == 0) return cmd_summary(&o);
    if (strcmp(cmd, "data") == 0) return cmd_data(&o);
    if (o.num_rest > 0)
        cr_fatal(CR_EXIT_USAGE, cmd, "unexpected argument '%s' (try cresnet --help)", o.rest[0]);
    if (strcmp(cmd, "train") == 0) {
        cr_config cfg = load_config(cmd, &o);
        return cr_train(&cfg);
    }
    if (strcmp(cmd, "eval") == 0) {
        cr_config cfg = load_config(cmd, &o);
        if (!o.checkpoint) cr_fatal(CR_EXIT_USAGE, "eval", "missing --checkpoint FILE");
        return cr_eval(&cfg, o.checkpoint);
    }
    if (strcmp(cmd, "bench") == 0) {
        if (o.steps < 1) cr_fatal(CR_EXIT_USAGE, "--steps", "must be at least 1");
        cr_config cfg = load_config(cmd, &o);
        return cr_bench(&cfg, o.steps, o.warmup);
    }
    cr_fatal(CR_EXIT_USAGE, "command line", "unknown subcommand '%s' (try cresnet --help)", cmd);
}
