/* device.debug: a synchronous, checked training step, layer by layer. Slow
 * on purpose (a device wait and a copy to the host after every layer): it
 * is for finding where a NaN starts and where the time goes, not for
 * training. */
#include "model_internal.h"

#include "cresnet/clock.h"
#include "cresnet/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_LAYERS = 512 };

typedef struct {
    char name[48];
    double seconds[2]; /* forward, backward */
    long calls[2];     /* passes that ran the layer */
    long last_pass[2];
} layer_time;

struct model_debug {
    cr_backend *be;
    int backward;
    long step, pass; /* pass: counts model_debug_begin calls */
    double mark;     /* when the previous probe (or the pass) ended */
    float *host;
    size_t host_count;
    int num_layers;
    layer_time layers[MAX_LAYERS];
};

model_debug *model_debug_create(cr_backend *be) {
    model_debug *d = cr_calloc(1, sizeof *d, "debug");
    d->be = be;
    return d;
}

void model_debug_free(model_debug *d) {
    if (!d) return;
    free(d->host);
    free(d);
}

void model_debug_begin(model_debug *d, int backward, long step) {
    d->be->ops->synchronize(d->be);
    d->backward = backward;
    d->step = step;
    d->pass++;
    d->mark = cr_now_seconds();
}

/* Layers appear in the same order every step: a short linear search. */
static layer_time *layer_named(model_debug *d, const char *name) {
    for (int i = 0; i < d->num_layers; i++)
        if (strcmp(d->layers[i].name, name) == 0) return &d->layers[i];
    CR_ASSERT(d->num_layers < MAX_LAYERS);
    /* A slot may hold a row of an earlier table: its times must not leak
     * into this one (each epoch's table would average in epoch 1's start-up). */
    layer_time *t = &d->layers[d->num_layers++];
    *t = (layer_time){0};
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

/* bf16 values copied to the start of host[] become floats, last first so
 * that none is overwritten before it is read (read as bytes: no float
 * object is read through a bf16 pointer). */
static void widen_bf16(float *host, size_t count) {
    const unsigned char *bytes = (const unsigned char *)host;
    for (size_t i = count; i-- > 0;) {
        cr_bf16 half;
        memcpy(&half, bytes + i * sizeof half, sizeof half);
        host[i] = cr_bf16_to_float(half);
    }
}

static void check_finite(model_debug *d, const char *layer, const char *what, const void *data,
                         size_t count, int value_bytes) {
    if (count > d->host_count) {
        free(d->host);
        d->host = cr_malloc(count * sizeof(float), "debug");
        d->host_count = count;
    }
    d->be->ops->copy_to_host(d->be, d->host, data, count * (size_t)value_bytes);
    if (value_bytes == 2) widen_bf16(d->host, count);
    for (size_t i = 0; i < count; i++)
        if (!isfinite(d->host[i]))
            cr_fatal(CR_EXIT_NUMERIC, "device.debug",
                     "step %ld, %s pass: %s %s has %s (element %zu of %zu); every layer before "
                     "it was finite",
                     d->step, d->backward ? "backward" : "forward", layer, what,
                     isnan(d->host[i]) ? "NaN" : "Inf", i, count);
}

void model_debug_probe(model_debug *d, const char *layer, const char *what, const void *data,
                       size_t count, int value_bytes) {
    d->be->ops->synchronize(d->be);
    layer_time *t = layer_named(d, layer);
    t->seconds[d->backward] += cr_now_seconds() - d->mark;
    /* Several probes of one layer in one pass (a gradient for the weights,
     * one for the input) are one call. */
    if (t->last_pass[d->backward] != d->pass) t->calls[d->backward]++;
    t->last_pass[d->backward] = d->pass;
    check_finite(d, layer, what, data, count, value_bytes);
    d->mark = cr_now_seconds(); /* the check's own time is nobody's */
}

void model_debug_print(model_debug *d, FILE *out) {
    double total[2] = {0, 0};
    for (int i = 0; i < d->num_layers; i++)
        for (int k = 0; k < 2; k++) total[k] += d->layers[i].seconds[k];
    fprintf(out, "  device.debug: time per layer and step (ms), forward / backward\n");
    for (int i = 0; i < d->num_layers; i++) {
        layer_time *t = &d->layers[i];
        double ms[2];
        for (int k = 0; k < 2; k++) ms[k] = t->calls[k] ? 1e3 * t->seconds[k] / t->calls[k] : 0;
        fprintf(out, "  %-22s %9.3f %9.3f  (%4.1f%% of the step)\n", t->name, ms[0], ms[1],
                100.0 * (t->seconds[0] + t->seconds[1]) / (total[0] + total[1] + 1e-30));
    }
    fflush(out);
    d->num_layers = 0;
}
