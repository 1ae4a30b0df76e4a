/* loader: the batches of an epoch, built ahead of the caller by worker threads.
 *
 * Global batch b of an epoch is order[b*B, min((b+1)*B, N')), order being the
 * epoch's permutation of the first N' samples (or file order), N' the limit
 * (or all samples);
 * rank r of R takes its contiguous slice [r*n/R, (r+1)*n/R) of the n images.
 * Each image is cr_augment_image of its sample index (or, transforms_only,
 * its cr_augment_transform), so the bytes of a batch never depend on which
 * thread built it, or when.
 *
 * A ring of slots: step k of the epoch lives in slot k % slots. Workers claim
 * steps in order while the step's slot is free; the caller takes them in
 * order and holds the last one returned until its next call. A restart bumps
 * a generation number: ready slots are freed at once, and a worker still
 * building a batch of an older generation frees its slot when done (no
 * cancellation mid-batch: a batch is a few milliseconds). Everything shared
 * is under one mutex; waits are on condition variables. */
#define _POSIX_C_SOURCE 200809L

#include "cresnet/data.h"

#include "cresnet/error.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { SLOT_FREE, SLOT_BUSY, SLOT_READY, SLOT_HELD };

typedef struct {
    int state;
    int step, epoch;
    uint64_t generation;
    int global_size, size;
    int *samples;                   /* [size] dataset indices, copied at claim time */
    float *images;                  /* NULL with transforms_only */
    cr_image_transform *transforms; /* NULL without */
    int32_t *labels;
} slot;

struct cr_loader {
    cr_loader_args args;
    cr_augment augment;
    int used;  /* N': samples of the order used per epoch */
    int steps; /* batches per epoch */
    int max_slice;
    int *order, *spare_order; /* the epoch's order; the next one is built in spare */
    int num_threads, num_slots;
    pthread_t *threads;
    slot *slots;
    pthread_mutex_t mutex;
    pthread_cond_t work; /* a slot was freed, a new epoch started, or stop */
    pthread_cond_t done; /* a batch became ready */
    /* Under the mutex: */
    uint64_t generation;
    int started, stop, epoch;
    int next_claim;   /* next step a worker builds */
    int next_deliver; /* next step the caller gets */
    int held;         /* slot the caller holds, -1 if none */
};

#define PT_CHECK(call)                                                                             \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) CR_FAIL(CR_EXIT_INTERNAL, "loader", "%s: %s", #call, strerror(rc_));         \
    } while (0)

/* One thread on small machines, two from 8 cores up: building a batch of 128
 * takes ~1 ms per thread, and the trainer's compute wants every core of a
 * small machine (a second loader thread there would only steal from it). */
static int automatic_threads(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores >= 8 ? 2 : 1;
}

/* The dataset indices of this rank's slice of global batch `step`. */
static void slice_of(const cr_loader *l, int step, slot *s) {
    int first = step * l->args.batch_size;
    int n = l->used - first < l->args.batch_size ? l->used - first : l->args.batch_size;
    int r = l->args.rank, world = l->args.world_size;
    int lo = (int)((int64_t)r * n / world), hi = (int)((int64_t)(r + 1) * n / world);
    s->global_size = n;
    s->size = hi - lo;
    memcpy(s->samples, l->order + first + lo, (size_t)s->size * sizeof(int));
}

static void build_batch(const cr_loader *l, slot *s) {
    const cr_cifar_set *set = l->args.set;
    for (int i = 0; i < s->size; i++) {
        int idx = s->samples[i];
        s->labels[i] = set->labels[idx];
        if (s->transforms) {
            s->transforms[i] =
                cr_augment_transform(&l->augment, l->args.seed, s->epoch, (uint64_t)idx);
            continue;
        }
        cr_augment_image(set->pixels + (size_t)idx * CR_CIFAR_PIXELS, &l->augment, l->args.seed,
                         s->epoch, (uint64_t)idx, s->images + (size_t)i * CR_CIFAR_PIXELS);
    }
}

static int can_claim(const cr_loader *l) {
    return l->started && l->next_claim < l->steps &&
           l->slots[l->next_claim % l->num_slots].state == SLOT_FREE;
}

static void *worker(void *arg) {
    cr_loader *l = arg;
    PT_CHECK(pthread_mutex_lock(&l->mutex));
    for (;;) {
        while (!l->stop && !can_claim(l)) PT_CHECK(pthread_cond_wait(&l->work, &l->mutex));
        if (l->stop) break;
        int step = l->next_claim++;
        slot *s = &l->slots[step % l->num_slots];
        s->state = SLOT_BUSY;
        s->step = step;
        s->epoch = l->epoch;
        s->generation = l->generation;
        slice_of(l, step, s);
        PT_CHECK(pthread_mutex_unlock(&l->mutex));

        build_batch(l, s);

        PT_CHECK(pthread_mutex_lock(&l->mutex));
        if (s->generation == l->generation) {
            s->state = SLOT_READY;
            PT_CHECK(pthread_cond_broadcast(&l->done));
        } else { /* a restart made it stale: the slot is free for the new epoch */
            s->state = SLOT_FREE;
            PT_CHECK(pthread_cond_broadcast(&l->work));
        }
    }
    PT_CHECK(pthread_mutex_unlock(&l->mutex));
    return NULL;
}

static void check_args(const cr_loader_args *a) {
    CR_ASSERT(a->set && a->augment && a->set->count > 0);
    CR_ASSERT(a->batch_size > 0 && a->limit >= 0);
    CR_ASSERT(a->world_size >= 1 && a->rank >= 0 && a->rank < a->world_size);
    CR_ASSERT(a->num_threads >= 0);
}

static void alloc_slots(cr_loader *l) {
    l->slots = cr_calloc((size_t)l->num_slots, sizeof(slot), "loader slots");
    for (int i = 0; i < l->num_slots; i++) {
        slot *s = &l->slots[i];
        s->samples = cr_malloc((size_t)l->max_slice * sizeof(int), "loader samples");
        size_t n = (size_t)l->max_slice;
        if (l->args.transforms_only)
            s->transforms = cr_malloc(n * sizeof(cr_image_transform), "batch transforms");
        else
            s->images = cr_malloc(n * CR_CIFAR_PIXELS * sizeof(float), "batch");
        s->labels = cr_malloc((size_t)l->max_slice * sizeof(int32_t), "batch labels");
    }
}

cr_loader *cr_loader_create(const cr_loader_args *args) {
    check_args(args);
    cr_loader *l = cr_calloc(1, sizeof *l, "loader");
    l->args = *args;
    l->augment = *args->augment;
    l->args.augment = &l->augment;
    int count = args->set->count;
    l->used = args->limit > 0 && args->limit < count ? args->limit : count;
    /* Written so that a batch_size near INT_MAX neither overflows nor asks
     * for memory beyond the images there are. */
    l->steps = (l->used - 1) / args->batch_size + 1;
    int most = args->batch_size < l->used ? args->batch_size : l->used;
    l->max_slice = (most - 1) / args->world_size + 1;
    l->order = cr_malloc((size_t)count * sizeof(int), "loader order");
    l->spare_order = cr_malloc((size_t)count * sizeof(int), "loader order");
    l->num_threads = args->num_threads > 0 ? args->num_threads : automatic_threads();
    /* One slot held by the caller, one per worker, one ready in reserve. */
    l->num_slots = l->num_threads + 2;
    l->held = -1;
    alloc_slots(l);
    PT_CHECK(pthread_mutex_init(&l->mutex, NULL));
    PT_CHECK(pthread_cond_init(&l->work, NULL));
    PT_CHECK(pthread_cond_init(&l->done, NULL));
    l->threads = cr_malloc((size_t)l->num_threads * sizeof(pthread_t), "loader threads");
    for (int i = 0; i < l->num_threads; i++)
        PT_CHECK(pthread_create(&l->threads[i], NULL, worker, l));
    return l;
}

int cr_loader_steps(const cr_loader *loader) { return loader->steps; }
int cr_loader_images(const cr_loader *loader) { return loader->used; }

void cr_loader_start(cr_loader *l, int epoch, int first_step) {
    CR_ASSERT(epoch >= 0 && first_step >= 0 && first_step <= l->steps);
    /* Built outside the lock: workers read only `order`, never the spare.
     * A limit is a fixed subset (the first N' samples), shuffled per epoch. */
    int count = l->used;
    if (l->args.shuffle)
        cr_epoch_permutation(l->args.seed, epoch, count, l->spare_order);
    else
        for (int i = 0; i < count; i++) l->spare_order[i] = i;

    PT_CHECK(pthread_mutex_lock(&l->mutex));
    int *t = l->order;
    l->order = l->spare_order;
    l->spare_order = t;
    l->generation++;
    l->started = 1;
    l->epoch = epoch;
    l->next_claim = l->next_deliver = first_step;
    l->held = -1;
    for (int i = 0; i < l->num_slots; i++)
        if (l->slots[i].state == SLOT_READY || l->slots[i].state == SLOT_HELD)
            l->slots[i].state = SLOT_FREE;
    PT_CHECK(pthread_cond_broadcast(&l->work));
    PT_CHECK(pthread_mutex_unlock(&l->mutex));
}

int cr_loader_next(cr_loader *l, cr_batch *batch) {
    PT_CHECK(pthread_mutex_lock(&l->mutex));
    CR_ASSERT(l->started);
    if (l->held >= 0) {
        l->slots[l->held].state = SLOT_FREE;
        l->held = -1;
        PT_CHECK(pthread_cond_broadcast(&l->work));
    }
    if (l->next_deliver >= l->steps) {
        PT_CHECK(pthread_mutex_unlock(&l->mutex));
        return 0;
    }
    int index = l->next_deliver % l->num_slots;
    slot *s = &l->slots[index];
    while (!(s->state == SLOT_READY && s->generation == l->generation))
        PT_CHECK(pthread_cond_wait(&l->done, &l->mutex));
    CR_ASSERT(s->step == l->next_deliver);
    s->state = SLOT_HELD;
    l->held = index;
    l->next_deliver++;
    *batch = (cr_batch){.epoch = s->epoch,
                        .step = s->step,
                        .global_size = s->global_size,
                        .size = s->size,
                        .images = s->images,
                        .labels = s->labels,
                        .transforms = s->transforms};
    PT_CHECK(pthread_mutex_unlock(&l->mutex));
    return 1;
}

void cr_loader_free(cr_loader *l) {
    if (!l) return;
    PT_CHECK(pthread_mutex_lock(&l->mutex));
    l->stop = 1;
    PT_CHECK(pthread_cond_broadcast(&l->work));
    PT_CHECK(pthread_mutex_unlock(&l->mutex));
    for (int i = 0; i < l->num_threads; i++) PT_CHECK(pthread_join(l->threads[i], NULL));
    PT_CHECK(pthread_cond_destroy(&l->done));
    PT_CHECK(pthread_cond_destroy(&l->work));
    PT_CHECK(pthread_mutex_destroy(&l->mutex));
    for (int i = 0; i < l->num_slots; i++) {
        free(l->slots[i].samples);
        free(l->slots[i].images);
        free(l->slots[i].transforms);
        free(l->slots[i].labels);
    }
    free(l->slots);
    free(l->threads);
    free(l->order);
    free(l->spare_order);
    free(l);
}
