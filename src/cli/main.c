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
                 "       cresnet summary (-m small|medium|large | -c CONFIG [-o key=value]...)\n"
                 "       cresnet bench   -c CONFIG [--steps N] [--warmup N] [-o key=value]...\n"
                 "       cresnet data    fetch [--dir DIR] [--from FILE] [--md5 HEX]\n"
                 "       cresnet data    verify [--dir DIR] [--from FILE [--md5 HEX]]\n"
                 "\n"
                 "Config keys and defaults: docs/config.md. Exit codes: 0 ok, 2 usage or config,\n"
                 "3 data, 4 checkpoint, 5 NaN/Inf, 6 communication, 70 internal error,\n"
                 "75 stopped by SIGUSR1/SIGTERM after a checkpoint (requeue to resume).\n");
}

/* The flags, as bits: each subcommand says which it reads. */
enum {
    FLAG_C,
    FLAG_M,
    FLAG_CHECKPOINT,
    FLAG_DIR,
    FLAG_FROM,
    FLAG_MD5,
    FLAG_STEPS,
    FLAG_WARMUP,
    FLAG_O
};
static const char *const flag_names[] = {"-c",    "-m",      "--checkpoint", "--dir", "--from",
                                         "--md5", "--steps", "--warmup",     "-o"};
#define BIT(flag) (1u << (flag))

typedef struct {
    unsigned given; /* BIT(FLAG_...) of each flag on the command line */
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

static int flag_of(const char *arg) {
    for (int f = 0; f < (int)(sizeof flag_names / sizeof flag_names[0]); f++)
        if (strcmp(arg, flag_names[f]) == 0) return f;
    return -1;
}

static options parse(const char *cmd, int argc, char **argv) {
    options o = {.steps = 50, .warmup = 5};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int flag = i + 1 < argc ? flag_of(a) : -1; /* every flag takes a value */
        if (flag < 0) {
            if (a[0] == '-' || o.num_rest == 4)
                cr_fatal(CR_EXIT_USAGE, cmd, "unexpected argument '%s' (try cresnet --help)", a);
            o.rest[o.num_rest++] = a;
            continue;
        }
        const char *value = argv[++i];
        o.given |= BIT(flag);
        switch (flag) {
        case FLAG_C: o.config = value; break;
        case FLAG_M: o.model = value; break;
        case FLAG_CHECKPOINT: o.checkpoint = value; break;
        case FLAG_DIR: o.dir = value; break;
        case FLAG_FROM: o.from = value; break;
        case FLAG_MD5: o.md5 = value; break;
        case FLAG_STEPS: o.steps = parse_count("--steps", value); break;
        case FLAG_WARMUP: o.warmup = parse_count("--warmup", value); break;
        case FLAG_O:
            if (o.num_overrides == 256) cr_fatal(CR_EXIT_USAGE, cmd, "more than 256 -o options");
            o.overrides[o.num_overrides++] = value;
            break;
        }
    }
    return o;
}

/* A flag the subcommand does not read would be dropped without a word (a
 * `-o` on `summary -m`, a `--dir` on `train`): refuse it instead. */
static void allow_only(const char *cmd, const options *o, unsigned allowed) {
    for (int f = 0; f < (int)(sizeof flag_names / sizeof flag_names[0]); f++)
        if (o->given & ~allowed & BIT(f))
            cr_fatal(CR_EXIT_USAGE, cmd, "%s is not an option here (try cresnet --help)",
                     flag_names[f]);
}

static cr_config load_config(const char *cmd, const options *o) {
    if (!o->config) cr_fatal(CR_EXIT_USAGE, cmd, "missing -c CONFIG");
    cr_config cfg;
    cr_config_load(o->config, o->overrides, o->num_overrides, &cfg);
    return cfg;
}

static int cmd_summary(const options *o) {
    cr_model_desc desc;
    allow_only(o->model ? "summary -m" : "summary", o,
               o->model ? BIT(FLAG_M) : BIT(FLAG_C) | BIT(FLAG_O));
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
    if (o->num_rest == 1 && strcmp(o->rest[0], "fetch") == 0) {
        allow_only("data fetch", o, BIT(FLAG_DIR) | BIT(FLAG_FROM) | BIT(FLAG_MD5));
        return cr_data_fetch(o->dir, o->from, o->md5);
    }
    if (o->num_rest != 1 || strcmp(o->rest[0], "verify") != 0)
        cr_fatal(CR_EXIT_USAGE, "data", "expected 'fetch' or 'verify'");
    allow_only("data verify", o, BIT(FLAG_DIR) | BIT(FLAG_FROM) | BIT(FLAG_MD5));
    if (o->md5 && !o->from) cr_fatal(CR_EXIT_USAGE, "data verify", "--md5 needs --from FILE");
    /* --from alone checks the archive; with --dir, the folder too. */
    if (o->from) cr_data_verify_archive(o->from, o->md5);
    if (o->from && !o->dir) return 0;
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
        allow_only(cmd, &o, BIT(FLAG_C) | BIT(FLAG_O));
        cr_config cfg = load_config(cmd, &o);
        return cr_train(&cfg);
    }
    if (strcmp(cmd, "eval") == 0) {
        allow_only(cmd, &o, BIT(FLAG_C) | BIT(FLAG_CHECKPOINT) | BIT(FLAG_O));
        cr_config cfg = load_config(cmd, &o);
        if (!o.checkpoint) cr_fatal(CR_EXIT_USAGE, "eval", "missing --checkpoint FILE");
        return cr_eval(&cfg, o.checkpoint);
    }
    if (strcmp(cmd, "bench") == 0) {
        allow_only(cmd, &o, BIT(FLAG_C) | BIT(FLAG_STEPS) | BIT(FLAG_WARMUP) | BIT(FLAG_O));
        if (o.steps < 1) cr_fatal(CR_EXIT_USAGE, "--steps", "must be at least 1");
        cr_config cfg = load_config(cmd, &o);
        return cr_bench(&cfg, o.steps, o.warmup);
    }
    cr_fatal(CR_EXIT_USAGE, "command line", "unknown subcommand '%s' (try cresnet --help)", cmd);
}
