#define _POSIX_C_SOURCE 200809L /* pause */
#include "cresnet/error.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The only process-wide state outside main: a fatal error can happen in any
 * module and any thread, and it must be able to take the whole MPI job down. */
static _Atomic(cr_abort_hook) abort_hook;
static void *_Atomic abort_context;
static atomic_flag ending = ATOMIC_FLAG_INIT; /* a thread is ending the process */
static _Thread_local int ending_here;         /* ... and it is this one */
static atomic_int reported;                   /* the exit code of an error printed */

void cr_set_abort_hook(cr_abort_hook hook, void *context) {
    /* A context outlives its hook: a thread that took the hook just before
     * it was cleared still finds the context that goes with it. A new hook
     * starts afresh: the fuzz targets' hook returns to them (longjmp)
     * instead of ending the process, and they set it again for each input. */
    if (hook) {
        ending_here = 0;
        atomic_store(&reported, 0);
        atomic_flag_clear(&ending);
        atomic_store(&abort_context, context);
    }
    atomic_store(&abort_hook, hook);
}

static _Noreturn void finish(int code) {
    fflush(stdout);
    fflush(stderr);
    /* The first thread to fail ends the job through the hook (the
     * communicator's abort). Another failing meanwhile (a loader worker and
     * the main thread) waits for that rather than exit under it; an error
     * inside the hook itself exits. */
    if (!ending_here) {
        ending_here = 1;
        if (atomic_flag_test_and_set(&ending))
            for (;;) pause();
        cr_abort_hook hook = atomic_exchange(&abort_hook, NULL);
        if (hook) hook(code, atomic_load(&abort_context));
    }
    exit(code);
}

int cr_fatal_reported(void) { return atomic_load(&reported); }

void cr_fatal(int code, const char *where, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "cresnet: error: %s: ", where);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    atomic_store(&reported, code);
    finish(code);
}

void cr_fatal_at(int code, const char *file, int line, const char *where, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "cresnet: error: %s: ", where);
    vfprintf(stderr, fmt, args);
    fprintf(stderr, " (at %s:%d)\n", file, line);
    va_end(args);
    atomic_store(&reported, code);
    finish(code);
}

void *cr_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) cr_fatal(CR_EXIT_INTERNAL, what, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *cr_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        cr_fatal(CR_EXIT_INTERNAL, what, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

FILE *cr_fopen(const char *path, const char *mode, int exit_code) {
    FILE *f = fopen(path, mode);
    if (!f) cr_fatal(exit_code, path, "cannot open: %s", strerror(errno));
    return f;
}

void cr_fread_exact(void *dst, size_t bytes, FILE *f, const char *path, int exit_code) {
    size_t got = fread(dst, 1, bytes, f);
    if (got != bytes) {
        if (ferror(f)) cr_fatal(exit_code, path, "read failed: %s", strerror(errno));
        cr_fatal(exit_code, path, "truncated: expected %zu more bytes, found %zu", bytes, got);
    }
}
