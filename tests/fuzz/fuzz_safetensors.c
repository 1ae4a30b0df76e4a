/* Fuzz target: the safetensors reader and the checkpoint loader on top of it.
 *
 * Input: the file. Properties:
 *   - cr_safetensors_read returns 0, or -1 with a reason, and never exits
 *     (nor crashes, leaks, hits UB or leaves a file open);
 *   - what it accepts is consistent: every tensor's bytes lie inside the
 *     payload and match dtype x shape, names are unique and found by name;
 *   - an accepted file written back (cr_safetensors_write) reads back equal;
 *   - cr_checkpoint_load into a small custom model (widths [2], one block)
 *     returns 0 or -1 with a reason and never exits either. */
#include "fuzz_support.h"

#include "cresnet/backend.h"
#include "cresnet/error.h"
#include "cresnet/io.h"
#include "cresnet/model.h"
#include "cresnet/train.h"

#include <stdlib.h>
#include <string.h>

static cr_backend *backend;
static cr_model *model;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    cr_model_desc desc = {.num_stages = 1, .widths = {2}, .blocks = {1}};
    backend = cr_backend_cpu_create(1, CR_MATH_FP32);
    model = cr_model_create(backend, &desc, 1, 0);
    return 0;
}

/* The dtypes the reader knows (io.h), independently listed. */
static size_t dtype_bytes(const char *dtype) {
    static const struct {
        const char *name;
        size_t bytes;
    } sizes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                 {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (strcmp(dtype, sizes[i].name) == 0) return sizes[i].bytes;
    return 0;
}

/* An accepted file is what the header says it is. */
static void check_accepted(const cr_safetensors *st) {
    volatile uint8_t sink = 0;
    for (int i = 0; i < st->num_tensors; i++) {
        const cr_st_tensor *t = &st->tensors[i];
        size_t elem = dtype_bytes(t->dtype);
        if (!elem) fuzz_fail("tensor '%s' accepted with dtype '%s'", t->name, t->dtype);
        if (t->begin > t->end || t->end > st->data_size)
            fuzz_fail("tensor '%s' bytes [%zu, %zu) outside the %zu-byte payload", t->name,
                      t->begin, t->end, st->data_size);
        if (cr_st_numel(t) * elem != t->end - t->begin)
            fuzz_fail("tensor '%s' has %zu elements of %zu bytes in %zu bytes", t->name,
                      cr_st_numel(t), elem, t->end - t->begin);
        if (cr_safetensors_find(st, t->name) != t)
            fuzz_fail("tensor '%s' not found by its name", t->name);
        for (size_t b = t->begin; b < t->end; b++) sink ^= st->data[b];
    }
    for (int i = 0; i < st->num_meta; i++)
        if (cr_safetensors_meta(st, st->meta[i].key) == NULL)
            fuzz_fail("metadata '%s' not found by its key", st->meta[i].key);
    (void)sink;
}

/* Written back and read again: the same tensors, bytes and metadata. */
static void check_round_trip(const cr_safetensors *st) {
    cr_st_entry *entries = calloc((size_t)st->num_tensors + 1, sizeof *entries);
    const char **meta = calloc(2 * (size_t)st->num_meta + 1, sizeof *meta);
    for (int i = 0; i < st->num_tensors; i++) {
        const cr_st_tensor *t = &st->tensors[i];
        entries[i] = (cr_st_entry){
            .name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = st->data + t->begin};
        memcpy(entries[i].shape, t->shape, sizeof t->shape);
    }
    for (int i = 0; i < st->num_meta; i++) {
        meta[2 * i] = st->meta[i].key;
        meta[2 * i + 1] = st->meta[i].value;
    }
    char path[512], err[512];
    fuzz_write_file("written.safetensors", "", 0, path, sizeof path);
    if (cr_safetensors_write(path, entries, st->num_tensors, meta, st->num_meta, err, sizeof err) ==
        0) {
        cr_safetensors back;
        if (cr_safetensors_read(path, &back, err, sizeof err) != 0)
            fuzz_fail("a written file does not read back: %s", err);
        if (back.num_tensors != st->num_tensors || back.num_meta != st->num_meta)
            fuzz_fail("read back %d tensors and %d metadata, wrote %d and %d", back.num_tensors,
                      back.num_meta, st->num_tensors, st->num_meta);
        for (int i = 0; i < st->num_tensors; i++) {
            const cr_st_tensor *a = &st->tensors[i], *b = cr_safetensors_find(&back, a->name);
            if (!b || strcmp(a->dtype, b->dtype) != 0 || a->ndim != b->ndim ||
                memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) != 0 ||
                a->end - a->begin != b->end - b->begin ||
                memcmp(st->data + a->begin, back.data + b->begin, a->end - a->begin) != 0)
                fuzz_fail("tensor '%s' reads back different", a->name);
        }
        for (int i = 0; i < st->num_meta; i++) {
            const char *v = cr_safetensors_meta(&back, st->meta[i].key);
            if (!v || strcmp(v, st->meta[i].value) != 0)
                fuzz_fail("metadata '%s' reads back different", st->meta[i].key);
        }
        cr_safetensors_free(&back);
    }
    free(entries);
    free(meta);
}

typedef struct {
    const char *path;
} read_call;

static void read_and_check(void *context) {
    read_call *c = context;
    cr_safetensors st;
    char err[512] = "";
    if (cr_safetensors_read(c->path, &st, err, sizeof err) != 0) {
        if (!err[0]) fuzz_fail("refused without a reason");
        return;
    }
    check_accepted(&st);
    check_round_trip(&st);
    cr_safetensors_free(&st);

    cr_checkpoint_meta meta;
    err[0] = '\0';
    if (cr_checkpoint_load(c->path, model, backend, &meta, err, sizeof err) != 0 && !err[0])
        fuzz_fail("checkpoint refused without a reason");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    read_call call = {fuzz_write_file("input.safetensors", data, size, path, sizeof path)};
    int code = fuzz_run(read_and_check, &call);
    if (code != 0) fuzz_fail("reading exited %d instead of returning", code);
    return 0;
}
