#define _POSIX_C_SOURCE 200809L /* pause */
#include "cresnet/error.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* cr_fatal_reported is read from signal handlers. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic_int must be lock-free");
enum { WRITING_LINE = -1 };

/* The only process-wide state outside main: a fatal error can happen in any
 * module and any thread, and it must be able to take the whole MPI job down. */
static _Atomic(cr_abort_hook) abort_hook;
static void *_Atomic abort_context;
static atomic_flag ending = ATOMIC_FLAG_INIT; /* a thread is ending the process */
static _Thread_local int ending_here;         /* ... and it is this one */
static atomic_int reported; /* 0, WRITING_LINE, then the exit code of the error printed */

/* SIG_BLOCK or SIG_UNBLOCK SIGTERM on this thread (see report). */
static void mask_sigterm(int how) {
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(how, &term, NULL);
}

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
        mask_sigterm(SIG_UNBLOCK); /* blocked by an earlier report on this thread */
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

int cr_fatal_reported(void) {
    /* Another thread is writing its line (never this one: that thread has
     * SIGTERM blocked). A bounded wait: a stuck stderr must not hang us. */
    for (int waited_ms = 0; atomic_load(&reported) == WRITING_LINE && waited_ms < 2000;
         waited_ms += 10)
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    int code = atomic_load(&reported);
    return code == WRITING_LINE ? 0 : code;
}

/* buf[used..] += the formatted text, cut to fit in cap bytes with its NUL. */
static size_t append_v(char *buf, size_t used, size_t cap, const char *fmt, va_list args) {
    int n = vsnprintf(buf + used, cap - used, fmt, args);
    return n < 0 ? used : used + (size_t)n < cap ? used + (size_t)n : cap - 1;
}

static size_t append(char *buf, size_t used, size_t cap, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    used = append_v(buf, used, cap, fmt, args);
    va_end(args);
    return used;
}

/* The error line in one write(), so that lines of threads (and of ranks
 * sharing a terminal) do not interleave; PIPE_BUF bytes at most, which a
 * pipe takes whole. SIGTERM stays blocked on this thread from here on: the
 * launcher's SIGTERM, sent when another rank aborts on the same error, is
 * taken by another thread, which finds the line written
 * (cr_fatal_reported) and adds none of its own. Of threads reporting at
 * once, the first one's code is the one reported. */
static void report(int code, const char *where, const char *location, const char *fmt,
                   va_list args) {
    mask_sigterm(SIG_BLOCK);
    int none = 0;
    int first = atomic_compare_exchange_strong(&reported, &none, WRITING_LINE);
    char line[4096];
    /* A message cut to fit keeps its source location. */
    size_t cap = sizeof line - 1 - strlen(location); /* and room for the newline */
    size_t n = append(line, 0, cap, "cresnet: error: %s: ", where);
    n = append_v(line, n, cap, fmt, args);
    n = append(line, n, sizeof line - 1, "%s", location);
    line[n++] = '\n';
    for (size_t done = 0; done < n;) {
        ssize_t w = write(STDERR_FILENO, line + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    if (first) atomic_store(&reported, code);
}

void cr_fatal(int code, const char *where, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    report(code, where, "", fmt, args);
    va_end(args);
    finish(code);
}

void cr_fatal_at(int code, const char *file, int line, const char *where, const char *fmt, ...) {
    char location[512];
    snprintf(location, sizeof location, " (at %s:%d)", file, line);
    va_list args;
    va_start(args, fmt);
    report(code, where, location, fmt, args);
    va_end(args);
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
