/* The training loop and its outputs. One function per stage of a run, read
 * top-down: setup, epoch loop (train steps, evaluation, logging,
 * checkpoints), teardown. */
#define _POSIX_C_SOURCE 200809L /* mkdir, isatty */
#include "cresnet/train.h"

#include "phases.h"

#include "cresnet/backend.h"
#include "cresnet/clock.h"
#include "cresnet/comm.h"
#include "cresnet/data.h"
#include "cresnet/error.h"
#include "cresnet/io.h"
#include "cresnet/optim.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const class_names[CR_NUM_CLASSES] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};

/* mkdir -p */
static void make_dirs(const char *path) {
    char buf[CR_PATH_MAX + 16];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            cr_fatal(CR_EXIT_USAGE, buf, "cannot create directory: %s", strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        cr_fatal(CR_EXIT_USAGE, buf, "cannot create directory: %s", strerror(errno));
    struct stat st; /* EEXIST says nothing about what exists */
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        cr_fatal(CR_EXIT_USAGE, buf, "cannot create directory: %s", strerror(ENOTDIR));
}

static void make_parent_dirs(const char *file) {
    char dir[CR_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return;
    *slash = '\0';
    make_dirs(dir);
}

static void data_dir_of(const cr_config *cfg, char *out, size_t len) {
    const char *env = getenv("CRESNET_DATA");
    if (cfg->data.dir[0])
        snprintf(out, len, "%s", cfg->data.dir);
    else if (env && env[0])
        snprintf(out, len, "%s", env);
    else
        snprintf(out, len, "./data/cifar-10-batches-bin");
}

/* Everything a run holds. */
typedef struct {
    const cr_config *cfg;
    cr_backend *be;
    cr_comm *comm;
    cr_model *model;
    cr_cifar_set train_set, test_set;
    cr_augment train_augment, test_augment;
    cr_loader *train_loader, *test_loader;
    float *images;   /* device, one rank's batch */
    int32_t *labels; /* device */
    /* data.on_device: the sets' uint8 images and a batch's transforms, on
     * the device; NULL when batches are built on the host. */
    uint8_t *train_pixels, *test_pixels;
    cr_image_transform *transforms;
    float *schedule; /* device [2]: this step's lr and momentum, read by sgd_step */
    /* device.graphs: the training step recorded once and replayed. */
    cr_graph *graph;
    int graph_refused; /* the backend could not record it: eager from then on */
    int warmed_up;     /* a full step has run eagerly, so scratch has its final size */
    int32_t *predicted_host;
    float *stop_flag; /* device [1]: the ranks' vote on stopping, summed */
    int local_batch;
    int buckets_per_step; /* gradient all-reduces of the last eager step */
    char checkpoint_dir[CR_PATH_MAX + 16];
    phase_clock clock;
    cr_tfevents *tensorboard; /* rank 0 with log.tensorboard, else NULL */
} run_state;

static cr_math math_of(cr_precision precision) {
    return precision == CR_PRECISION_TF32   ? CR_MATH_TF32
           : precision == CR_PRECISION_BF16 ? CR_MATH_BF16
                                            : CR_MATH_FP32;
}

#ifdef CRESNET_HAVE_CUDA
/* The GPU of this rank: the one of its local rank among those it sees. All
 * of a node's GPUs visible to every rank, that is one each; under Slurm's
 * --gpus-per-task each rank sees only its own, as GPU 0. NCCL needs a GPU
 * per rank: the ranks compare their GPUs' UUIDs, and two ranks on one GPU
 * end the job here, naming both, instead of failing inside NCCL. MPI
 * (dist.backend: mpi) lets ranks share one, which is how several ranks are
 * tested on one GPU. */
static int gpu_of_rank(cr_comm *comm, int gpus, int gpu_per_rank) {
    int device = comm->local_rank % gpus;
    if (!gpu_per_rank || comm->world_size == 1) return device;
    unsigned char mine[16];
    cr_cuda_device_uuid(device, mine);
    unsigned char *all = cr_calloc((size_t)comm->world_size, sizeof mine, "GPU ids");
    comm->ops->allgather(comm, mine, all, sizeof mine);
    for (int a = 0; a < comm->world_size; a++)
        for (int b = a + 1; b < comm->world_size; b++)
            if (memcmp(all + a * sizeof mine, all + b * sizeof mine, sizeof mine) == 0) {
                const unsigned char *u = all + a * sizeof mine;
                cr_fatal(CR_EXIT_USAGE, "device.type",
                         "ranks %d and %d share one GPU (GPU-%02x%02x%02x%02x-%02x%02x-...; this "
                         "rank sees %d): NCCL needs a GPU per rank; start as many ranks a node as "
                         "it has GPUs, or let ranks share one with dist.backend: mpi",
                         a, b, u[0], u[1], u[2], u[3], u[4], u[5], gpus);
            }
    free(all);
    return device;
}

/* device.type auto decides on each rank: a rank without a GPU would train
 * on the CPU while the others wait for it in collectives of another kind.
 * The ranks compare what they see, and a mixed job ends here, naming a
 * rank of each kind. */
static void check_auto_agrees(cr_comm *comm, int gpus) {
    if (comm->world_size == 1) return;
    int *all = cr_calloc((size_t)comm->world_size, sizeof gpus, "GPU counts");
    comm->ops->allgather(comm, &gpus, all, sizeof gpus);
    int with = -1, without = -1;
    for (int r = 0; r < comm->world_size; r++) {
        if (all[r] > 0 && with < 0) with = r;
        if (all[r] == 0 && without < 0) without = r;
    }
    if (with >= 0 && without >= 0)
        cr_fatal(CR_EXIT_USAGE, "device.type",
                 "auto: rank %d sees %d GPUs, rank %d sees none: set device.type to cuda or "
                 "cpu for all ranks",
                 with, all[with], without);
    free(all);
}
#endif

/* device.type: cpu, cuda (one GPU per local rank), or auto (cuda when this
 * build has it and a GPU is present). */
static cr_backend *backend_for(const cr_config *cfg, cr_comm *comm) {
#ifdef CRESNET_HAVE_CUDA
    int gpus = cfg->device.type == CR_DEVICE_CPU ? 0 : cr_cuda_device_count();
    if (cfg->device.type == CR_DEVICE_AUTO) check_auto_agrees(comm, gpus);
    if (cfg->device.type == CR_DEVICE_CUDA || (cfg->device.type == CR_DEVICE_AUTO && gpus > 0)) {
        if (gpus == 0)
            cr_fatal(CR_EXIT_USAGE, "device.type", "cuda requested, but no GPU is visible");
#ifdef CRESNET_HAVE_NCCL
        int gpu_per_rank = cfg->dist.backend != CR_DIST_MPI; /* auto and nccl pick NCCL */
#else
        int gpu_per_rank = cfg->dist.backend == CR_DIST_NCCL;
#endif
        cr_cuda_options options = {.math = math_of(cfg->train.precision),
                                   .autotune = cfg->device.autotune,
                                   .deterministic = cfg->train.deterministic || cfg->device.debug};
        return cr_backend_cuda_create(gpu_of_rank(comm, gpus, gpu_per_rank), &options);
    }
#else
    (void)comm;
    if (cfg->device.type == CR_DEVICE_CUDA)
        cr_fatal(CR_EXIT_USAGE, "device.type",
                 "cuda requested, but this build has no CUDA backend");
#endif
    return cr_backend_cpu_create(0, math_of(cfg->train.precision));
}

/* The launch communicator, made before the backend because its local rank
 * picks the GPU: MPI when dist.backend is mpi or nccl (NCCL starts over
 * MPI), or auto under an MPI launcher; else none. gpu_comm_for may then
 * replace it with NCCL. */
static cr_comm *comm_for(const cr_config *cfg) {
    cr_dist_backend want = cfg->dist.backend;
#ifdef CRESNET_HAVE_MPI
    if (want == CR_DIST_MPI || want == CR_DIST_NCCL ||
        (want == CR_DIST_AUTO && cr_comm_mpi_launched()))
        return cr_comm_mpi_create(cfg->dist.timeout_s);
#else
    /* nccl without MPI: one process, NCCL over the single-process comm. */
    if (want == CR_DIST_MPI)
        cr_fatal(CR_EXIT_USAGE, "dist.backend", "mpi requested, but this build has no MPI");
#endif
    return cr_comm_none_create();
}

/* dist.backend once the backend exists. Over a backend's device memory
 * (CUDA) with several ranks: nccl (asked for, or auto where this build has NCCL), else
 * MPI through host staging (or directly, where MPI is CUDA-aware). */
static cr_comm *gpu_comm_for(const cr_config *cfg, cr_backend *be, cr_comm *comm) {
    cr_dist_backend want = cfg->dist.backend;
    int several = comm->world_size > 1;
    if (want == CR_DIST_NCCL && !be->ops->device_memory)
        cr_fatal(CR_EXIT_USAGE, "dist.backend", "nccl needs the CUDA backend (device.type cuda)");
    if (!be->ops->device_memory || (!several && want != CR_DIST_NCCL)) return comm;
#ifdef CRESNET_HAVE_NCCL
    if (want == CR_DIST_NCCL || want == CR_DIST_AUTO)
        return cr_comm_nccl_create(be, comm, cfg->dist.timeout_s);
#else
    if (want == CR_DIST_NCCL)
        cr_fatal(CR_EXIT_USAGE, "dist.backend",
                 "nccl requested, but this build has no NCCL (configure with CRESNET_NCCL=ON)");
#endif
#ifdef CRESNET_HAVE_MPI
    return cr_comm_device_create(be, comm, cr_comm_mpi_cuda_aware());
#else
    return comm; /* unreachable: several ranks need MPI */
#endif
}

/* Every rank must run the same config: checked first of all, before the
 * ranks choose their devices (a rank on the CPU and one on a GPU would
 * wait in collectives of different kinds). */
static void agree_on_config(const cr_config *cfg, cr_comm *comm) {
    if (comm->world_size == 1) return;
    uint64_t mine = cr_config_digest(cfg), root = mine;
    comm->ops->broadcast(comm, &root, sizeof root, 0);
    if (root != mine) {
        char where[32];
        snprintf(where, sizeof where, "rank %d", comm->rank);
        cr_fatal(CR_EXIT_USAGE, where, "config differs from rank 0's (digest %016llx vs %016llx)",
                 (unsigned long long)mine, (unsigned long long)root);
    }
}

/* Every rank starts from rank 0's weights. */
static void agree_with_rank0(run_state *rs) {
    cr_comm *comm = rs->comm;
    if (comm->world_size == 1) return;
    const cr_model_layout *l = cr_model_get_layout(rs->model);
    comm->ops->broadcast(comm, cr_model_params(rs->model), l->param_count * sizeof(float), 0);
    comm->ops->broadcast(comm, cr_model_buffers(rs->model), l->buffer_count * sizeof(float), 0);
}

/* data.on_device: auto keeps the images where the compute is when that is
 * not the host's memory (a GPU: no per-step upload of float images). */
static int data_on_device(const cr_config *cfg, const cr_backend *be) {
    if (cfg->data.on_device == CR_ON_DEVICE_FALSE) return 0;
    if (cfg->data.on_device == CR_ON_DEVICE_AUTO && !be->ops->device_memory) return 0;
    if (!be->ops->augment_batch)
        cr_fatal(CR_EXIT_USAGE, "data.on_device", "the %s backend cannot augment batches",
                 be->ops->name);
    return 1;
}

static cr_loader *loader_for(run_state *rs, const cr_cifar_set *set, const cr_augment *aug,
                             int training) {
    const cr_config *cfg = rs->cfg;
    cr_loader_args args = {.set = set,
                           .augment = aug,
                           .shuffle = training,
                           .limit = training ? cfg->data.train_limit : 0,
                           .batch_size = cfg->train.batch_size,
                           .rank = rs->comm->rank,
                           .world_size = rs->comm->world_size,
                           .seed = cfg->train.seed,
                           .num_threads = cfg->data.num_threads,
                           .transforms_only = data_on_device(cfg, rs->be)};
    return cr_loader_create(&args);
}

/* The images a loader uses, uploaded once as uint8 (file layout). */
static uint8_t *resident_pixels(cr_backend *be, const cr_cifar_set *set, const cr_loader *loader) {
    size_t bytes = (size_t)cr_loader_images(loader) * CR_CIFAR_PIXELS;
    uint8_t *pixels = be->ops->alloc(be, bytes);
    be->ops->copy_to_device(be, pixels, set->pixels, bytes);
    return pixels;
}

/* A last, partial global batch smaller than the number of ranks would leave
 * some rank with no images at all. */
static void refuse_empty_slices(const run_state *rs, const cr_loader *loader, const char *what) {
    int world = rs->comm->world_size, batch = rs->cfg->train.batch_size;
    int last = cr_loader_images(loader) % batch;
    if (last > 0 && last < world)
        cr_fatal(CR_EXIT_USAGE, "train.batch_size",
                 "the %s's last batch has %d images, fewer than the %d ranks: choose a "
                 "batch size (or data.train_limit) that leaves at least one image per rank",
                 what, last, world);
}

static void setup(run_state *rs, const cr_config *cfg, int with_train_data) {
    memset(rs, 0, sizeof *rs);
    rs->cfg = cfg;
    rs->comm = comm_for(cfg);
    agree_on_config(cfg, rs->comm);
    rs->be = backend_for(cfg, rs->comm);
    rs->comm = gpu_comm_for(cfg, rs->be, rs->comm);
    if (cfg->train.batch_size % rs->comm->world_size != 0)
        cr_fatal(CR_EXIT_USAGE, "train.batch_size", "%d is not divisible by the %d ranks",
                 cfg->train.batch_size, rs->comm->world_size);
    rs->local_batch = cfg->train.batch_size / rs->comm->world_size;

    char dir[CR_PATH_MAX];
    data_dir_of(cfg, dir, sizeof dir);
    rs->test_augment = (cr_augment){0};
    memcpy(rs->test_augment.mean, cfg->data.mean, sizeof cfg->data.mean);
    memcpy(rs->test_augment.std, cfg->data.std, sizeof cfg->data.std);
    rs->train_augment = rs->test_augment;
    rs->train_augment.crop_padding = cfg->data.crop_padding;
    rs->train_augment.hflip = cfg->data.hflip;
    rs->train_augment.rotate_deg = cfg->data.rotate_deg;
    rs->test_set = cr_cifar_load(dir, 0);
    rs->test_loader = loader_for(rs, &rs->test_set, &rs->test_augment, 0);
    if (with_train_data) {
        rs->train_set = cr_cifar_load(dir, 1);
        rs->train_loader = loader_for(rs, &rs->train_set, &rs->train_augment, 1);
    }
    refuse_empty_slices(rs, rs->test_loader, "test set");
    if (rs->train_loader) refuse_empty_slices(rs, rs->train_loader, "training set");
    /* Memory is sized for the largest slice a rank can get, so a batch_size
     * of 2^31 is a config error, not terabytes asked of the allocator. */
    int images = cr_loader_images(rs->test_loader);
    if (rs->train_loader) {
        images = cr_loader_images(rs->train_loader);
        if (cfg->train.batch_size > images)
            cr_fatal(CR_EXIT_USAGE, "train.batch_size",
                     "%d is larger than the training set (%d images%s)", cfg->train.batch_size,
                     images, cfg->data.train_limit ? " after data.train_limit" : "");
    }
    if (rs->local_batch > images) rs->local_batch = images;
    cr_model_desc desc = cr_config_model(cfg);
    rs->model = cr_model_create(rs->be, &desc, rs->local_batch, cfg->train.seed);
    cr_model_set_debug(rs->model, cfg->device.debug);
    agree_with_rank0(rs);
    size_t pixels = (size_t)rs->local_batch * CR_CIFAR_PIXELS;
    rs->images = rs->be->ops->alloc(rs->be, pixels * sizeof(float));
    rs->labels = rs->be->ops->alloc(rs->be, (size_t)rs->local_batch * sizeof(int32_t));
    rs->predicted_host = cr_malloc((size_t)rs->local_batch * sizeof(int32_t), "train");
    if (data_on_device(cfg, rs->be)) {
        rs->test_pixels = resident_pixels(rs->be, &rs->test_set, rs->test_loader);
        if (rs->train_loader)
            rs->train_pixels = resident_pixels(rs->be, &rs->train_set, rs->train_loader);
        rs->transforms =
            rs->be->ops->alloc(rs->be, (size_t)rs->local_batch * sizeof(cr_image_transform));
    }
    rs->stop_flag = rs->be->ops->alloc(rs->be, sizeof(float));
    rs->schedule = rs->be->ops->alloc(rs->be, 2 * sizeof(float));
    if (cfg->checkpoint.dir[0])
        snprintf(rs->checkpoint_dir, sizeof rs->checkpoint_dir, "%s", cfg->checkpoint.dir);
    else
        snprintf(rs->checkpoint_dir, sizeof rs->checkpoint_dir, "%s/checkpoints", cfg->log.dir);
    const char *timeline = with_train_data ? cfg->log.timeline : "";
    if (timeline[0]) make_parent_dirs(timeline);
    phase_clock_init(&rs->clock, rs->be, timeline, rs->comm->rank);
}

static void teardown(run_state *rs) {
    phase_clock_close(&rs->clock);
    if (rs->train_loader) cr_loader_free(rs->train_loader);
    cr_loader_free(rs->test_loader);
    if (rs->train_set.count) cr_cifar_free(&rs->train_set);
    cr_cifar_free(&rs->test_set);
    rs->be->ops->free(rs->be, rs->images);
    rs->be->ops->free(rs->be, rs->labels);
    rs->be->ops->free(rs->be, rs->stop_flag);
    rs->be->ops->free(rs->be, rs->schedule);
    if (rs->graph) rs->be->ops->graph_free(rs->be, rs->graph);
    if (rs->transforms) {
        rs->be->ops->free(rs->be, rs->transforms);
        rs->be->ops->free(rs->be, rs->test_pixels);
        if (rs->train_pixels) rs->be->ops->free(rs->be, rs->train_pixels);
    }
    free(rs->predicted_host);
    cr_model_free(rs->model);
    rs->comm->ops->destroy(rs->comm);
    rs->be->ops->destroy(rs->be);
}

/* A batch into rs->images and rs->labels: its floats uploaded, or, with
 * data on the device, its transforms uploaded and applied there to the
 * resident images `pixels`. */
static void upload(run_state *rs, const cr_batch *b, const uint8_t *pixels, const cr_augment *aug) {
    cr_backend *be = rs->be;
    be->ops->copy_to_device(be, rs->labels, b->labels, (size_t)b->size * sizeof(int32_t));
    if (!b->transforms) {
        be->ops->copy_to_device(be, rs->images, b->images,
                                (size_t)b->size * CR_CIFAR_PIXELS * sizeof(float));
        return;
    }
    be->ops->copy_to_device(be, rs->transforms, b->transforms,
                            (size_t)b->size * sizeof(cr_image_transform));
    be->ops->augment_batch(be, pixels, rs->transforms, b->size, aug->mean, aug->std, rs->images);
}

/* Sums over the ranks of (loss, correct, count) and, for evaluation, the
 * confusion matrix: reduced as floats, exact for counts below 2^24. */
typedef struct {
    double loss_sum;
    long correct, count;
    long confusion[CR_NUM_CLASSES][CR_NUM_CLASSES];
} tally;

static void tally_reduce(run_state *rs, tally *t) {
    enum { N = 3 + CR_NUM_CLASSES * CR_NUM_CLASSES };
    float host[N];
    host[0] = (float)t->loss_sum, host[1] = (float)t->correct, host[2] = (float)t->count;
    for (int i = 0; i < CR_NUM_CLASSES * CR_NUM_CLASSES; i++)
        host[3 + i] = (float)t->confusion[i / CR_NUM_CLASSES][i % CR_NUM_CLASSES];
    if (rs->comm->world_size > 1) {
        float *dev = rs->be->ops->alloc(rs->be, sizeof host);
        rs->be->ops->copy_to_device(rs->be, dev, host, sizeof host);
        rs->comm->ops->allreduce_sum(rs->comm, dev, N);
        rs->be->ops->copy_to_host(rs->be, host, dev, sizeof host);
        rs->be->ops->free(rs->be, dev);
    }
    t->loss_sum = host[0], t->correct = lrintf(host[1]), t->count = lrintf(host[2]);
    for (int i = 0; i < CR_NUM_CLASSES * CR_NUM_CLASSES; i++)
        t->confusion[i / CR_NUM_CLASSES][i % CR_NUM_CLASSES] = lrintf(host[3 + i]);
}

static tally evaluate(run_state *rs) {
    tally t = {0};
    cr_batch b;
    cr_loader_start(rs->test_loader, 0, 0);
    while (cr_loader_next(rs->test_loader, &b)) {
        upload(rs, &b, rs->test_pixels, &rs->test_augment);
        cr_forward_result r =
            cr_model_forward(rs->model, rs->images, rs->labels, b.size, 0, 0.0f, rs->comm);
        rs->be->ops->copy_to_host(rs->be, rs->predicted_host, r.predicted,
                                  (size_t)b.size * sizeof(int32_t));
        for (int i = 0; i < b.size; i++) t.confusion[b.labels[i]][rs->predicted_host[i]]++;
        t.loss_sum += r.loss_sum;
        t.correct += r.correct;
        t.count += b.size;
    }
    tally_reduce(rs, &t);
    return t;
}

/* ---- progress and files ---- */

typedef struct {
    int bar, lines; /* a redrawn bar on a terminal, or a line every few seconds */
    double last_line;
} progress;

static progress progress_for(const cr_config *cfg, int rank) {
    progress p = {0};
    if (rank != 0 || cfg->log.progress == CR_PROGRESS_OFF) return p;
    int tty = isatty(STDOUT_FILENO);
    p.bar = cfg->log.progress == CR_PROGRESS_BAR || (cfg->log.progress == CR_PROGRESS_AUTO && tty);
    p.lines = !p.bar;
    return p;
}

static void progress_update(progress *p, int epoch, int epochs, int step, int steps, double loss,
                            double images_per_s, double eta_seconds) {
    double now = cr_now_seconds();
    if (!p->bar && !p->lines) return;
    if (p->lines && now - p->last_line < 10.0 && step != steps) return;
    p->last_line = now;
    int width = 24, filled = steps ? width * step / steps : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    int eta = (int)eta_seconds;
    printf("%sepoch %d/%d [%s] step %d/%d loss %.4f %.0f img/s ETA %d:%02d%s", p->bar ? "\r" : "",
           epoch, epochs, bar, step, steps, loss, images_per_s, eta / 60, eta % 60,
           p->bar ? "" : "\n");
    fflush(stdout);
}

static FILE *open_in(const char *dir, const char *name, const char *mode) {
    char path[CR_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return cr_fopen(path, mode, CR_EXIT_USAGE);
}

static void write_confusion(const char *dir, const tally *t) {
    FILE *f = open_in(dir, "confusion_test.csv", "w");
    fprintf(f, "true\\predicted");
    for (int k = 0; k < CR_NUM_CLASSES; k++) fprintf(f, ",%s", class_names[k]);
    fprintf(f, "\n");
    for (int i = 0; i < CR_NUM_CLASSES; i++) {
        fprintf(f, "%s", class_names[i]);
        for (int k = 0; k < CR_NUM_CLASSES; k++) fprintf(f, ",%ld", t->confusion[i][k]);
        fprintf(f, "\n");
    }
    fclose(f);
}

typedef struct {
    int epoch;
    double train_loss, train_acc, test_loss, test_acc, lr, momentum, images_per_s, seconds;
} epoch_record;

static void write_epoch_metrics(FILE *metrics, const epoch_record *r) {
    fprintf(metrics,
            "{\"epoch\": %d, \"train_loss\": %.6f, \"train_acc\": %.6f, \"test_loss\": %.6f, "
            "\"test_acc\": %.6f, \"lr\": %.9g, \"images_per_s\": %.1f, \"seconds\": %.3f}\n",
            r->epoch, r->train_loss, r->train_acc, r->test_loss, r->test_acc, r->lr,
            r->images_per_s, r->seconds);
    fflush(metrics);
}

static void write_summary(const run_state *rs, const epoch_record *last, double best_test_acc,
                          double total_seconds) {
    const cr_config *cfg = rs->cfg;
    FILE *f = open_in(cfg->log.dir, "summary.txt", "w");
    const cr_model_layout *l = cr_model_get_layout(rs->model);
    char device[256];
    rs->be->ops->describe(rs->be, device, sizeof device);
    fprintf(f, "implementation: cresnet %s\n", CRESNET_VERSION);
    fprintf(f, "device: %s (%s backend)\n", device, rs->be->ops->name);
    fprintf(f, "model: %s (%zu trainable parameters)\n", cfg->model.arch, l->param_count);
    fprintf(f, "epochs: %d, global batch %d, ranks %d, backend %s, communicator %s\n", last->epoch,
            cfg->train.batch_size, rs->comm->world_size, rs->be->ops->name, rs->comm->ops->name);
    if (rs->comm->world_size > 1)
        fprintf(f, "gradient all-reduce: %d buckets a step (dist.bucket_mb %g)\n",
                rs->buckets_per_step, cfg->dist.bucket_mb);
    fprintf(f, "final train loss %.4f, train accuracy %.2f%%\n", last->train_loss,
            100.0 * last->train_acc);
    fprintf(f, "final test loss %.4f, test accuracy %.2f%% (best %.2f%%)\n", last->test_loss,
            100.0 * last->test_acc, 100.0 * best_test_acc);
    fprintf(f, "training time %.1f s this run, last epoch %.0f images/s\n", total_seconds,
            last->images_per_s);
    fclose(f);
}

/* ---- checkpoints ---- */

static int compare_ints(const void *a, const void *b) {
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* Keeps the `keep` newest end-of-epoch checkpoints; a preemption
 * checkpoint is dropped once an epoch checkpoint supersedes it. */
static void prune_checkpoints(const char *dir, int newest_epoch, int keep) {
    DIR *d = opendir(dir);
    if (!d) return;
    int epochs[4096], count = 0;
    char path[CR_PATH_MAX + 300];
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int epoch, step, used = 0;
        if (sscanf(e->d_name, "epoch_%d_step_%d.safetensors%n", &epoch, &step, &used) == 2) {
            if (e->d_name[used] != '\0' || epoch >= newest_epoch) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        } else if (used = 0, sscanf(e->d_name, "epoch_%d.safetensors%n", &epoch, &used) == 1) {
            if (e->d_name[used] == '\0' && count < 4096) epochs[count++] = epoch;
        }
    }
    closedir(d);
    qsort(epochs, (size_t)count, sizeof epochs[0], compare_ints);
    for (int i = 0; i < count - keep; i++) {
        snprintf(path, sizeof path, "%s/epoch_%04d.safetensors", dir, epochs[i]);
        unlink(path);
    }
}

/* After `epoch` complete epochs and `step` steps in all; mid-epoch (on
 * preemption) the name records the steps into the next epoch. */
static void save_checkpoint(run_state *rs, int epoch, long step) {
    const cr_config *cfg = rs->cfg;
    phase_begin(&rs->clock, PHASE_CHECKPOINT);
    make_dirs(rs->checkpoint_dir);
    char path[CR_PATH_MAX + 64];
    long into_epoch = step - (long)epoch * cr_loader_steps(rs->train_loader);
    if (into_epoch > 0)
        snprintf(path, sizeof path, "%s/epoch_%04d_step_%06ld.safetensors", rs->checkpoint_dir,
                 epoch, into_epoch);
    else
        snprintf(path, sizeof path, "%s/epoch_%04d.safetensors", rs->checkpoint_dir, epoch);
    cr_checkpoint_meta meta = {.epoch = epoch,
                               .step = step,
                               .seed = cfg->train.seed,
                               .config_digest = cr_config_digest(cfg),
                               .world_size = rs->comm->world_size};
    cr_checkpoint_save(path, rs->model, rs->be, &meta);
    if (into_epoch == 0) prune_checkpoints(rs->checkpoint_dir, epoch, cfg->checkpoint.keep);
    phase_end(&rs->clock);
}

/* Rank 0 picks the checkpoint, so every rank resumes from the same one
 * whatever its view of the file system. "" for a fresh run. */
static void checkpoint_to_resume(run_state *rs, char *path, size_t len) {
    const cr_config *cfg = rs->cfg;
    path[0] = '\0';
    if (cfg->checkpoint.resume == CR_RESUME_PATH)
        snprintf(path, len, "%s", cfg->checkpoint.resume_path);
    else if (cfg->checkpoint.resume == CR_RESUME_AUTO && rs->comm->rank == 0 &&
             cr_checkpoint_newest(rs->checkpoint_dir, path, len) != 0)
        path[0] = '\0';
    rs->comm->ops->broadcast(rs->comm, path, len, 0);
}

/* Loads the checkpoint to resume from, if any; returns the steps done. */
static long resume(run_state *rs) {
    const cr_config *cfg = rs->cfg;
    char path[CR_PATH_MAX + 64];
    checkpoint_to_resume(rs, path, sizeof path);
    if (!path[0]) return 0;
    cr_checkpoint_meta meta;
    char err[512];
    if (cr_checkpoint_load(path, rs->model, rs->be, &meta, err, sizeof err) != 0)
        cr_fatal(CR_EXIT_CHECKPOINT, path, "%s", err);
    if (meta.seed != cfg->train.seed)
        cr_fatal(CR_EXIT_CHECKPOINT, path, "written with seed %llu, this run has seed %llu",
                 (unsigned long long)meta.seed, (unsigned long long)cfg->train.seed);
    long into_epoch = meta.step - (long)meta.epoch * cr_loader_steps(rs->train_loader);
    if (into_epoch < 0 || into_epoch >= cr_loader_steps(rs->train_loader))
        cr_fatal(CR_EXIT_CHECKPOINT, path,
                 "step %ld after %d epochs does not fit %d steps per epoch: batch_size or "
                 "train_limit changed since it was written",
                 meta.step, meta.epoch, cr_loader_steps(rs->train_loader));
    if (rs->comm->rank == 0)
        printf("resumed from %s (epoch %d, step %ld%s)\n", path, meta.epoch, meta.step,
               meta.config_digest == cr_config_digest(cfg) ? "" : "; config changed since");
    return meta.step;
}

/* ---- preemption ---- */

/* Set by the signal handler, read at step boundaries: the one piece of
 * mutable state a signal handler may share. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

/* SIGUSR1 always (Slurm's --signal=B:USR1 before the time limit); SIGTERM
 * only in a single process: under MPI it means the launcher is tearing the
 * job down after a lost rank (see comm_mpi.c). */
static void catch_stop_signals(const cr_comm *comm) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART; /* a checkpoint write in progress carries on */
    stop_signal = 0;
    sigaction(SIGUSR1, &sa, NULL);
    if (comm->world_size == 1) sigaction(SIGTERM, &sa, NULL);
    /* Past a file size limit (RLIMIT_FSIZE) a write must fail with EFBIG,
     * which the checkpoint writer reports, not kill the process. */
    signal(SIGXFSZ, SIG_IGN);
}

/* Every rank stops at the same step if any rank was signalled. */
static int stop_agreed(run_state *rs) {
    float stop = stop_signal != 0;
    if (rs->comm->world_size == 1) return stop > 0;
    cr_backend *be = rs->be;
    be->ops->copy_to_device(be, rs->stop_flag, &stop, sizeof stop);
    rs->comm->ops->allreduce_sum(rs->comm, rs->stop_flag, 1);
    be->ops->copy_to_host(be, &stop, rs->stop_flag, sizeof stop);
    return stop > 0;
}

/* ---- the loop ---- */

static long total_steps(const run_state *rs) {
    return (long)rs->cfg->train.epochs * cr_loader_steps(rs->train_loader);
}

/* Gradient buckets: fixed ranges of the flat gradient buffer taken from its
 * end, where the backward pass finishes first; each is all-reduced as soon
 * as the pass reports it complete, overlapping the rest of the pass. */
typedef struct {
    cr_comm *comm;
    float *grads;
    size_t bucket;   /* floats per bucket */
    size_t next_end; /* grads[next_end ..) already launched */
    int num_requests;
    cr_comm_request *requests[4096];
} grad_buckets;

static void launch_bucket(grad_buckets *gb, size_t begin) {
    CR_ASSERT(gb->num_requests < (int)(sizeof gb->requests / sizeof gb->requests[0]));
    gb->requests[gb->num_requests++] =
        gb->comm->ops->allreduce_start(gb->comm, gb->grads + begin, gb->next_end - begin);
    gb->next_end = begin;
}

/* Bucket starts fall on 16 bytes (the buffer's start does; the parameter
 * count need not be a multiple of 4), which lets NCCL move whole vectors, a
 * matter of speed only. The first bucket, at the buffer's end, is up to 3
 * floats short, so it and every later one starts aligned; rounding the start
 * up only shortens a bucket, so all of it is still complete. */
static size_t align_up_4(size_t i) { return (i + 3) & ~(size_t)3; }

static void buckets_ready(void *context, size_t first) {
    grad_buckets *gb = context;
    while (gb->next_end >= first + gb->bucket)
        launch_bucket(gb, align_up_4(gb->next_end - gb->bucket));
    if (first == 0 && gb->next_end > 0) launch_bucket(gb, 0);
}

static grad_buckets buckets_for(run_state *rs) {
    size_t n = cr_model_get_layout(rs->model)->param_count;
    size_t bucket = (size_t)(rs->cfg->dist.bucket_mb * 1024.0 * 1024.0 / sizeof(float));
    /* Never more buckets than there are request slots: with the first up to
     * 3 floats short, there are ceil((n + 3) / bucket). A multiple of 4. */
    size_t fewest = (n + 3 + 4095) / 4096;
    return (grad_buckets){.comm = rs->comm,
                          .grads = cr_model_grads(rs->model),
                          .bucket = align_up_4(bucket > fewest ? bucket : fewest),
                          .next_end = n};
}

static void buckets_wait(grad_buckets *gb) {
    for (int i = 0; i < gb->num_requests; i++) gb->comm->ops->wait(gb->comm, gb->requests[i]);
}

/* The next batch of the loader, on the device; 0 at the end of the epoch. */
static int next_batch(run_state *rs, cr_loader *loader, cr_batch *b) {
    phase_begin(&rs->clock, PHASE_DATA);
    int more = cr_loader_next(loader, b);
    if (more) upload(rs, b, rs->train_pixels, &rs->train_augment);
    phase_end(&rs->clock);
    return more;
}

/* A NaN or Inf loss ends the run (exit 5), naming the step. */
static void check_loss(const run_state *rs, cr_forward_result *r, const cr_batch *b, long step) {
    const cr_config *cfg = rs->cfg;
    if (cfg->train.inject_nan_step > 0 && step + 1 == cfg->train.inject_nan_step)
        r->loss_sum = NAN; /* a fault test of the check below */
    if (!isfinite(r->loss_sum))
        cr_fatal(CR_EXIT_NUMERIC, "train", "step %ld (epoch %d): loss is %s", step + 1,
                 b->epoch + 1, isnan(r->loss_sum) ? "NaN" : "Inf");
}

static cr_sgd_args sgd_args(const run_state *rs) {
    return (cr_sgd_args){.weight_decay = rs->cfg->optimizer.weight_decay,
                         .nesterov = rs->cfg->optimizer.nesterov,
                         .schedule = rs->schedule};
}

/* The step's work on one rank once the batch is on the device: nothing in
 * it waits for the device or reads from it, so a backend can record it. */
static void step_ops(run_state *rs, const cr_batch *b) {
    cr_backend *be = rs->be;
    cr_model *m = rs->model;
    cr_comm *bn_comm = rs->cfg->dist.sync_bn ? rs->comm : NULL;
    cr_model_forward_enqueue(m, rs->images, rs->labels, b->size, 1, 1.0f / b->global_size, bn_comm);
    cr_model_backward(m, bn_comm, NULL);
    cr_sgd_args sgd = sgd_args(rs);
    be->ops->sgd_step(be, cr_model_params(m), cr_model_grads(m), cr_model_momentum(m),
                      cr_model_get_layout(m)->param_count, &sgd);
}

/* device.graphs: one rank (no all-reduce between the ops), a full batch
 * (the shapes recorded), not device.debug (it waits after every layer), and
 * after one eager step of these shapes, which grew every scratch buffer. */
static int graph_fits(const run_state *rs, const cr_batch *b) {
    const cr_config *cfg = rs->cfg;
    return cfg->device.graphs && rs->be->ops->graph_begin && !rs->graph_refused &&
           rs->comm->world_size == 1 && !cfg->device.debug && rs->warmed_up &&
           b->size == rs->local_batch && b->global_size == cfg->train.batch_size;
}

/* The step as a graph: recorded on first use, then replayed. Returns 0,
 * having run nothing, when the backend cannot record it. */
static int graph_step(run_state *rs, const cr_batch *b) {
    cr_backend *be = rs->be;
    cr_model *m = rs->model;
    int64_t tracked = cr_model_batches_tracked(m);
    cr_comm *bn_comm = rs->cfg->dist.sync_bn ? rs->comm : NULL;
    if (!rs->graph) {
        be->ops->graph_begin(be);
        step_ops(rs, b); /* recorded, not run; the forward counted the batch */
        rs->graph = be->ops->graph_end(be);
        if (!rs->graph) {
            rs->graph_refused = 1;
            cr_model_set_batches_tracked(m, tracked);
            if (rs->comm->rank == 0)
                printf("note: the %s backend could not record the training step as a graph; "
                       "running it op by op\n",
                       be->ops->name);
            return 0;
        }
    } else { /* the forward's host side: batch size (eval may have changed it), count */
        cr_model_prepare(m, rs->images, b->size, 1, bn_comm);
    }
    phase_begin(&rs->clock, PHASE_GRAPH);
    be->ops->graph_launch(be, rs->graph);
    phase_end(&rs->clock);
    return 1;
}

/* One optimizer step on this rank's slice of a global batch; returns the
 * rank's loss sum and correct count. */
static cr_forward_result train_step(run_state *rs, const cr_batch *b, long step,
                                    cr_schedule_point *sp) {
    const cr_config *cfg = rs->cfg;
    cr_backend *be = rs->be;
    cr_model *m = rs->model;
    cr_comm *bn_comm = cfg->dist.sync_bn ? rs->comm : NULL;
    *sp = cr_schedule_at(cfg, step, total_steps(rs));
    const float schedule[2] = {(float)sp->lr, (float)sp->momentum};
    be->ops->copy_to_device(be, rs->schedule, schedule, sizeof schedule);
    if (graph_fits(rs, b) && graph_step(rs, b)) {
        /* Checked after the fact: a NaN step has updated the weights, but
         * the run ends here and its checkpoints are from before. */
        cr_forward_result r = cr_model_result(m);
        check_loss(rs, &r, b, step);
        return r;
    }
    /* Gradients of the global-batch mean: each rank scales by the global size
     * and the all-reduce sums. */
    phase_begin(&rs->clock, PHASE_FORWARD);
    cr_forward_result r =
        cr_model_forward(m, rs->images, rs->labels, b->size, 1, 1.0f / b->global_size, bn_comm);
    phase_end(&rs->clock);
    check_loss(rs, &r, b, step);
    grad_buckets gb = buckets_for(rs);
    cr_grad_hook hook = {buckets_ready, &gb};
    phase_begin(&rs->clock, PHASE_BACKWARD);
    cr_model_backward(m, bn_comm, rs->comm->world_size > 1 ? &hook : NULL);
    phase_end(&rs->clock);
    phase_begin(&rs->clock, PHASE_COMM);
    buckets_wait(&gb);
    rs->buckets_per_step = gb.num_requests;
    phase_end(&rs->clock);
    size_t n = cr_model_get_layout(m)->param_count;
    cr_sgd_args sgd = sgd_args(rs);
    phase_begin(&rs->clock, PHASE_OPTIMIZER);
    be->ops->sgd_step(be, cr_model_params(m), cr_model_grads(m), cr_model_momentum(m), n, &sgd);
    phase_end(&rs->clock);
    if (b->size == rs->local_batch) rs->warmed_up = 1;
    return r;
}

/* The global-batch mean loss of one step, for log.every_steps lines. */
static double global_step_loss(run_state *rs, const cr_forward_result *r, int global_size) {
    tally t = {.loss_sum = r->loss_sum};
    tally_reduce(rs, &t);
    return t.loss_sum / global_size;
}

/* A log.every_steps record: a metrics line and the TensorBoard scalar. */
static void log_step(run_state *rs, FILE *metrics, int epoch, long step, double loss,
                     const cr_schedule_point *sp) {
    if (!metrics) return; /* not rank 0 */
    fprintf(metrics,
            "{\"step\": %ld, \"epoch\": %d, \"loss\": %.6f, \"lr\": %.9g, \"momentum\": %.9g}\n",
            step, epoch + 1, loss, sp->lr, sp->momentum);
    fflush(metrics); /* people tail this file */
    if (rs->tensorboard) cr_tfevents_scalar(rs->tensorboard, "train/step_loss", step, loss);
}

/* Trains the rest of `epoch` from batch first_step on; sets *stopped when a
 * stop signal ends it early. */
static epoch_record train_epoch(run_state *rs, int epoch, int first_step, long *step,
                                progress *prog, FILE *metrics, int *stopped) {
    const cr_config *cfg = rs->cfg;
    double start = cr_now_seconds();
    int steps = cr_loader_steps(rs->train_loader);
    tally t = {0};
    cr_schedule_point sp = {0};
    cr_batch b;
    cr_loader_start(rs->train_loader, epoch, first_step);
    phase_clock_reset(&rs->clock);
    *stopped = 0;
    while (!*stopped && next_batch(rs, rs->train_loader, &b)) {
        cr_forward_result r = train_step(rs, &b, *step, &sp);
        (*step)++;
        t.loss_sum += r.loss_sum, t.correct += r.correct, t.count += b.size;
        if (cfg->log.every_steps > 0 && *step % cfg->log.every_steps == 0)
            log_step(rs, metrics, epoch, *step, global_step_loss(rs, &r, b.global_size), &sp);
        double elapsed = cr_now_seconds() - start;
        double rate = (double)t.count * rs->comm->world_size / elapsed;
        int done_here = b.step + 1 - first_step;
        progress_update(prog, epoch + 1, cfg->train.epochs, b.step + 1, steps, r.loss_sum / b.size,
                        rate, elapsed / done_here * (steps - b.step - 1));
        /* A signal during the epoch's last step lets the epoch finish. */
        *stopped = b.step + 1 < steps && stop_agreed(rs);
    }
    double seconds = cr_now_seconds() - start;
    tally_reduce(rs, &t);
    epoch_record rec = {.epoch = epoch + 1,
                        .train_loss = t.loss_sum / t.count,
                        .train_acc = (double)t.correct / t.count,
                        .lr = sp.lr,
                        .momentum = sp.momentum,
                        .images_per_s = t.count / seconds,
                        .seconds = seconds};
    return rec;
}

/* The epoch's time per step by phase: mean and max over the ranks (a
 * straggler shows as a max far above the mean), printed by rank 0 under the
 * epoch line and, as milliseconds, logged to TensorBoard as time/<phase>_ms. */
static void report_phases(run_state *rs, const progress *p, int epoch) {
    enum { N = PHASE_STEP_COUNT };
    cr_backend *be = rs->be;
    int world = rs->comm->world_size;
    float mine[N];
    for (int k = 0; k < N; k++)
        mine[k] = rs->clock.steps ? (float)(1e3 * rs->clock.seconds[k] / rs->clock.steps) : 0.0f;
    float *all = cr_malloc((size_t)world * N * sizeof(float), "train");
    if (world == 1) {
        memcpy(all, mine, sizeof mine);
    } else { /* communicator buffers live in the backend's memory */
        float *send = be->ops->alloc(be, sizeof mine);
        float *recv = be->ops->alloc(be, (size_t)world * sizeof mine);
        be->ops->copy_to_device(be, send, mine, sizeof mine);
        rs->comm->ops->allgather(rs->comm, send, recv, sizeof mine);
        be->ops->copy_to_host(be, all, recv, (size_t)world * sizeof mine);
        be->ops->free(be, send);
        be->ops->free(be, recv);
    }
    double mean[N] = {0}, max[N] = {0}, total = 0.0;
    for (int k = 0; k < N; k++) {
        for (int r = 0; r < world; r++) {
            mean[k] += all[r * N + k] / world;
            max[k] = all[r * N + k] > max[k] ? all[r * N + k] : max[k];
        }
        total += mean[k];
    }
    free(all);
    /* The graph phase only where a graph ran: elsewhere the line is as it
     * always was. */
    int shown = max[PHASE_GRAPH] > 0 ? N : PHASE_GRAPH;
    if (rs->tensorboard)
        for (int k = 0; k < shown; k++) {
            char tag[64];
            snprintf(tag, sizeof tag, "time/%s_ms", phase_name((phase_id)k));
            for (char *c = tag; *c; c++) *c = *c == ' ' ? '_' : *c;
            cr_tfevents_scalar(rs->tensorboard, tag, epoch, mean[k]);
        }
    if (!p->bar && !p->lines) return;
    printf("  time per step %.1f ms%s:", total, world > 1 ? " (mean over the ranks, [max])" : "");
    for (int k = 0; k < shown; k++) {
        printf("%s %s %.1f", k ? "," : "", phase_name((phase_id)k), mean[k]);
        if (world > 1) printf(" [%.1f]", max[k]);
    }
    printf("\n");
    fflush(stdout);
}

static void log_epoch_to_tensorboard(cr_tfevents *tb, const epoch_record *r) {
    const struct {
        const char *tag;
        double value;
    } scalars[] = {{"train/loss", r->train_loss},
                   {"train/accuracy", r->train_acc},
                   {"test/loss", r->test_loss},
                   {"test/accuracy", r->test_acc},
                   {"lr", r->lr},
                   {"momentum", r->momentum},
                   {"images_per_s", r->images_per_s}};
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++)
        cr_tfevents_scalar(tb, scalars[i].tag, r->epoch, scalars[i].value);
    cr_tfevents_flush(tb);
}

static void print_epoch(const progress *p, const epoch_record *r) {
    if (!p->bar && !p->lines) return;
    printf("%sepoch %d: train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%% | %.0f img/s, "
           "%.1f s\n",
           p->bar ? "\r\033[K" : "", r->epoch, r->train_loss, 100 * r->train_acc, r->test_loss,
           100 * r->test_acc, r->images_per_s, r->seconds);
    fflush(stdout);
}

/* Without SyncBN each rank's running statistics drift apart; evaluation and
 * checkpoints use rank 0's, as DDP's broadcast_buffers does. */
static void share_running_stats(run_state *rs) {
    if (rs->comm->world_size == 1 || rs->cfg->dist.sync_bn) return;
    const cr_model_layout *l = cr_model_get_layout(rs->model);
    rs->comm->ops->broadcast(rs->comm, cr_model_buffers(rs->model), l->buffer_count * sizeof(float),
                             0);
}

/* Rank 0's run folder: config.yaml, metrics.jsonl (appended to when
 * resuming at `step`) and TensorBoard's events. Both folders are made and
 * checked before the first step: an unusable checkpoint.dir found at the end
 * of an epoch wastes it. */
static FILE *open_run_outputs(run_state *rs, long step) {
    const cr_config *cfg = rs->cfg;
    make_dirs(cfg->log.dir);
    make_dirs(rs->checkpoint_dir);
    if (access(rs->checkpoint_dir, W_OK | X_OK) != 0)
        cr_fatal(CR_EXIT_USAGE, rs->checkpoint_dir, "cannot write checkpoints here: %s",
                 strerror(errno));
    FILE *f = open_in(cfg->log.dir, "config.yaml", "w");
    cr_config_write(cfg, f);
    fclose(f);
    if (cfg->log.tensorboard) rs->tensorboard = cr_tfevents_open(cfg->log.dir);
    return open_in(cfg->log.dir, "metrics.jsonl", step ? "a" : "w");
}

/* After an epoch's training: the test set, the epoch's line and records,
 * and a checkpoint when one is due (every_epochs, and after the last). */
static void end_epoch(run_state *rs, epoch_record *rec, long step, progress *prog, FILE *metrics) {
    const cr_config *cfg = rs->cfg;
    int is_root = rs->comm->rank == 0, epochs = rec->epoch;
    phase_begin(&rs->clock, PHASE_EVALUATE);
    tally test = evaluate(rs);
    phase_end(&rs->clock);
    rec->test_loss = test.loss_sum / test.count;
    rec->test_acc = (double)test.correct / test.count;
    print_epoch(prog, rec);
    report_phases(rs, prog, epochs);
    if (is_root && (prog->bar || prog->lines)) cr_model_print_layer_times(rs->model, stdout);
    int due = cfg->checkpoint.every_epochs > 0 && epochs % cfg->checkpoint.every_epochs == 0;
    if (!is_root) return;
    write_epoch_metrics(metrics, rec);
    write_confusion(cfg->log.dir, &test);
    if (rs->tensorboard) log_epoch_to_tensorboard(rs->tensorboard, rec);
    if (due || epochs == cfg->train.epochs) save_checkpoint(rs, epochs, step);
}

int cr_train(const cr_config *cfg) {
    run_state rs;
    setup(&rs, cfg, 1);
    int is_root = rs.comm->rank == 0;
    int steps_per_epoch = cr_loader_steps(rs.train_loader);
    catch_stop_signals(rs.comm);
    long step = resume(&rs);
    int done = (int)(step / steps_per_epoch), first_step = (int)(step % steps_per_epoch);
    FILE *metrics = is_root ? open_run_outputs(&rs, step) : NULL;
    progress prog = progress_for(cfg, rs.comm->rank);
    double start = cr_now_seconds(), best = 0.0;
    epoch_record rec = {0};
    int stopped = 0;
    for (int epoch = done; epoch < cfg->train.epochs && !stopped; epoch++, first_step = 0) {
        rec = train_epoch(&rs, epoch, first_step, &step, &prog, metrics, &stopped);
        share_running_stats(&rs);
        if (stopped) break;
        end_epoch(&rs, &rec, step, &prog, metrics);
        best = rec.test_acc > best ? rec.test_acc : best;
    }
    if (stopped) {
        if (is_root) {
            save_checkpoint(&rs, (int)(step / steps_per_epoch), step);
            printf("stopped by a signal after step %ld: checkpoint written, exit %d (requeue to "
                   "resume)\n",
                   step, CR_EXIT_PREEMPTED);
        }
        /* No rank may exit (and make the launcher kill the job) before the
         * checkpoint is on disk. */
        rs.comm->ops->barrier(rs.comm);
    }
    if (is_root) {
        if (rec.epoch > 0 && !stopped) write_summary(&rs, &rec, best, cr_now_seconds() - start);
        fclose(metrics);
        cr_tfevents_close(rs.tensorboard);
    }
    teardown(&rs);
    return stopped ? CR_EXIT_PREEMPTED : CR_EXIT_OK;
}

int cr_eval(const cr_config *cfg, const char *checkpoint_path) {
    run_state rs;
    setup(&rs, cfg, 0);
    cr_checkpoint_meta meta;
    char err[512];
    if (cr_checkpoint_load(checkpoint_path, rs.model, rs.be, &meta, err, sizeof err) != 0)
        cr_fatal(CR_EXIT_CHECKPOINT, checkpoint_path, "%s", err);
    tally t = evaluate(&rs);
    if (rs.comm->rank == 0) {
        printf("checkpoint %s (epoch %d)\n", checkpoint_path, meta.epoch);
        printf("test loss %.4f, test accuracy %.2f%% (%ld of %ld)\n", t.loss_sum / t.count,
               100.0 * t.correct / t.count, t.correct, t.count);
        printf("confusion (rows true, columns predicted):\n");
        for (int i = 0; i < CR_NUM_CLASSES; i++) {
            printf("%10s", class_names[i]);
            for (int k = 0; k < CR_NUM_CLASSES; k++) printf(" %5ld", t.confusion[i][k]);
            printf("\n");
        }
    }
    teardown(&rs);
    return CR_EXIT_OK;
}

/* Achieved FLOP rate (model FLOPs of convolutions and the linear layer:
 * divide by the device's peak for MFU) and memory: the device's, or this
 * process's peak resident set on the CPU. */
static void print_bench_compute(run_state *rs, double images_per_s) {
    cr_model_desc desc = cr_config_model(rs->cfg);
    double flops = cr_model_train_flops(&desc);
    char memory[96];
    if (rs->be->ops->device_memory_used) {
        snprintf(memory, sizeof memory, "device memory in use %.0f MiB",
                 rs->be->ops->device_memory_used(rs->be) / 1048576.0);
    } else {
        struct rusage usage;
        getrusage(RUSAGE_SELF, &usage);
        snprintf(memory, sizeof memory, "peak resident memory %.0f MiB (rank 0)",
                 usage.ru_maxrss / 1024.0);
    }
    printf("bench: %.4f GFLOP per training image (convolutions and linear layer), %.3f TFLOP/s, "
           "%s\n",
           flops * 1e-9, flops * images_per_s * 1e-12, memory);
}

int cr_bench(const cr_config *cfg, int steps, int warmup) {
    run_state rs;
    setup(&rs, cfg, 1);
    long step = 0;
    double start = cr_now_seconds();
    long images = 0;
    int epoch = 0;
    cr_batch b;
    cr_schedule_point sp;
    cr_loader_start(rs.train_loader, epoch, 0);
    while (step < warmup + steps) {
        if (!next_batch(&rs, rs.train_loader, &b)) {
            cr_loader_start(rs.train_loader, ++epoch, 0);
            continue;
        }
        if (step == warmup) {
            start = cr_now_seconds(), images = 0;
            phase_clock_reset(&rs.clock);
        }
        train_step(&rs, &b, step++, &sp);
        images += b.global_size;
    }
    rs.be->ops->synchronize(rs.be);
    double seconds = cr_now_seconds() - start;
    double comm_wait = rs.clock.seconds[PHASE_COMM]; /* since the warm-up's reset */
    if (rs.comm->rank == 0)
        printf("bench: model %s, global batch %d, %d ranks, %d steps after %d warm-up: "
               "%.1f images/s total, %.1f images/s per rank, %.2f ms/step, "
               "%.2f ms/step waiting on gradient all-reduce (%.1f%%)\n",
               cfg->model.arch, cfg->train.batch_size, rs.comm->world_size, steps, warmup,
               images / seconds, images / seconds / rs.comm->world_size, 1e3 * seconds / steps,
               1e3 * comm_wait / steps, 100.0 * comm_wait / seconds);
    if (rs.comm->rank == 0) print_bench_compute(&rs, images / seconds);
    progress lines = {.lines = rs.comm->rank == 0};
    report_phases(&rs, &lines, 0);
    teardown(&rs);
    return CR_EXIT_OK;
}
