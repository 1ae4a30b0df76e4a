/* device.debug's per-layer time table (src/model/debug.c) on the CPU
 * backend: time is charged to the layer whose probe ends it, two probes of
 * one layer in one pass are one call, and each table holds only the passes
 * since the previous one. Sleeps of 200 ms against bounds of 50 ms keep a
 * loaded machine from failing it. */
#define _POSIX_C_SOURCE 200809L /* nanosleep, open_memstream */
#include "check.h"
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SLOW_MS = 200, QUICK_BOUND_MS = 50 };

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

/* The table model_debug_print writes, as one string (caller frees). */
static char *printed_table(model_debug *d) {
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) {
        perror("open_memstream");
        exit(1);
    }
    model_debug_print(d, mem);
    fclose(mem);
    return text;
}

/* The forward milliseconds of `layer` in a table, or -1 without its row;
 * *rows: how many rows name it. */
static double forward_ms(const char *table, const char *layer, int *rows) {
    double ms = -1;
    *rows = 0;
    for (const char *line = table; line && *line;) {
        const char *end = strchr(line, '\n');
        char text[256], name[64]; /* one line: sscanf would skip past its end */
        snprintf(text, sizeof text, "%.*s", end ? (int)(end - line) : (int)strlen(line), line);
        double forward, backward;
        if (sscanf(text, " %63s %lf %lf", name, &forward, &backward) == 3 &&
            strcmp(name, layer) == 0) {
            ms = forward;
            (*rows)++;
        }
        line = end ? end + 1 : NULL;
    }
    return ms;
}

static void check_row(const char *table, const char *layer, double low, double high,
                      const char *when) {
    int rows;
    double ms = forward_ms(table, layer, &rows);
    CHECK(rows == 1, "%s: %d rows name %s in\n%s", when, rows, layer, table);
    CHECK(ms >= low && ms <= high, "%s: %s took %.3f ms, expected %g to %g, in\n%s", when, layer,
          ms, low, high, table);
}

int main(void) {
    cr_backend *be = cr_backend_cpu_create(1, CR_MATH_FP32);
    model_debug *d = model_debug_create(be);
    float finite[4] = {1, 2, 3, 4};

    /* Step 1: the time before "slow"'s probe is its; "quick" follows at once.
     * "slow" probes twice (two gradients, say): one call, not two. */
    model_debug_begin(d, 0, 1);
    sleep_ms(SLOW_MS);
    model_debug_probe(d, "slow", "output", finite, 4, 4);
    model_debug_probe(d, "slow", "input gradient", finite, 4, 4);
    model_debug_probe(d, "quick", "output", finite, 4, 4);
    char *first = printed_table(d);
    check_row(first, "slow", 0.9 * SLOW_MS, 100.0 * SLOW_MS, "first table");
    check_row(first, "quick", 0, QUICK_BOUND_MS, "first table");

    /* Step 2, nothing slow: its table must not average in step 1. */
    model_debug_begin(d, 0, 2);
    model_debug_probe(d, "slow", "output", finite, 4, 4);
    model_debug_probe(d, "quick", "output", finite, 4, 4);
    char *second = printed_table(d);
    check_row(second, "slow", 0, QUICK_BOUND_MS, "second table");
    check_row(second, "quick", 0, QUICK_BOUND_MS, "second table");

    free(first);
    free(second);
    model_debug_free(d);
    be->ops->destroy(be);
    return check_finish();
}
