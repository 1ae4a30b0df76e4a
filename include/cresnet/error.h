/* error: one way to fail, everywhere.
 *
 * Every library call (file, MPI, CUDA, cuDNN, NCCL, oneDNN) is wrapped in a
 * check macro that, on failure, prints SPEC's one-line error
 *     cresnet: error: WHERE: WHAT (at file.c:123)
 * and exits the process with the SPEC exit code. In an MPI job the
 * communicator registers an abort hook so one failing rank takes all ranks
 * down instead of leaving them to hang.
 * Not here: recovery. Errors are fatal by design; tests of error paths run
 * the binary and check its exit code and message. */
#ifndef CRESNET_ERROR_H
#define CRESNET_ERROR_H

#include <stdio.h>

/* SPEC exit codes. */
enum {
    CR_EXIT_OK = 0,
    CR_EXIT_USAGE = 2,      /* usage or config error */
    CR_EXIT_DATA = 3,       /* data error */
    CR_EXIT_CHECKPOINT = 4, /* checkpoint error */
    CR_EXIT_NUMERIC = 5,    /* NaN or Inf */
    CR_EXIT_COMM = 6,       /* communication failure or a lost rank */
    CR_EXIT_PREEMPTED = 75, /* stopped on SIGUSR1/SIGTERM after a checkpoint: requeue
                               (EX_TEMPFAIL) */
    CR_EXIT_INTERNAL = 70,  /* a bug or a failing library call */
};

/* Called once before exiting on an error (the MPI communicator sets one to
 * abort the whole job). Process-wide by necessity: a fatal error anywhere
 * must reach it. Of threads failing at once, the first runs the hook and
 * the others wait for it to end the process. */
typedef void (*cr_abort_hook)(int exit_code, void *context);
void cr_set_abort_hook(cr_abort_hook hook, void *context);

/* Prints `cresnet: error: WHERE: WHAT` and exits with `code`. */
_Noreturn void cr_fatal(int code, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The exit code of the error this process has printed and is ending
 * with, 0 while there is none; while another thread is writing its error
 * line, waits (2 s at most) for it to finish. Async-signal-safe: a signal
 * handler that would report why the process ends says nothing more then.
 * The thread that reports an error has SIGTERM blocked from then on. */
int cr_fatal_reported(void);

/* Like cr_fatal, with the source location appended for library failures. */
_Noreturn void cr_fatal_at(int code, const char *file, int line, const char *where, const char *fmt,
                           ...) __attribute__((format(printf, 5, 6)));

#define CR_FAIL(code, where, ...) cr_fatal_at((code), __FILE__, __LINE__, (where), __VA_ARGS__)

/* Internal invariants: a violated one is a bug, reported with its location. */
#define CR_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) CR_FAIL(CR_EXIT_INTERNAL, "internal", "assertion `%s`", #cond);               \
    } while (0)

/* Allocation that never returns NULL. */
void *cr_malloc(size_t bytes, const char *what);
void *cr_calloc(size_t count, size_t size, const char *what);

/* File calls: a failing fopen/fread reports the path and strerror. */
FILE *cr_fopen(const char *path, const char *mode, int exit_code);
void cr_fread_exact(void *dst, size_t bytes, FILE *f, const char *path, int exit_code);

#endif
