/* The phase clock: per-epoch sums and the Chrome trace (JSON array format:
 * complete events "ph":"X" with microsecond ts/dur, pid = rank). */
#include "phases.h"

#include "cresnet/clock.h"
#include "cresnet/error.h"

#include <errno.h>
#include <string.h>

static const char *const names[PHASE_COUNT] = {"data",      "forward", "backward", "comm wait",
                                               "optimizer", "graph",   "evaluate", "checkpoint"};

const char *phase_name(phase_id phase) { return names[phase]; }

static void check_trace_write(const phase_clock *c, int written) {
    if (written < 0)
        cr_fatal(CR_EXIT_USAGE, c->trace_path, "cannot write the timeline: %s", strerror(errno));
}

void phase_clock_init(phase_clock *c, cr_backend *be, const char *timeline, int rank) {
    memset(c, 0, sizeof *c);
    c->be = be;
    c->rank = rank;
    c->origin = cr_now_seconds();
    c->open = PHASE_COUNT;
    if (!timeline[0]) return;
    if (rank == 0)
        snprintf(c->trace_path, sizeof c->trace_path, "%s", timeline);
    else
        snprintf(c->trace_path, sizeof c->trace_path, "%s.rank%d", timeline, rank);
    c->trace = cr_fopen(c->trace_path, "w", CR_EXIT_USAGE);
    /* Metadata events name the rows in the viewer. */
    check_trace_write(c, fprintf(c->trace,
                                 "[\n{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, "
                                 "\"tid\": 0, \"args\": {\"name\": \"rank %d\"}}",
                                 rank, rank));
}

void phase_clock_close(phase_clock *c) {
    if (!c->trace) return;
    check_trace_write(c, fprintf(c->trace, "\n]\n"));
    if (fclose(c->trace) != 0)
        cr_fatal(CR_EXIT_USAGE, c->trace_path, "cannot write the timeline: %s", strerror(errno));
    c->trace = NULL;
}

void phase_clock_reset(phase_clock *c) {
    memset(c->seconds, 0, sizeof c->seconds);
    c->steps = 0;
    /* An epoch's end is a natural point to let a viewer read the file. */
    if (c->trace && fflush(c->trace) != 0)
        cr_fatal(CR_EXIT_USAGE, c->trace_path, "cannot write the timeline: %s", strerror(errno));
}

void phase_begin(phase_clock *c, phase_id phase) {
    CR_ASSERT(c->open == PHASE_COUNT);
    c->open = phase;
    if (c->be->ops->range_push) c->be->ops->range_push(c->be, names[phase]);
    c->opened_at = cr_now_seconds();
}

void phase_end(phase_clock *c) {
    CR_ASSERT(c->open < PHASE_COUNT);
    c->be->ops->synchronize(c->be);
    double end = cr_now_seconds();
    if (c->be->ops->range_pop) c->be->ops->range_pop(c->be);
    c->seconds[c->open] += end - c->opened_at;
    if (c->open == PHASE_OPTIMIZER || c->open == PHASE_GRAPH) c->steps++;
    if (c->trace)
        check_trace_write(c,
                          fprintf(c->trace,
                                  ",\n{\"name\": \"%s\", \"ph\": \"X\", \"pid\": %d, \"tid\": 0, "
                                  "\"ts\": %.1f, \"dur\": %.1f}",
                                  names[c->open], c->rank, (c->opened_at - c->origin) * 1e6,
                                  (end - c->opened_at) * 1e6));
    c->open = PHASE_COUNT;
}
