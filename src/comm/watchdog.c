/* The communicator watchdog (watchdog.h). One mutex guards the little state
 * the communicator's thread and the watchdog's share; the watchdog sleeps on
 * a condition variable so that stop wakes it at once. */
#define _POSIX_C_SOURCE 200809L
#include "watchdog.h"

#include "cresnet/clock.h"
#include "cresnet/error.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct cr_watchdog {
    cr_watchdog_config config;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping;
    const char *waiting_for; /* NULL: no wait outstanding */
    double since;            /* when that wait began or last made progress */
    unsigned long waits;     /* calls to cr_watchdog_waiting so far */
};

#define CHECK_PTHREAD(call)                                                                        \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            CR_FAIL(CR_EXIT_INTERNAL, "watchdog", "%s failed: %s", #call, strerror(rc_));          \
    } while (0)

static void nap(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* abandon may hang (MPI_Abort on a broken network): this thread exits the
 * process regardless once the grace period is over. */
static void *last_resort(void *arg) {
    cr_watchdog *dog = arg;
    nap(dog->config.abandon_grace_s > 0 ? dog->config.abandon_grace_s : 10.0);
    _exit(dog->config.exit_code);
}

/* The thread that hung may hold stdio's locks, so the line goes out with
 * write(2), and stdout is flushed only if nobody holds it (progress already
 * printed is not lost). */
static _Noreturn void end_process(cr_watchdog *dog, const char *why) {
    char line[512];
    int n = snprintf(line, sizeof line, "cresnet: error: rank %d: %s\n", dog->config.rank, why);
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    if (ftrylockfile(stdout) == 0) {
        fflush(stdout);
        funlockfile(stdout);
    }
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
    pthread_t timer;
    if (dog->config.abandon && pthread_create(&timer, NULL, last_resort, dog) == 0)
        dog->config.abandon(dog->config.context, dog->config.exit_code);
    _exit(dog->config.exit_code);
}

static struct timespec monotonic_after(double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double whole = (double)(time_t)seconds;
    ts.tv_sec += (time_t)whole;
    ts.tv_nsec += (long)((seconds - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Ends the outstanding wait if the communicator says its work has
 * completed, unless a new wait began meanwhile (the answer may predate it). */
static void settle(cr_watchdog *dog) {
    pthread_mutex_lock(&dog->lock);
    int outstanding = dog->waiting_for != NULL;
    unsigned long waits = dog->waits;
    pthread_mutex_unlock(&dog->lock);
    if (!outstanding || !dog->config.settled || !dog->config.settled(dog->config.context)) return;
    pthread_mutex_lock(&dog->lock);
    if (dog->waits == waits) dog->waiting_for = NULL;
    pthread_mutex_unlock(&dog->lock);
}

/* The reason to end the process, or "" while all is well. */
static void look(cr_watchdog *dog, char *why, size_t len) {
    settle(dog);
    pthread_mutex_lock(&dog->lock);
    const char *what = dog->waiting_for;
    double waited = what ? cr_now_seconds() - dog->since : 0.0;
    pthread_mutex_unlock(&dog->lock);
    why[0] = '\0';
    if (what && waited > dog->config.timeout_s)
        snprintf(why, len,
                 "%s made no progress for %.0f s (dist.timeout_s %g): another rank stopped "
                 "taking part (hung, stopped, or stalled on I/O) or the network stalled; ending "
                 "the job",
                 what, waited, dog->config.timeout_s);
}

static void *watch(void *arg) {
    cr_watchdog *dog = arg;
    char why[400];
    pthread_mutex_lock(&dog->lock);
    while (!dog->stopping) {
        struct timespec until = monotonic_after(dog->config.interval_s);
        pthread_cond_timedwait(&dog->wake, &dog->lock, &until);
        if (dog->stopping) break;
        pthread_mutex_unlock(&dog->lock);
        look(dog, why, sizeof why);
        if (why[0]) end_process(dog, why);
        pthread_mutex_lock(&dog->lock);
    }
    pthread_mutex_unlock(&dog->lock);
    return NULL;
}

cr_watchdog *cr_watchdog_start(const cr_watchdog_config *config) {
    cr_watchdog *dog = cr_calloc(1, sizeof *dog, "watchdog");
    dog->config = *config;
    if (dog->config.interval_s <= 0)
        dog->config.interval_s = config->timeout_s < 10 ? config->timeout_s / 10 : 1.0;
    CHECK_PTHREAD(pthread_mutex_init(&dog->lock, NULL));
    pthread_condattr_t attr;
    CHECK_PTHREAD(pthread_condattr_init(&attr));
    CHECK_PTHREAD(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC));
    CHECK_PTHREAD(pthread_cond_init(&dog->wake, &attr));
    pthread_condattr_destroy(&attr);
    CHECK_PTHREAD(pthread_create(&dog->thread, NULL, watch, dog));
    return dog;
}

void cr_watchdog_waiting(cr_watchdog *dog, const char *what) {
    if (!dog) return;
    double now = cr_now_seconds();
    pthread_mutex_lock(&dog->lock);
    dog->waiting_for = what;
    dog->since = now;
    dog->waits++;
    pthread_mutex_unlock(&dog->lock);
}

void cr_watchdog_done(cr_watchdog *dog) {
    if (!dog) return;
    pthread_mutex_lock(&dog->lock);
    dog->waiting_for = NULL;
    pthread_mutex_unlock(&dog->lock);
}

void cr_watchdog_stop(cr_watchdog *dog) {
    if (!dog) return;
    pthread_mutex_lock(&dog->lock);
    dog->stopping = 1;
    pthread_cond_signal(&dog->wake);
    pthread_mutex_unlock(&dog->lock);
    CHECK_PTHREAD(pthread_join(dog->thread, NULL));
    pthread_cond_destroy(&dog->wake);
    pthread_mutex_destroy(&dog->lock);
    free(dog);
}
