/* clock: seconds on a monotonic clock, for every timing in cresnet (phases,
 * per-layer debug times, epoch rates, communicator deadlines).
 * Not here: device timing (a backend's synchronize comes first). */
#ifndef CRESNET_CLOCK_H
#define CRESNET_CLOCK_H

/* Seconds since an arbitrary fixed point; only differences mean anything. */
double cr_now_seconds(void);

#endif
