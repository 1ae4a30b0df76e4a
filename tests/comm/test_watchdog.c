/* The communicator watchdog (src/comm/watchdog.h), each case in a child
 * process because the watchdog ends its process: a wait that makes no
 * progress ends it with the configured code and one error line, a wait that
 * keeps making progress does not, nor does one the communicator reports
 * complete, `abandon` runs after the error line and cannot hold the exit
 * up past its grace period, output printed before the end is not lost, and
 * stop returns promptly. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "cresnet/clock.h"
#include "watchdog.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int status;     /* from waitpid; -1: killed by us after 20 s */
    double seconds; /* from fork to exit */
    char out[4096]; /* the child's stdout */
    char err[4096]; /* the child's stderr */
} outcome;

static void nap(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (long)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void read_all(int fd, char *buf, size_t len) {
    size_t got = 0;
    ssize_t n;
    while (got + 1 < len && (n = read(fd, buf + got, len - 1 - got)) > 0) got += (size_t)n;
    buf[got] = '\0';
    close(fd);
}

/* Runs body in a child with its stdout and stderr on pipes. */
static outcome run_child(void (*body)(void)) {
    outcome o = {0};
    int out[2], err[2];
    if (pipe(out) != 0 || pipe(err) != 0) {
        perror("pipe");
        exit(1);
    }
    fflush(stdout);
    double start = cr_now_seconds();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        close(out[0]);
        close(err[0]);
        body();
        fflush(stdout);
        _exit(0);
    }
    close(out[1]);
    close(err[1]);
    /* The child's output is small: read it after the exit. A child that
     * never ends is a failure, not a hung test. */
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (cr_now_seconds() - start > 20) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            status = -1;
            break;
        }
        nap(0.01);
    }
    o.seconds = cr_now_seconds() - start;
    o.status = status;
    read_all(out[0], o.out, sizeof o.out);
    read_all(err[0], o.err, sizeof o.err);
    return o;
}

static int exit_code(const outcome *o) {
    return o->status >= 0 && WIFEXITED(o->status) ? WEXITSTATUS(o->status) : -1;
}

static int count_lines(const char *text) {
    int n = 0;
    for (; *text; text++) n += *text == '\n';
    return n;
}

static cr_watchdog_config quick(void) {
    cr_watchdog_config c = {.timeout_s = 0.5, .interval_s = 0.02, .rank = 3, .exit_code = 6};
    return c;
}

/* ---- a wait that never ends ---- */

static void stuck(void) {
    cr_watchdog_config c = quick();
    cr_watchdog *dog = cr_watchdog_start(&c);
    printf("step 1 done"); /* buffered in a pipe: must still come out */
    cr_watchdog_waiting(dog, "test all-reduce");
    nap(15);
}

static void test_stuck_wait_ends_the_process(void) {
    outcome o = run_child(stuck);
    CHECK(exit_code(&o) == 6, "exit %d (status %d)", exit_code(&o), o.status);
    CHECK(o.seconds >= 0.5 && o.seconds < 5, "ended after %.2f s", o.seconds);
    const char *want = "cresnet: error: rank 3: test all-reduce made no progress for ";
    CHECK(strncmp(o.err, want, strlen(want)) == 0, "stderr: %s", o.err);
    CHECK(strstr(o.err, "(dist.timeout_s 0.5)") != NULL, "names the setting: %s", o.err);
    CHECK(count_lines(o.err) == 1, "one line: %s", o.err);
    CHECK(strcmp(o.out, "step 1 done") == 0, "stdout flushed: '%s'", o.out);
}

/* ---- waits that keep making progress, then none outstanding ---- */

static void progressing(void) {
    cr_watchdog_config c = quick();
    cr_watchdog *dog = cr_watchdog_start(&c);
    /* 2 s of waiting in all, four times the timeout, progressing every 0.1 s */
    for (int i = 0; i < 20; i++) {
        cr_watchdog_waiting(dog, "test all-reduce");
        nap(0.1);
    }
    cr_watchdog_done(dog);
    nap(1.0); /* idle is not waiting */
    cr_watchdog_stop(dog);
    printf("finished");
}

static void test_progress_keeps_it_quiet(void) {
    outcome o = run_child(progressing);
    CHECK(exit_code(&o) == 0, "exit %d, stderr: %s", exit_code(&o), o.err);
    CHECK(strcmp(o.out, "finished") == 0, "stdout '%s'", o.out);
    CHECK(o.err[0] == '\0', "nothing on stderr: %s", o.err);
}

/* ---- a wait the communicator reports complete ---- */

static int settled_on_third_look(void *context) {
    int *looks = context;
    return ++*looks >= 3;
}

static void settling(void) {
    int looks = 0;
    cr_watchdog_config c = quick();
    c.settled = settled_on_third_look;
    c.context = &looks;
    cr_watchdog *dog = cr_watchdog_start(&c);
    cr_watchdog_waiting(dog, "test all-reduce");
    nap(1.0); /* settled after ~0.06 s: the clock stopped long before 0.5 s */
    cr_watchdog_stop(dog);
    printf("looks %s", looks >= 3 ? "enough" : "too few");
}

static void test_settled_wait_stops_the_clock(void) {
    outcome o = run_child(settling);
    CHECK(exit_code(&o) == 0, "exit %d, stderr: %s", exit_code(&o), o.err);
    CHECK(strcmp(o.out, "looks enough") == 0, "stdout '%s'", o.out);
}

/* ---- ending the rest of the job ---- */

static void abandon(void *context, int exit_code) {
    (void)context;
    char msg[64];
    int n = snprintf(msg, sizeof msg, "abandoned with %d\n", exit_code);
    ssize_t ignored = write(STDERR_FILENO, msg, (size_t)n);
    (void)ignored;
}

static void abandon_forever(void *context, int exit_code) {
    abandon(context, exit_code);
    nap(60); /* a hung MPI_Abort */
}

static void stuck_then_abandon(void (*how)(void *, int)) {
    cr_watchdog_config c = quick();
    c.abandon = how;
    c.abandon_grace_s = 0.5;
    c.exit_code = 7;
    cr_watchdog *dog = cr_watchdog_start(&c);
    cr_watchdog_waiting(dog, "test barrier");
    nap(15);
}

static void abandoning(void) { stuck_then_abandon(abandon); }
static void abandoning_forever(void) { stuck_then_abandon(abandon_forever); }

static void test_abandon_after_the_line(void) {
    outcome o = run_child(abandoning);
    CHECK(exit_code(&o) == 7, "exit %d", exit_code(&o));
    const char *end = strstr(o.err, "\nabandoned with 7\n");
    const char *want = "cresnet: error: rank 3: test barrier made no progress";
    CHECK(strncmp(o.err, want, strlen(want)) == 0 && end &&
              strcmp(end, "\nabandoned with 7\n") == 0,
          "the error line, then abandon: %s", o.err);

    o = run_child(abandoning_forever);
    CHECK(exit_code(&o) == 7, "a hung abandon still exits: %d", exit_code(&o));
    CHECK(o.seconds < 0.5 + 0.5 + 3, "within the grace period: %.2f s", o.seconds);
}

/* ---- stop wakes the thread ---- */

static void test_stop_is_prompt(void) {
    cr_watchdog_config c = quick();
    c.interval_s = 30;
    cr_watchdog *dog = cr_watchdog_start(&c);
    double start = cr_now_seconds();
    cr_watchdog_stop(dog);
    double took = cr_now_seconds() - start;
    CHECK(took < 1.0, "stop took %.2f s with a 30 s interval", took);
    cr_watchdog_waiting(NULL, "nothing"); /* one rank: no watchdog, no-ops */
    cr_watchdog_done(NULL);
    cr_watchdog_stop(NULL);
}

int main(void) {
    test_stuck_wait_ends_the_process();
    test_progress_keeps_it_quiet();
    test_settled_wait_stops_the_clock();
    test_abandon_after_the_line();
    test_stop_is_prompt();
    return check_finish();
}
