/* config: YAML (libyaml) into cr_config, `-o key=value` overrides, the
 * cross-key checks, and the written form that reloads to the same struct.
 *
 * Every key is listed once, in `keys` below: its dotted path, its type, where
 * it lives in cr_config, and its range or names. The loader, the overrides,
 * the writer and hence the digest all walk that table, so a key added there
 * is parsed, checked, written and hashed without further code. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */

#include "cresnet/config.h"
#include "cresnet/error.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

/* ------------------------------------------------------------------------
 * The key table */

typedef enum {
    KEY_INT,      /* int, in [min, max] */
    KEY_U64,      /* uint64_t, any value */
    KEY_FLOAT,    /* float, finite, in [min, max] (or (min, max] with min_open) */
    KEY_BOOL,     /* int 0/1, written true/false */
    KEY_STRING,   /* char[size], any text */
    KEY_NAME,     /* char[size], one of names */
    KEY_ENUM,     /* a C enum, index into names */
    KEY_INT_LIST, /* int[size] with its count at count_offset, each in [min, max] */
    KEY_FLOAT3,   /* float[3], each finite and in [min, max] */
    KEY_RESUME,   /* cr_resume_mode, with the path (char[size]) at count_offset */
} key_type;

typedef struct {
    const char *path; /* "schedule.max_lr": sections, then the key */
    key_type type;
    size_t offset;       /* of the value in cr_config */
    size_t count_offset; /* KEY_INT_LIST: the count; KEY_RESUME: the path buffer */
    size_t size;         /* strings: buffer bytes; KEY_INT_LIST: capacity */
    double min, max;
    int min_open;             /* the minimum itself is out of range (std > 0) */
    const char *const *names; /* KEY_NAME, KEY_ENUM: NULL-terminated */
} key_spec;

static const char *const arch_names[] = {"small", "medium", "large", "custom", NULL};
static const char *const precision_names[] = {"fp32", "tf32", "bf16", NULL};
static const char *const optimizer_names[] = {"sgd", NULL};
static const char *const schedule_names[] = {"cyclic", "onecycle", "cosine", "constant", NULL};
static const char *const mode_names[] = {"triangular", "triangular2", "exp_range", NULL};
static const char *const dist_names[] = {"auto", "none", "mpi", "nccl", NULL};
static const char *const device_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const progress_names[] = {"auto", "bar", "lines", "off", NULL};
static const char *const on_device_names[] = {"auto", "true", "false", NULL};

/* KEY_ENUM fields are read and written as int. */
_Static_assert(sizeof(cr_precision) == sizeof(int), "enum size");
_Static_assert(sizeof(cr_schedule_name) == sizeof(int), "enum size");
_Static_assert(sizeof(cr_cyclic_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(cr_dist_backend) == sizeof(int), "enum size");
_Static_assert(sizeof(cr_device_type) == sizeof(int), "enum size");
_Static_assert(sizeof(cr_resume_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(cr_progress) == sizeof(int), "enum size");
_Static_assert(sizeof(cr_on_device) == sizeof(int), "enum size");

/* offsetof that only compiles when the field has type T (arrays as pointers),
 * so a table row cannot point a float key at an int field. */
#define FIELD(f, T) _Generic(((cr_config *)0)->f, T : offsetof(cr_config, f))
#define FIELD_SIZE(f) sizeof(((cr_config *)0)->f)

#define INT(p, f, lo, hi)                                                                          \
    { p, KEY_INT, FIELD(f, int), 0, 0, lo, hi, 0, NULL }
#define U64(p, f)                                                                                  \
    { p, KEY_U64, FIELD(f, uint64_t), 0, 0, 0, 0, 0, NULL }
#define FLOAT(p, f, lo, hi)                                                                        \
    { p, KEY_FLOAT, FIELD(f, float), 0, 0, lo, hi, 0, NULL }
#define FLOAT_ABOVE(p, f, lo, hi)                                                                  \
    { p, KEY_FLOAT, FIELD(f, float), 0, 0, lo, hi, 1, NULL }
#define BOOL(p, f)                                                                                 \
    { p, KEY_BOOL, FIELD(f, int), 0, 0, 0, 1, 0, NULL }
#define STRING(p, f)                                                                               \
    { p, KEY_STRING, FIELD(f, char *), 0, FIELD_SIZE(f), 0, 0, 0, NULL }
#define NAME(p, f, n)                                                                              \
    { p, KEY_NAME, FIELD(f, char *), 0, FIELD_SIZE(f), 0, 0, 0, n }
#define ENUM(p, f, n)                                                                              \
    { p, KEY_ENUM, offsetof(cr_config, f), 0, 0, 0, 0, 0, n }
#define INT_LIST(p, f, count, lo, hi)                                                              \
    { p, KEY_INT_LIST, FIELD(f, int *), FIELD(count, int), CR_MAX_STAGES, lo, hi, 0, NULL }
#define FLOAT3(p, f, lo, hi, open)                                                                 \
    { p, KEY_FLOAT3, FIELD(f, float *), 0, 3, lo, hi, open, NULL }
#define RESUME(p, f, path)                                                                         \
    { p, KEY_RESUME, offsetof(cr_config, f), FIELD(path, char *), FIELD_SIZE(path), 0, 0, 0, NULL }

/* In SPEC's order, which is also the order of the written form. Keys of one
 * section (and subsection) must stay together for the writer. */
static const key_spec keys[] = {
    NAME("model.arch", model.arch, arch_names),
    INT_LIST("model.widths", model.widths, model.num_widths, 1, CR_MAX_WIDTH),
    INT_LIST("model.blocks", model.blocks, model.num_blocks, 1, CR_MAX_BLOCKS),

    STRING("data.dir", data.dir),
    INT("data.augment.crop_padding", data.crop_padding, 0, CR_IMAGE_SIZE),
    BOOL("data.augment.hflip", data.hflip),
    FLOAT("data.augment.rotate_deg", data.rotate_deg, 0, 180),
    FLOAT3("data.mean", data.mean, -HUGE_VAL, HUGE_VAL, 0),
    FLOAT3("data.std", data.std, 0, HUGE_VAL, 1),
    INT("data.train_limit", data.train_limit, 0, INT_MAX),
    INT("data.num_threads", data.num_threads, 0, 1024),
    ENUM("data.on_device", data.on_device, on_device_names),

    INT("train.epochs", train.epochs, 1, INT_MAX),
    INT("train.batch_size", train.batch_size, 1, INT_MAX),
    U64("train.seed", train.seed),
    ENUM("train.precision", train.precision, precision_names),
    BOOL("train.deterministic", train.deterministic),
    INT("train.inject_nan_step", train.inject_nan_step, 0, INT_MAX),

    NAME("optimizer.name", optimizer.name, optimizer_names),
    FLOAT("optimizer.lr", optimizer.lr, 0, HUGE_VAL),
    FLOAT("optimizer.momentum", optimizer.momentum, 0, 1),
    BOOL("optimizer.nesterov", optimizer.nesterov),
    FLOAT("optimizer.weight_decay", optimizer.weight_decay, 0, HUGE_VAL),

    ENUM("schedule.name", schedule.name, schedule_names),
    FLOAT("schedule.base_lr", schedule.base_lr, 0, HUGE_VAL),
    FLOAT("schedule.max_lr", schedule.max_lr, 0, HUGE_VAL),
    INT("schedule.step_size_up", schedule.step_size_up, 1, INT_MAX),
    INT("schedule.step_size_down", schedule.step_size_down, 0, INT_MAX),
    ENUM("schedule.mode", schedule.mode, mode_names),
    FLOAT_ABOVE("schedule.gamma", schedule.gamma, 0, 1),
    BOOL("schedule.cycle_momentum", schedule.cycle_momentum),
    FLOAT("schedule.base_momentum", schedule.base_momentum, 0, 1),
    FLOAT("schedule.max_momentum", schedule.max_momentum, 0, 1),

    ENUM("dist.backend", dist.backend, dist_names),
    BOOL("dist.sync_bn", dist.sync_bn),
    FLOAT_ABOVE("dist.bucket_mb", dist.bucket_mb, 0, 65536),
    FLOAT_ABOVE("dist.timeout_s", dist.timeout_s, 0, 604800),

    ENUM("device.type", device.type, device_names),
    BOOL("device.debug", device.debug),
    BOOL("device.graphs", device.graphs),
    BOOL("device.autotune", device.autotune),

    STRING("checkpoint.dir", checkpoint.dir),
    INT("checkpoint.every_epochs", checkpoint.every_epochs, 0, INT_MAX),
    INT("checkpoint.keep", checkpoint.keep, 1, INT_MAX),
    RESUME("checkpoint.resume", checkpoint.resume, checkpoint.resume_path),

    STRING("log.dir", log.dir),
    INT("log.every_steps", log.every_steps, 0, INT_MAX),
    BOOL("log.tensorboard", log.tensorboard),
    STRING("log.timeline", log.timeline),
    ENUM("log.progress", log.progress, progress_names),
};

#define NUM_KEYS (sizeof keys / sizeof keys[0])

static const key_spec *find_key(const char *path) {
    for (size_t i = 0; i < NUM_KEYS; i++)
        if (strcmp(keys[i].path, path) == 0) return &keys[i];
    return NULL;
}

/* A section is a proper prefix of some key ending at a dot ("data.augment"). */
static int is_section(const char *path) {
    size_t n = strlen(path);
    for (size_t i = 0; i < NUM_KEYS; i++)
        if (strncmp(keys[i].path, path, n) == 0 && keys[i].path[n] == '.') return 1;
    return 0;
}

static void *field(cr_config *cfg, size_t offset) { return (char *)cfg + offset; }
static const void *cfield(const cr_config *cfg, size_t offset) {
    return (const char *)cfg + offset;
}

/* ------------------------------------------------------------------------
 * Defaults: SPEC's Config section (and configs/resnet_small.yaml). */

/* Zero-filled first, so unused list entries, string tails and padding are
 * zero and two equal configs compare equal with memcmp. */
void cr_config_defaults(cr_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->model.arch, "small");

    cfg->data.crop_padding = 2;
    cfg->data.hflip = 1;
    cfg->data.rotate_deg = 5.0f;
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    memcpy(cfg->data.mean, mean, sizeof mean);
    memcpy(cfg->data.std, std, sizeof std);

    cfg->train.epochs = 30;
    cfg->train.batch_size = 128;
    cfg->train.precision = CR_PRECISION_FP32;
    cfg->device.graphs = 1;

    strcpy(cfg->optimizer.name, "sgd");
    cfg->optimizer.lr = 0.01f;
    cfg->optimizer.momentum = 0.9f;
    cfg->optimizer.nesterov = 1;
    cfg->optimizer.weight_decay = 5e-4f;

    cfg->schedule.name = CR_SCHEDULE_CYCLIC;
    cfg->schedule.base_lr = 1e-6f;
    cfg->schedule.max_lr = 1e-2f;
    cfg->schedule.step_size_up = 2000;
    cfg->schedule.mode = CR_CYCLIC_TRIANGULAR;
    cfg->schedule.gamma = 1.0f;
    cfg->schedule.cycle_momentum = 1;
    cfg->schedule.base_momentum = 0.8f;
    cfg->schedule.max_momentum = 0.9f;

    cfg->dist.backend = CR_DIST_AUTO;
    cfg->dist.sync_bn = 1;
    cfg->dist.bucket_mb = 25.0f;
    cfg->dist.timeout_s = 600.0f;

    cfg->device.type = CR_DEVICE_AUTO;

    cfg->checkpoint.every_epochs = 1;
    cfg->checkpoint.keep = 3;
    cfg->checkpoint.resume = CR_RESUME_AUTO;

    strcpy(cfg->log.dir, "runs/default");
    cfg->log.tensorboard = 1;
    cfg->log.progress = CR_PROGRESS_AUTO;
}

/* ------------------------------------------------------------------------
 * Where values come from, for error messages */

/* Where each key got its value, so that cross-key errors found after
 * loading can still name a line (or the override) rather than just the file. */
typedef enum { FROM_DEFAULT, FROM_FILE, FROM_OVERRIDE } origin_kind;

typedef struct {
    const char *file; /* NULL when there is no config file */
    origin_kind from[NUM_KEYS];
    int set_order[NUM_KEYS]; /* 0: a default; else the n-th value applied */
    int num_set;
    yaml_mark_t mark[NUM_KEYS];       /* FROM_FILE */
    const char *assignment[NUM_KEYS]; /* FROM_OVERRIDE: the caller's "key=value" */
} origins;

/* One YAML document being applied: a config file, or one override's value. */
typedef struct {
    yaml_document_t *doc;
    const char *file;       /* the config file, or NULL for an override */
    const char *assignment; /* the override, "key.path=value" */
    origins *origins;       /* NULL: nobody asks later */
} source;

/* `-o key.path` from "key.path=value", into buf. */
static const char *override_where(const char *assignment, char *buf, size_t len) {
    const char *eq = strchr(assignment, '=');
    int key_len = eq ? (int)(eq - assignment) : (int)strlen(assignment);
    snprintf(buf, len, "-o %.*s", key_len, assignment);
    return buf;
}

static const char *mark_where(const char *file, yaml_mark_t mark, char *buf, size_t len) {
    snprintf(buf, len, "%s:%zu:%zu", file, mark.line + 1, mark.column + 1);
    return buf;
}

/* Fails at node (file:line:col), or at the override as a whole. */
static _Noreturn void fail(const source *src, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static _Noreturn void fail(const source *src, const yaml_node_t *node, const char *fmt, ...) {
    char where[CR_PATH_MAX + 64], what[2 * CR_PATH_MAX];
    if (!src->file)
        override_where(src->assignment, where, sizeof where);
    else if (node)
        mark_where(src->file, node->start_mark, where, sizeof where);
    else
        snprintf(where, sizeof where, "%s", src->file);
    va_list args;
    va_start(args, fmt);
    vsnprintf(what, sizeof what, fmt, args);
    va_end(args);
    cr_fatal(CR_EXIT_USAGE, where, "%s", what);
}

/* ------------------------------------------------------------------------
 * Scalars */

static yaml_node_t *node_at(const source *src, int index) {
    yaml_node_t *node = yaml_document_get_node(src->doc, index);
    CR_ASSERT(node != NULL);
    return node;
}

static const char *scalar_text(const yaml_node_t *node) {
    return (const char *)node->data.scalar.value;
}

/* YAML's null: an empty plain scalar, ~ or null. */
static int is_null(const yaml_node_t *node) {
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = scalar_text(node);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* What the user wrote, for "got ..." in messages: quoted, shortened, and
 * kept to one line (SPEC: every error is one line). */
static const char *describe(const yaml_node_t *node, char *buf, size_t len) {
    if (node->type == YAML_SEQUENCE_NODE) return "a list";
    if (node->type == YAML_MAPPING_NODE) return "a mapping";
    const char *s = scalar_text(node);
    size_t n = 0;
    CR_ASSERT(len >= 48);
    buf[n++] = '\'';
    for (; *s && n < 41; s++) buf[n++] = (unsigned char)*s < 0x20 ? '?' : *s;
    if (*s) buf[n++] = '.', buf[n++] = '.', buf[n++] = '.';
    buf[n++] = '\'';
    buf[n] = '\0';
    return buf;
}

/* "an integer >= 1", "a number in 0..1", "a number > 0": the range in words. */
static const char *expectation(const key_spec *k, const char *noun, char *buf, size_t len) {
    int has_min = k->min > -HUGE_VAL, has_max = k->max < HUGE_VAL;
    if (k->type == KEY_INT || k->type == KEY_INT_LIST) has_max = k->max < INT_MAX;
    if (has_min && has_max && !k->min_open)
        snprintf(buf, len, "%s in %.9g..%.9g", noun, k->min, k->max);
    else if (has_min && has_max)
        snprintf(buf, len, "%s > %.9g and <= %.9g", noun, k->min, k->max);
    else if (has_min)
        snprintf(buf, len, "%s %s %.9g", noun, k->min_open ? ">" : ">=", k->min);
    else
        snprintf(buf, len, "%s", noun);
    return buf;
}

/* Strict decimal forms, the whole text: [+-]digits for integers, and for
 * floats also a fraction and an exponent. strtol/strtof alone would accept
 * leading blanks, hex, inf and nan. */
static int is_integer_text(const char *s) {
    if (*s == '+' || *s == '-') s++;
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

static int is_decimal_text(const char *s) {
    int digits = 0;
    if (*s == '+' || *s == '-') s++;
    for (; *s >= '0' && *s <= '9'; s++) digits++;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++) digits++;
    if (!digits) return 0;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (*s < '0' || *s > '9') return 0;
        while (*s >= '0' && *s <= '9') s++;
    }
    return *s == '\0';
}

static int in_range(const key_spec *k, double v) {
    if (k->min_open ? !(v > k->min) : !(v >= k->min)) return 0;
    return v <= k->max;
}

/* The float of a text, as both the loader and the writer's round-trip check
 * see it. Returns 0 unless it is a finite decimal number. */
static int parse_float(const char *s, float *out) {
    if (!is_decimal_text(s)) return 0;
    *out = strtof(s, NULL);
    return isfinite(*out);
}

static int parse_int(const key_spec *k, const char *s, int *out) {
    if (!is_integer_text(s)) return 0;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno || !in_range(k, (double)v)) return 0;
    *out = (int)v;
    return 1;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (*s == '-' || !is_integer_text(s)) return 0; /* strtoull would wrap "-1" */
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno) return 0;
    *out = (uint64_t)v;
    return 1;
}

/* YAML 1.2 core booleans; yes/no/on/off are not booleans there either. */
static int parse_bool(const char *s, int *out) {
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return *out = 1, 1;
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return *out = 0, 1;
    return 0;
}

static int find_name(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}

static const char *name_list(const char *const *names, char *buf, size_t len) {
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", names[i]);
    return buf;
}

/* ------------------------------------------------------------------------
 * Setting one key from a node */

static void expect_scalar(const source *src, const key_spec *k, const yaml_node_t *node,
                          const char *expected) {
    char got[64];
    if (node->type != YAML_SCALAR_NODE)
        fail(src, node, "%s: expected %s, got %s", k->path, expected,
             describe(node, got, sizeof got));
    if (strlen(scalar_text(node)) != node->data.scalar.length)
        fail(src, node, "%s: expected %s, got text with a NUL byte", k->path, expected);
}

static void set_text(const source *src, const key_spec *k, const yaml_node_t *node, char *dst,
                     size_t size, const char *text) {
    size_t n = strlen(text);
    if (n >= size) fail(src, node, "%s: longer than %zu bytes (%zu)", k->path, size - 1, n);
    memset(dst, 0, size);
    memcpy(dst, text, n);
}

static void set_int(const source *src, const key_spec *k, const yaml_node_t *node, int *dst) {
    char expected[96], got[64];
    expectation(k, "an integer", expected, sizeof expected);
    expect_scalar(src, k, node, expected);
    if (!parse_int(k, scalar_text(node), dst))
        fail(src, node, "%s: expected %s, got %s", k->path, expected,
             describe(node, got, sizeof got));
}

static void set_float(const source *src, const key_spec *k, const yaml_node_t *node, float *dst) {
    char expected[96], got[64];
    expectation(k, "a number", expected, sizeof expected);
    expect_scalar(src, k, node, expected);
    if (!parse_float(scalar_text(node), dst) || !in_range(k, *dst))
        fail(src, node, "%s: expected %s, got %s", k->path, expected,
             describe(node, got, sizeof got));
}

static void set_int_list(const source *src, const key_spec *k, const yaml_node_t *node,
                         cr_config *cfg) {
    char expected[128], got[64];
    expectation(k, "a list of integers", expected, sizeof expected);
    if (node->type != YAML_SEQUENCE_NODE)
        fail(src, node, "%s: expected %s, got %s", k->path, expected,
             describe(node, got, sizeof got));
    yaml_node_item_t *items = node->data.sequence.items.start;
    int count = (int)(node->data.sequence.items.top - items);
    if (count > (int)k->size)
        fail(src, node, "%s: expected at most %zu entries, got %d", k->path, k->size, count);
    int *values = field(cfg, k->offset);
    memset(values, 0, k->size * sizeof *values);
    for (int i = 0; i < count; i++) set_int(src, k, node_at(src, items[i]), &values[i]);
    *(int *)field(cfg, k->count_offset) = count;
}

static void set_float3(const source *src, const key_spec *k, const yaml_node_t *node, float *dst) {
    char got[64];
    int count = node->type == YAML_SEQUENCE_NODE
                    ? (int)(node->data.sequence.items.top - node->data.sequence.items.start)
                    : -1;
    if (count != 3) {
        if (count < 0)
            describe(node, got, sizeof got);
        else
            snprintf(got, sizeof got, "%d entries", count);
        fail(src, node, "%s: expected a list of 3 numbers (one per channel), got %s", k->path, got);
    }
    for (int i = 0; i < 3; i++)
        set_float(src, k, node_at(src, node->data.sequence.items.start[i]), &dst[i]);
}

/* checkpoint.resume: auto, none, or anything else is a checkpoint path. */
static void set_resume(const source *src, const key_spec *k, const yaml_node_t *node,
                       cr_config *cfg) {
    expect_scalar(src, k, node, "auto, none or a checkpoint path");
    const char *s = scalar_text(node);
    char *path = field(cfg, k->count_offset);
    int *mode = field(cfg, k->offset);
    memset(path, 0, k->size);
    if (!strcmp(s, "auto"))
        *mode = CR_RESUME_AUTO;
    else if (!strcmp(s, "none"))
        *mode = CR_RESUME_NONE;
    else if (!*s)
        fail(src, node, "%s: expected auto, none or a checkpoint path, got ''", k->path);
    else {
        set_text(src, k, node, path, k->size, s);
        *mode = CR_RESUME_PATH;
    }
}

static void set_value(const source *src, const key_spec *k, const yaml_node_t *node,
                      cr_config *cfg) {
    char expected[256], got[64];
    void *dst = field(cfg, k->offset);
    switch (k->type) {
    case KEY_INT: set_int(src, k, node, dst); return;
    case KEY_FLOAT: set_float(src, k, node, dst); return;
    case KEY_INT_LIST: set_int_list(src, k, node, cfg); return;
    case KEY_FLOAT3: set_float3(src, k, node, dst); return;
    case KEY_RESUME: set_resume(src, k, node, cfg); return;
    case KEY_U64:
        snprintf(expected, sizeof expected, "an integer in 0..%" PRIu64, UINT64_MAX);
        expect_scalar(src, k, node, expected);
        if (!parse_u64(scalar_text(node), dst)) break;
        return;
    case KEY_BOOL:
        snprintf(expected, sizeof expected, "true or false");
        expect_scalar(src, k, node, expected);
        if (!parse_bool(scalar_text(node), dst)) break;
        return;
    case KEY_STRING:
        expect_scalar(src, k, node, "a string");
        set_text(src, k, node, dst, k->size, is_null(node) ? "" : scalar_text(node));
        return;
    case KEY_NAME:
    case KEY_ENUM: {
        char names[192];
        snprintf(expected, sizeof expected, "one of %s", name_list(k->names, names, sizeof names));
        expect_scalar(src, k, node, expected);
        int i = find_name(k->names, scalar_text(node));
        if (i < 0) break;
        if (k->type == KEY_ENUM)
            *(int *)dst = i;
        else
            set_text(src, k, node, dst, k->size, k->names[i]);
        return;
    }
    }
    fail(src, node, "%s: expected %s, got %s", k->path, expected, describe(node, got, sizeof got));
}

/* ------------------------------------------------------------------------
 * Mappings: sections and keys */

/* Edit distance, for "did you mean". Paths are short; longer text is cut. */
static int edit_distance(const char *a, const char *b) {
    enum { N = 64 };
    int row[N + 1];
    size_t la = strnlen(a, N), lb = strnlen(b, N);
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diagonal = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diagonal + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diagonal = up;
        }
    }
    return row[lb];
}

/* The one key named like the last part of path in another section
 * ("train.lr" -> optimizer.lr), or NULL when none or several are. */
static const char *same_leaf(const char *path) {
    const char *leaf = strrchr(path, '.'), *found = NULL;
    leaf = leaf ? leaf + 1 : path;
    for (size_t i = 0; i < NUM_KEYS; i++) {
        if (strcmp(strrchr(keys[i].path, '.') + 1, leaf) != 0) continue;
        if (found) return NULL;
        found = keys[i].path;
    }
    return found;
}

/* The key or section nearest to path within 3 edits, skipping the sections
 * path is already inside ("train.lr" is not a typo of "train"); its length
 * goes to *len (a section is a prefix of a key path). */
static const char *nearest(const char *path, int *len) {
    const char *best = NULL;
    int best_distance = 4;
    for (size_t i = 0; i < NUM_KEYS; i++) {
        const char *key = keys[i].path;
        for (size_t n = 1; n <= strlen(key); n++) {
            if (key[n] != '.' && key[n] != '\0') continue;
            if (strncmp(path, key, n) == 0 && path[n] == '.') continue;
            char candidate[96];
            snprintf(candidate, sizeof candidate, "%.*s", (int)n, key);
            int d = edit_distance(path, candidate);
            /* and less than half of it wrong: "zzz" is not a typo of "log" */
            if (d < best_distance && 2 * d < (int)n) best = key, *len = (int)n, best_distance = d;
        }
    }
    return best;
}

/* " (did you mean X?)", or "" when nothing is close. */
static const char *suggestion(const char *path, char *buf, size_t len) {
    int n = 0;
    const char *best = same_leaf(path);
    if (best)
        n = (int)strlen(best);
    else
        best = nearest(path, &n);
    if (!best) return "";
    snprintf(buf, len, " (did you mean %.*s?)", n, best);
    return buf;
}

static void apply_node(const source *src, const char *path, const yaml_node_t *key_node,
                       const yaml_node_t *value, cr_config *cfg);

/* The pairs of a mapping under `prefix` ("" at the top). */
static void apply_mapping(const source *src, const char *prefix, const yaml_node_t *map,
                          cr_config *cfg) {
    yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    int count = (int)(map->data.mapping.pairs.top - pairs);
    for (int i = 0; i < count; i++) {
        const yaml_node_t *key = node_at(src, pairs[i].key);
        char got[64], path[256];
        if (key->type != YAML_SCALAR_NODE)
            fail(src, key, "%s%sexpected a key name, got %s", prefix, *prefix ? ": " : "",
                 describe(key, got, sizeof got));
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", scalar_text(key));
        /* libyaml keeps duplicates; the last would silently win. */
        for (int j = 0; j < i; j++) {
            const yaml_node_t *earlier = node_at(src, pairs[j].key);
            if (earlier->type == YAML_SCALAR_NODE &&
                !strcmp(scalar_text(earlier), scalar_text(key)))
                fail(src, key, "%s: duplicate key (first at line %zu)", path,
                     earlier->start_mark.line + 1);
        }
        apply_node(src, path, key, node_at(src, pairs[i].value), cfg);
    }
}

/* A key's value, or a section's mapping. key_node is NULL for an override
 * (the error then points at the override as a whole). */
static void apply_node(const source *src, const char *path, const yaml_node_t *key_node,
                       const yaml_node_t *value, cr_config *cfg) {
    const key_spec *k = find_key(path);
    char buf[128];
    if (k) {
        set_value(src, k, value, cfg);
        if (src->origins) {
            size_t i = (size_t)(k - keys);
            src->origins->from[i] = src->file ? FROM_FILE : FROM_OVERRIDE;
            src->origins->set_order[i] = ++src->origins->num_set;
            src->origins->mark[i] = value->start_mark;
            src->origins->assignment[i] = src->assignment;
        }
        return;
    }
    if (!is_section(path))
        fail(src, key_node, "%s: unknown key%s", path, suggestion(path, buf, sizeof buf));
    if (is_null(value)) return; /* a section with every key commented out */
    if (value->type != YAML_MAPPING_NODE)
        fail(src, value, "%s: expected a mapping (the %s.* keys), got %s", path, path,
             describe(value, buf, sizeof buf));
    apply_mapping(src, path, value, cfg);
}

/* ------------------------------------------------------------------------
 * Parsing text into a document */

static const char *error_kind(yaml_error_type_t error) {
    switch (error) {
    case YAML_READER_ERROR: return "cannot read YAML";
    case YAML_SCANNER_ERROR:
    case YAML_PARSER_ERROR:
    case YAML_COMPOSER_ERROR: return "malformed YAML";
    default: return "YAML error";
    }
}

/* libyaml's problem text as a SPEC error: WHERE is the problem's mark, WHAT
 * the problem and what libyaml was in the middle of. */
static _Noreturn void fail_parser(const yaml_parser_t *parser, const char *file,
                                  const char *assignment) {
    char where[CR_PATH_MAX + 64], context[160] = "";
    if (parser->error == YAML_MEMORY_ERROR) cr_fatal(CR_EXIT_INTERNAL, "config", "out of memory");
    if (!file)
        override_where(assignment, where, sizeof where);
    else if (parser->error == YAML_READER_ERROR)
        snprintf(where, sizeof where, "%s", file);
    else
        mark_where(file, parser->problem_mark, where, sizeof where);
    if (parser->context)
        snprintf(context, sizeof context, " (%s at line %zu, column %zu)", parser->context,
                 parser->context_mark.line + 1, parser->context_mark.column + 1);
    if (parser->error == YAML_READER_ERROR)
        cr_fatal(CR_EXIT_USAGE, where, "%s: %s at byte %zu", error_kind(parser->error),
                 parser->problem, parser->problem_offset);
    cr_fatal(CR_EXIT_USAGE, where, "%s: %s%s", error_kind(parser->error),
             parser->problem ? parser->problem : "unknown problem", context);
}

/* Loads the one document the parser reads (the file, or an override's text
 * when file is NULL); a second document is an error, not silently ignored. */
static void load_document(yaml_parser_t *parser, yaml_document_t *doc, const char *file,
                          const char *assignment) {
    if (!yaml_parser_load(parser, doc)) fail_parser(parser, file, assignment);
    yaml_document_t extra;
    if (!yaml_parser_load(parser, &extra)) fail_parser(parser, file, assignment);
    yaml_node_t *root = yaml_document_get_root_node(&extra);
    if (root) {
        source src = {.file = file, .assignment = assignment};
        fail(&src, root, "expected one YAML document, found another");
    }
    yaml_document_delete(&extra);
}

/* A config is a few kilobytes and four levels deep. libyaml's scanner takes
 * time quadratic in the nesting depth (100,000 '[' take minutes), so a
 * first pass over the events refuses anything deeper than MAX_DEPTH having
 * read only that far; larger files than MAX_CONFIG_BYTES are not configs. */
enum { MAX_DEPTH = 32, MAX_CONFIG_BYTES = 1 << 20 };

static void check_nesting(const char *text, size_t len, const char *file, const char *assignment) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) cr_fatal(CR_EXIT_INTERNAL, "config", "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    for (int depth = 0, done = 0; !done;) {
        yaml_event_t event;
        if (!yaml_parser_parse(&parser, &event)) fail_parser(&parser, file, assignment);
        yaml_event_type_t type = event.type;
        yaml_mark_t mark = event.start_mark;
        yaml_event_delete(&event);
        if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT) depth--;
        done = type == YAML_STREAM_END_EVENT;
        if ((type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) &&
            ++depth > MAX_DEPTH) {
            char where[CR_PATH_MAX + 64];
            if (file)
                mark_where(file, mark, where, sizeof where);
            else
                override_where(assignment, where, sizeof where);
            cr_fatal(CR_EXIT_USAGE, where, "nested deeper than %d levels: not a cresnet config",
                     MAX_DEPTH);
        }
    }
    yaml_parser_delete(&parser);
}

static char *read_config(const char *path, FILE *f, size_t *len) {
    char *text = cr_malloc(MAX_CONFIG_BYTES + 1, "config");
    *len = fread(text, 1, MAX_CONFIG_BYTES + 1, f);
    if (ferror(f)) cr_fatal(CR_EXIT_USAGE, path, "cannot read: %s", strerror(errno));
    if (*len > MAX_CONFIG_BYTES)
        cr_fatal(CR_EXIT_USAGE, path, "larger than %d bytes: not a cresnet config",
                 MAX_CONFIG_BYTES);
    return text;
}

static void apply_file(const char *path, cr_config *cfg, origins *origins) {
    FILE *f = cr_fopen(path, "rb", CR_EXIT_USAGE);
    struct stat st; /* fopen takes a directory; reading it fails unhelpfully */
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))
        cr_fatal(CR_EXIT_USAGE, path, "cannot open: %s", strerror(EISDIR));
    size_t len;
    char *text = read_config(path, f, &len);
    check_nesting(text, len, path, NULL);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) cr_fatal(CR_EXIT_INTERNAL, "config", "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    load_document(&parser, &doc, path, NULL);
    source src = {.doc = &doc, .file = path, .origins = origins};
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !is_null(root)) {
        char got[64];
        if (root->type != YAML_MAPPING_NODE)
            fail(&src, root, "expected a mapping of sections (model, data, train, ...), got %s",
                 describe(root, got, sizeof got));
        apply_mapping(&src, "", root, cfg);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(text);
    fclose(f);
}

static void apply_override(const char *assignment, cr_config *cfg, origins *origins) {
    char where[256], path[256];
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        cr_fatal(CR_EXIT_USAGE, override_where(assignment, where, sizeof where),
                 "expected key.path=value");
    snprintf(path, sizeof path, "%.*s", (int)(eq - assignment), assignment);
    /* The value is YAML too, so `[16, 32]` is a list and quotes work. */
    const char *text = eq + 1;
    check_nesting(text, strlen(text), NULL, assignment);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) cr_fatal(CR_EXIT_INTERNAL, "config", "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    load_document(&parser, &doc, NULL, assignment);
    source src = {.doc = &doc, .assignment = assignment, .origins = origins};
    yaml_node_t *value = yaml_document_get_root_node(&doc);
    yaml_node_t empty = {.type = YAML_SCALAR_NODE};
    empty.data.scalar.value = (yaml_char_t *)"";
    empty.data.scalar.style = YAML_PLAIN_SCALAR_STYLE;
    apply_node(&src, path, NULL, value ? value : &empty, cfg); /* "key=" is null */
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
}

void cr_config_override(cr_config *cfg, const char *assignment) {
    apply_override(assignment, cfg, NULL);
}

/* ------------------------------------------------------------------------
 * Cross-key checks */

/* WHERE for a check about `path`: the line that set it, the override that
 * set it, or (a default) the fallback. */
static const char *where_of(const origins *o, const char *path, const char *fallback, char *buf,
                            size_t len) {
    size_t i = (size_t)(find_key(path) - keys);
    CR_ASSERT(find_key(path) != NULL);
    if (o && o->from[i] == FROM_FILE) return mark_where(o->file, o->mark[i], buf, len);
    if (o && o->from[i] == FROM_OVERRIDE) return override_where(o->assignment[i], buf, len);
    return fallback;
}

/* How late a key's value came: a default, the file, then the overrides in
 * their order (the file's lines are not ranked among themselves). */
static int lateness(const origins *o, const char *path) {
    size_t i = (size_t)(find_key(path) - keys);
    return o->from[i] == FROM_OVERRIDE ? FROM_OVERRIDE + o->set_order[i] : (int)o->from[i];
}

/* For a check between two keys, the one set last: the user's change that
 * made the pair fail. `checked` (the key the message names) on a tie. */
static const char *pair_key(const origins *o, const char *checked, const char *other) {
    return o && lateness(o, other) > lateness(o, checked) ? other : checked;
}

static void validate(const cr_config *cfg, const origins *o, const char *fallback) {
    char where[CR_PATH_MAX + 64], err[256];
    const char *model_key = pair_key(o, pair_key(o, "model.blocks", "model.widths"), "model.arch");
#define WHERE(key) where_of(o, key, fallback, where, sizeof where)
#define WHERE2(checked, other) WHERE(pair_key(o, checked, other))
#define WHERE3(checked, other, third) WHERE(pair_key(o, pair_key(o, checked, other), third))
    if (strcmp(cfg->model.arch, "custom") != 0) {
        const char *list = cfg->model.num_widths ? "model.widths" : "model.blocks";
        if (cfg->model.num_widths || cfg->model.num_blocks)
            cr_fatal(CR_EXIT_USAGE, WHERE2(list, "model.arch"),
                     "%s: only used with model.arch custom (arch is %s)", list, cfg->model.arch);
    } else {
        cr_model_desc desc;
        if (cr_model_describe(cfg->model.arch, cfg->model.widths, cfg->model.num_widths,
                              cfg->model.blocks, cfg->model.num_blocks, &desc, err, sizeof err))
            cr_fatal(CR_EXIT_USAGE, WHERE(model_key), "model: %s", err);
    }

    const char *precision = precision_names[cfg->train.precision];
    if (cfg->device.type == CR_DEVICE_CPU && cfg->train.precision == CR_PRECISION_TF32)
        cr_fatal(CR_EXIT_USAGE, WHERE2("train.precision", "device.type"),
                 "train.precision: %s needs device.type cuda (device.type is cpu)", precision);
    if (cfg->device.type == CR_DEVICE_CPU && cfg->dist.backend == CR_DIST_NCCL)
        cr_fatal(CR_EXIT_USAGE, WHERE2("dist.backend", "device.type"),
                 "dist.backend: nccl needs device.type cuda (device.type is cpu)");

    /* PyTorch's SGD refuses Nesterov without momentum. */
    if (cfg->optimizer.nesterov && cfg->optimizer.momentum <= 0)
        cr_fatal(CR_EXIT_USAGE, WHERE2("optimizer.nesterov", "optimizer.momentum"),
                 "optimizer.nesterov: needs optimizer.momentum > 0");
    if (cfg->schedule.name == CR_SCHEDULE_CYCLIC && cfg->schedule.max_lr < cfg->schedule.base_lr)
        cr_fatal(CR_EXIT_USAGE, WHERE3("schedule.max_lr", "schedule.base_lr", "schedule.name"),
                 "schedule.max_lr: must be >= schedule.base_lr (%.9g), got %.9g",
                 cfg->schedule.base_lr, cfg->schedule.max_lr);
    if (cfg->schedule.cycle_momentum && cfg->schedule.base_momentum > cfg->schedule.max_momentum)
        cr_fatal(
            CR_EXIT_USAGE,
            WHERE3("schedule.base_momentum", "schedule.max_momentum", "schedule.cycle_momentum"),
            "schedule.base_momentum: must be <= schedule.max_momentum (%.9g), got %.9g",
            cfg->schedule.max_momentum, cfg->schedule.base_momentum);
    if (!cfg->log.dir[0]) cr_fatal(CR_EXIT_USAGE, WHERE("log.dir"), "log.dir: must not be empty");
#undef WHERE3
#undef WHERE2
#undef WHERE
}

void cr_config_validate(const cr_config *cfg, const char *where) { validate(cfg, NULL, where); }

void cr_config_load(const char *path, const char *const *overrides, int num_overrides,
                    cr_config *cfg) {
    origins o = {.file = path};
    cr_config_defaults(cfg);
    if (path) apply_file(path, cfg, &o);
    for (int i = 0; i < num_overrides; i++) apply_override(overrides[i], cfg, &o);
    validate(cfg, &o, path ? path : "config");
}

/* ------------------------------------------------------------------------
 * The written form */

/* The shortest %g that reads back as the same float, so the file shows
 * 0.0005 rather than 0.000500000024 and still reloads bit for bit. */
static void write_float(FILE *out, float v) {
    char buf[32];
    float back;
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)v);
        if (parse_float(buf, &back) && memcmp(&back, &v, sizeof v) == 0) break;
    }
    fputs(buf, out);
}

/* Always double-quoted, escaping what YAML requires, so any path survives. */
static void write_quoted(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void write_value(FILE *out, const key_spec *k, const cr_config *cfg) {
    const void *src = cfield(cfg, k->offset);
    switch (k->type) {
    case KEY_INT: fprintf(out, "%d", *(const int *)src); break;
    case KEY_U64: fprintf(out, "%" PRIu64, *(const uint64_t *)src); break;
    case KEY_FLOAT: write_float(out, *(const float *)src); break;
    case KEY_BOOL: fputs(*(const int *)src ? "true" : "false", out); break;
    case KEY_STRING: write_quoted(out, src); break;
    case KEY_NAME: fputs(src, out); break;
    case KEY_ENUM: fputs(k->names[*(const int *)src], out); break;
    case KEY_INT_LIST: {
        int count = *(const int *)cfield(cfg, k->count_offset);
        fputc('[', out);
        for (int i = 0; i < count; i++) fprintf(out, "%s%d", i ? ", " : "", ((const int *)src)[i]);
        fputc(']', out);
        break;
    }
    case KEY_FLOAT3:
        fputc('[', out);
        for (int i = 0; i < 3; i++) {
            if (i) fputs(", ", out);
            write_float(out, ((const float *)src)[i]);
        }
        fputc(']', out);
        break;
    case KEY_RESUME: {
        int mode = *(const int *)src;
        if (mode == CR_RESUME_AUTO)
            fputs("auto", out);
        else if (mode == CR_RESUME_NONE)
            fputs("none", out);
        else
            write_quoted(out, cfield(cfg, k->count_offset));
        break;
    }
    }
}

/* Length of the sections two paths share, up to and including the last
 * common dot: "data.augment.hflip" and "data.mean" share "data.". */
static size_t shared_sections(const char *a, const char *b) {
    size_t shared = 0;
    for (size_t i = 0; a[i] && a[i] == b[i]; i++)
        if (a[i] == '.') shared = i + 1;
    return shared;
}

void cr_config_write(const cr_config *cfg, FILE *out) {
    const char *previous = "";
    for (size_t i = 0; i < NUM_KEYS; i++) {
        const char *path = keys[i].path, *p = path + shared_sections(previous, path), *dot;
        int depth = 0;
        for (const char *q = path; q < p; q++) depth += *q == '.';
        /* open the sections this key enters */
        for (; (dot = strchr(p, '.')); p = dot + 1, depth++)
            fprintf(out, "%*s%.*s:\n", 2 * depth, "", (int)(dot - p), p);
        fprintf(out, "%*s%s: ", 2 * depth, "", p);
        write_value(out, &keys[i], cfg);
        fputc('\n', out);
        previous = path;
    }
}

/* Keys that say where a run reads and writes and how it is watched, not
 * what it computes: a resumed run may change them (a requeued job's new
 * log.dir, resume: auto) and still be the same run. */
static int is_run_only(const char *path) {
    static const char *const prefixes[] = {
        "log.",         "checkpoint.",   "data.dir",        "data.num_threads", "data.on_device",
        "device.debug", "device.graphs", "device.autotune", "dist.timeout_s"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(path, prefixes[i], strlen(prefixes[i])) == 0) return 1;
    return 0;
}

uint64_t cr_config_digest(const cr_config *cfg) {
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) cr_fatal(CR_EXIT_INTERNAL, "config", "open_memstream: %s", strerror(errno));
    for (size_t i = 0; i < NUM_KEYS; i++) {
        if (is_run_only(keys[i].path)) continue;
        fprintf(mem, "%s=", keys[i].path);
        write_value(mem, &keys[i], cfg);
        fputc('\n', mem);
    }
    fclose(mem);
    uint64_t hash = 0xcbf29ce484222325ull; /* FNV-1a 64 */
    for (size_t i = 0; i < len; i++) {
        hash ^= (unsigned char)text[i];
        hash *= 0x100000001b3ull;
    }
    free(text);
    return hash;
}

cr_model_desc cr_config_model(const cr_config *cfg) {
    cr_model_desc desc;
    char err[256];
    if (cr_model_describe(cfg->model.arch, cfg->model.widths, cfg->model.num_widths,
                          cfg->model.blocks, cfg->model.num_blocks, &desc, err, sizeof err))
        cr_fatal(CR_EXIT_USAGE, "config", "model: %s", err);
    return desc;
}
