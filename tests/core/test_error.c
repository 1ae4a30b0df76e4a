/* The fatal-error path of src/core/error.c, in child processes:
 *  1. one failure runs the abort hook once, with its context, then the
 *     process exits with the error's code (the hook returning);
 *  2. several threads failing at once run the hook once: the first ends
 *     the process through it, the others wait (none exits under it with
 *     its own code);
 *  3. an error inside the hook does not run the hook again;
 *  4. a SIGTERM while a thread is still writing its error line (the
 *     launcher's, when another rank aborts) reaches another thread, whose
 *     handler waits for the line (cr_fatal_reported) and exits with the
 *     error's code instead of adding a line of its own. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "cresnet/error.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
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

static void block_sigterm(void) {
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
}

static void slow_hook(int code, void *context) {
    (void)code, (void)context;
    write_byte('e');
    nanosleep(&(struct timespec){.tv_sec = 3}, NULL); /* the handler ends the process first */
    _exit(98);
}

/* What comm_mpi.c's SIGTERM handler does. */
static void on_terminate(int sig) {
    (void)sig;
    int reported = cr_fatal_reported();
    write_byte(reported == 5 ? 's' : '?');
    _exit(reported ? reported : 6);
}

static void *fail_on_thread(void *arg) {
    (void)arg;
    cr_fatal(5, "test", "failure on a thread");
}

static int stderr_read_end;

static void *drain_stderr_later(void *arg) {
    (void)arg;
    block_sigterm(); /* the SIGTERM is the main thread's to take */
    nanosleep(&(struct timespec){.tv_nsec = 800 * 1000 * 1000}, NULL);
    char buf[4096];
    while (read(stderr_read_end, buf, sizeof buf) > 0) continue;
    return NULL;
}

/* stderr is a full pipe, so the failing thread is still writing its line
 * when the SIGTERM comes; the handler waits for the line, which goes out
 * once another thread drains the pipe. */
static void sigterm_while_writing(void) {
    int fds[2];
    if (pipe(fds) != 0) _exit(96);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    char fill[4096] = {0};
    while (write(fds[1], fill, sizeof fill) > 0) continue;
    fcntl(fds[1], F_SETFL, 0);
    dup2(fds[1], STDERR_FILENO);
    stderr_read_end = fds[0];
    signal(SIGTERM, on_terminate);
    cr_set_abort_hook(slow_hook, NULL);
    pthread_t failing, drainer;
    pthread_create(&drainer, NULL, drain_stderr_later, NULL);
    pthread_create(&failing, NULL, fail_on_thread, NULL);
    /* long enough for the failing thread to be inside its write */
    nanosleep(&(struct timespec){.tv_nsec = 300 * 1000 * 1000}, NULL);
    kill(getpid(), SIGTERM); /* the other two threads have it blocked */
    pthread_join(failing, NULL);
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
        if (!freopen("/dev/null", "w", stderr)) _exit(96);
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
    code = in_child(sigterm_while_writing, written, sizeof written);
    CHECK(code == 5 && strchr(written, 's') && !strchr(written, '?'),
          "SIGTERM while the error line is written: exit %d, hook and handler wrote '%s'", code,
          written);
    return check_finish();
}
