/* Checkpoints: the model and optimizer state as a PyTorch-loadable
 * safetensors file, with a checksum so a damaged file is refused. */
#define _POSIX_C_SOURCE 200809L /* fsync via io, opendir */
#include "cresnet/train.h"

#include "cresnet/error.h"
#include "cresnet/io.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a, 64 bits: cheap, and any flipped or truncated byte changes it. */
static uint64_t fnv1a64(const uint8_t *data, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ data[i]) * 0x100000001b3ull;
    return h;
}

typedef struct {
    float *params, *buffers, *momentum; /* host copies, PyTorch layouts */
    int64_t *batches_tracked;           /* one per BatchNorm layer */
} host_state;

static host_state host_state_alloc(const cr_model_layout *l) {
    host_state hs;
    hs.params = cr_malloc(l->param_count * sizeof(float), "checkpoint");
    hs.buffers = cr_malloc(l->buffer_count * sizeof(float), "checkpoint");
    hs.momentum = cr_malloc(l->param_count * sizeof(float), "checkpoint");
    hs.batches_tracked = cr_malloc((size_t)l->num_buffers * sizeof(int64_t), "checkpoint");
    return hs;
}

static void host_state_free(host_state *hs) {
    free(hs->params), free(hs->buffers), free(hs->momentum), free(hs->batches_tracked);
}

/* Converts a whole flat buffer between our layouts and PyTorch's. */
static void flat_to_torch(const cr_tensor_info *tensors, int n, const float *ours, float *torch) {
    for (int i = 0; i < n; i++)
        cr_tensor_to_torch(&tensors[i], ours + tensors[i].offset, torch + tensors[i].offset);
}

static cr_st_entry entry(const char *name, const char *dtype, const cr_tensor_info *t,
                         const void *data) {
    cr_st_entry e = {.name = name, .dtype = dtype, .ndim = t ? t->ndim : 0, .data = data};
    for (int d = 0; t && d < t->ndim; d++) e.shape[d] = t->shape[d];
    return e;
}

/* "layer1.0.bn1.running_mean" -> "layer1.0.bn1.num_batches_tracked" */
static void bn_counter_name(const cr_tensor_info *running_mean, char *out, size_t len) {
    size_t stem = strlen(running_mean->name) - strlen("running_mean");
    snprintf(out, len, "%.*snum_batches_tracked", (int)stem, running_mean->name);
}

void cr_checkpoint_save(const char *path, cr_model *m, cr_backend *be,
                        const cr_checkpoint_meta *meta) {
    const cr_model_layout *l = cr_model_get_layout(m);
    host_state ours = host_state_alloc(l), torch = host_state_alloc(l);
    be->ops->copy_to_host(be, ours.params, cr_model_params(m), l->param_count * sizeof(float));
    be->ops->copy_to_host(be, ours.buffers, cr_model_buffers(m), l->buffer_count * sizeof(float));
    be->ops->copy_to_host(be, ours.momentum, cr_model_momentum(m), l->param_count * sizeof(float));
    flat_to_torch(l->params, l->num_params, ours.params, torch.params);
    flat_to_torch(l->params, l->num_params, ours.momentum, torch.momentum);
    memcpy(torch.buffers, ours.buffers, l->buffer_count * sizeof(float));

    int capacity = 2 * l->num_params + 2 * l->num_buffers, n = 0;
    cr_st_entry *entries = cr_calloc((size_t)capacity, sizeof *entries, "checkpoint");
    char(*names)[128] = cr_calloc((size_t)capacity, sizeof *names, "checkpoint");
    for (int i = 0; i < l->num_params; i++)
        entries[n++] =
            entry(l->params[i].name, "F32", &l->params[i], torch.params + l->params[i].offset);
    for (int i = 0; i < l->num_buffers; i++) {
        const cr_tensor_info *t = &l->buffers[i];
        entries[n++] = entry(t->name, "F32", t, torch.buffers + t->offset);
        if (t->kind != CR_TENSOR_BN_RUNNING_MEAN) continue;
        torch.batches_tracked[i] = cr_model_batches_tracked(m);
        bn_counter_name(t, names[n], sizeof names[n]);
        entries[n] = entry(names[n], "I64", NULL, &torch.batches_tracked[i]);
        n++;
    }
    for (int i = 0; i < l->num_params; i++) {
        snprintf(names[n], sizeof names[n], "optimizer.%s.momentum_buffer", l->params[i].name);
        entries[n] = entry(names[n], "F32", &l->params[i], torch.momentum + l->params[i].offset);
        n++;
    }

    /* The payload is the tensors back to back in entry order: checksum it
     * the same way the reader will see it. */
    uint64_t checksum = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        size_t bytes = strcmp(entries[i].dtype, "I64") == 0 ? 8 : 4;
        for (int d = 0; d < entries[i].ndim; d++) bytes *= (size_t)entries[i].shape[d];
        const uint8_t *p = entries[i].data;
        for (size_t k = 0; k < bytes; k++) checksum = (checksum ^ p[k]) * 0x100000001b3ull;
    }
    char values[6][32];
    snprintf(values[0], 32, "%d", meta->epoch);
    snprintf(values[1], 32, "%ld", meta->step);
    snprintf(values[2], 32, "%" PRIu64, meta->seed);
    snprintf(values[3], 32, "%016" PRIx64, meta->config_digest);
    snprintf(values[4], 32, "%d", meta->world_size);
    snprintf(values[5], 32, "%016" PRIx64, checksum);
    const char *kv[] = {"format",
                        "cresnet-checkpoint-1",
                        "epoch",
                        values[0],
                        "step",
                        values[1],
                        "seed",
                        values[2],
                        "config_digest",
                        values[3],
                        "world_size",
                        values[4],
                        "payload_fnv1a64",
                        values[5]};
    char err[512];
    if (cr_safetensors_write(path, entries, n, kv, 7, err, sizeof err) != 0)
        cr_fatal(CR_EXIT_CHECKPOINT, path, "cannot write checkpoint: %s", err);
    free(entries), free(names);
    host_state_free(&ours), host_state_free(&torch);
}

/* "[16, 3, 3, 3]" */
static void format_shape(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < len) snprintf(buf + used, len - used, "]");
}

/* The F32 tensor `name` with exactly t's shape, or NULL with err set. */
static const float *find_tensor(const cr_safetensors *st, const char *name, const cr_tensor_info *t,
                                char *err, size_t err_len) {
    const cr_st_tensor *found = cr_safetensors_find(st, name);
    if (!found) {
        snprintf(err, err_len, "tensor '%s' is missing", name);
        return NULL;
    }
    int same = strcmp(found->dtype, "F32") == 0 && found->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = found->shape[d] == t->shape[d];
    if (!same) {
        char has[96], wants[96];
        int64_t want[4] = {0};
        for (int d = 0; d < t->ndim && d < 4; d++) want[d] = t->shape[d];
        format_shape(found->ndim, found->shape, has, sizeof has);
        format_shape(t->ndim, want, wants, sizeof wants);
        snprintf(err, err_len,
                 "tensor '%s' is %s %s, this model needs F32 %s (a checkpoint of another model?)",
                 name, found->dtype, has, wants);
        return NULL;
    }
    return (const float *)(st->data + found->begin);
}

static int parse_meta(const cr_safetensors *st, cr_checkpoint_meta *meta, char *err,
                      size_t err_len) {
    const char *keys[] = {"epoch", "step", "seed", "config_digest", "world_size"};
    const char *v[5];
    for (int i = 0; i < 5; i++) {
        v[i] = cr_safetensors_meta(st, keys[i]);
        if (!v[i]) {
            snprintf(err, err_len, "metadata '%s' is missing", keys[i]);
            return -1;
        }
    }
    /* Strictly: atoi would read "abc" as 0 and resume from the wrong step. */
    const int base[] = {10, 10, 10, 16, 10};
    const unsigned long long most[] = {INT_MAX, LONG_MAX, UINT64_MAX, UINT64_MAX, INT_MAX};
    unsigned long long n[5];
    for (int i = 0; i < 5; i++) {
        char *end;
        errno = 0;
        n[i] = strtoull(v[i], &end, base[i]);
        int digit =
            base[i] == 16 ? isxdigit((unsigned char)v[i][0]) : isdigit((unsigned char)v[i][0]);
        if (!digit || *end || errno || n[i] > most[i]) {
            snprintf(err, err_len, "metadata '%s' is '%.40s', not a number in range", keys[i],
                     v[i]);
            return -1;
        }
    }
    meta->epoch = (int)n[0];
    meta->step = (long)n[1];
    meta->seed = n[2];
    meta->config_digest = n[3];
    meta->world_size = (int)n[4];
    return 0;
}

static int verify_checksum(const cr_safetensors *st, char *err, size_t err_len) {
    const char *want = cr_safetensors_meta(st, "payload_fnv1a64");
    if (!want) {
        snprintf(err, err_len, "no payload checksum: not a cresnet checkpoint");
        return -1;
    }
    char got[32];
    snprintf(got, sizeof got, "%016" PRIx64, fnv1a64(st->data, st->data_size));
    if (strcmp(got, want) != 0) {
        snprintf(err, err_len, "payload checksum %s does not match the recorded %s: damaged", got,
                 want);
        return -1;
    }
    return 0;
}

/* Everything into host buffers first: the model changes only once all of it
 * has been found and checked. */
static int gather(const cr_safetensors *st, const cr_model_layout *l, host_state *hs, char *err,
                  size_t err_len) {
    char name[160];
    for (int i = 0; i < l->num_params; i++) {
        const cr_tensor_info *t = &l->params[i];
        const float *p = find_tensor(st, t->name, t, err, err_len);
        snprintf(name, sizeof name, "optimizer.%s.momentum_buffer", t->name);
        const float *mom = p ? find_tensor(st, name, t, err, err_len) : NULL;
        if (!p || !mom) return -1;
        cr_tensor_from_torch(t, p, hs->params + t->offset);
        cr_tensor_from_torch(t, mom, hs->momentum + t->offset);
    }
    for (int i = 0; i < l->num_buffers; i++) {
        const cr_tensor_info *t = &l->buffers[i];
        const float *b = find_tensor(st, t->name, t, err, err_len);
        if (!b) return -1;
        memcpy(hs->buffers + t->offset, b, t->count * sizeof(float));
    }
    bn_counter_name(&l->buffers[0], name, sizeof name);
    const cr_st_tensor *counter = cr_safetensors_find(st, name);
    if (!counter || strcmp(counter->dtype, "I64") != 0 || cr_st_numel(counter) != 1) {
        snprintf(err, err_len, "tensor '%s' is missing or not an int64 scalar", name);
        return -1;
    }
    memcpy(hs->batches_tracked, st->data + counter->begin, sizeof(int64_t));
    return 0;
}

int cr_checkpoint_load(const char *path, cr_model *m, cr_backend *be, cr_checkpoint_meta *meta,
                       char *err, size_t err_len) {
    cr_safetensors st;
    if (cr_safetensors_read(path, &st, err, err_len) != 0) return -1;
    const cr_model_layout *l = cr_model_get_layout(m);
    host_state hs = host_state_alloc(l);
    int rc = verify_checksum(&st, err, err_len);
    if (rc == 0) rc = parse_meta(&st, meta, err, err_len);
    if (rc == 0) rc = gather(&st, l, &hs, err, err_len);
    if (rc == 0) {
        be->ops->copy_to_device(be, cr_model_params(m), hs.params, l->param_count * sizeof(float));
        be->ops->copy_to_device(be, cr_model_momentum(m), hs.momentum,
                                l->param_count * sizeof(float));
        be->ops->copy_to_device(be, cr_model_buffers(m), hs.buffers,
                                l->buffer_count * sizeof(float));
        cr_model_set_batches_tracked(m, hs.batches_tracked[0]);
    }
    host_state_free(&hs);
    cr_safetensors_free(&st);
    return rc;
}

/* Checkpoint names order runs: epoch_E (E epochs done) comes before
 * epoch_E_step_S (S steps into epoch E+1, written on preemption), which
 * comes before epoch_{E+1}. Returns -1 for other names. */
static long long checkpoint_rank(const char *name) {
    int epoch, step, used = 0;
    if (sscanf(name, "epoch_%d_step_%d.safetensors%n", &epoch, &step, &used) == 2 &&
        name[used] == '\0')
        return (long long)epoch * 1000000000LL + step;
    used = 0;
    if (sscanf(name, "epoch_%d.safetensors%n", &epoch, &used) == 1 && name[used] == '\0')
        return (long long)epoch * 1000000000LL;
    return -1;
}

int cr_checkpoint_newest(const char *dir, char *path, size_t path_len) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    long long best = -1;
    char best_name[256] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long long rank = checkpoint_rank(e->d_name);
        if (rank > best) {
            best = rank;
            snprintf(best_name, sizeof best_name, "%s", e->d_name);
        }
    }
    closedir(d);
    if (best < 0) return -1;
    snprintf(path, path_len, "%s/%s", dir, best_name);
    return 0;
}
