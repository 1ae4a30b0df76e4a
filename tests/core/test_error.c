/* The fatal-error path of src/core/error.c, in child processes:
 *  1. one failure runs the abort hook once, with its context, then the
 *     process exits with the error's code (the hook returning);
 *  2. several threads failing at once run the hook once: the first ends
 *     the process through it, the others wait (none exits under it with
 *     its own code);
 *  3. an error inside the hook does not run the hook again;
 *  4. a SIGTERM while a thread ends on an error (the launcher's, when
 *     another rank aborts) reaches another thread, whose handler finds the
 *     error reported (cr_fatal_reported) and exits with its code. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "cresnet/error.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { HOOK_EXIT = 42, THREADS = 8, RACES = 40 };

static int hook_pipe[2]; /* the hook writes a byte each time it runs */

static void write_byte(char c) {
    if (write(hook_pipe[1], &c, 1) != 1) _exit(99);
}

static void returning_hook(int code, void *context) {
    write_byte(context == &hook_pipe && code == 7 ? 'r' : '?');
}

static void ending_hook(int code, void *context) {
    (void)context;
    write_byte('e');
    /* long enough for every other thread to fail meanwhile */
    nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    _exit(code == 9 ? HOOK_EXIT : 98);
}

static void failing_hook(int code, void *context) {
    (void)code, (void)context;
    write_byte('f');
    cr_fatal(11, "test", "an error inside the hook");
}

static atomic_int in_hook;

static void slow_hook(int code, void *context) {
    (void)code, (void)context;
    write_byte('e');
    atomic_store(&in_hook, 1);
    nanosleep(&(struct timespec){.tv_sec = 2}, NULL); /* the SIGTERM lands meanwhile */
    _exit(98);
}

/* What comm_mpi.c's SIGTERM handler does. */
static void on_terminate(int sig) {
    (void)sig;
    int reported = cr_fatal_reported();
    write_byte(reported == 5 ? 's' : '?');
    _exit(reported ? reported : 6);
}

static void *fail_slowly(void *arg) {
    (void)arg;
    cr_fatal(5, "test", "failure on a thread");
}

static void sigterm_during_error(void) {
    signal(SIGTERM, on_terminate);
    cr_set_abort_hook(slow_hook, NULL);
    pthread_t t;
    pthread_create(&t, NULL, fail_slowly, NULL);
    while (!atomic_load(&in_hook)) nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    kill(getpid(), SIGTERM); /* to the process: the failing thread has it blocked */
    pthread_join(t, NULL);
}

static pthread_barrier_t start;

static void *fail_at_once(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    cr_fatal(9, "test", "thread failure");
}

/* Runs body in a child; returns its exit status and what its hooks wrote. */
static int in_child(void (*body)(void), char *written, size_t size) {
    CHECK(pipe(hook_pipe) == 0, "pipe");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(hook_pipe[0]);
        freopen("/dev/null", "w", stderr);
        body();
        _exit(97);
    }
    close(hook_pipe[1]);
    size_t n = 0;
    ssize_t got;
    while (n + 1 < size && (got = read(hook_pipe[0], written + n, size - 1 - n)) > 0)
        n += (size_t)got;
    written[n] = '\0';
    close(hook_pipe[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void one_failure(void) {
    cr_set_abort_hook(returning_hook, &hook_pipe);
    cr_fatal(7, "test", "one failure");
}

static void threads_failing(void) {
    cr_set_abort_hook(ending_hook, NULL);
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, fail_at_once, NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
}

static void error_in_hook(void) {
    cr_set_abort_hook(failing_hook, NULL);
    cr_fatal(10, "test", "first");
}

int main(void) {
    char written[64];
    int code = in_child(one_failure, written, sizeof written);
    CHECK(code == 7 && strcmp(written, "r") == 0, "one failure: exit %d, hook wrote '%s'", code,
          written);
    int races_ok = 0;
    for (int i = 0; i < RACES; i++) {
        code = in_child(threads_failing, written, sizeof written);
        races_ok += code == HOOK_EXIT && strcmp(written, "e") == 0;
        if (code != HOOK_EXIT || strcmp(written, "e") != 0)
            printf("race %d: exit %d, hook wrote '%s'\n", i, code, written);
    }
    CHECK(races_ok == RACES, "%d threads failing at once: the hook ended %d of %d runs alone",
          THREADS, races_ok, RACES);
    code = in_child(error_in_hook, written, sizeof written);
    CHECK(code == 11 && strcmp(written, "f") == 0, "error in the hook: exit %d, hook wrote '%s'",
          code, written);
    code = in_child(sigterm_during_error, written, sizeof written);
    CHECK(code == 5 && strcmp(written, "es") == 0,
          "SIGTERM during an error: exit %d, hook and handler wrote '%s'", code, written);
    return check_finish();
}
