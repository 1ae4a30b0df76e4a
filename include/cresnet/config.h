/* config: the YAML file that drives a run, as one typed struct.
 *
 * cr_config_load parses a file with libyaml into cr_config, starting from
 * the defaults (cr_config_defaults, the same values as SPEC and configs/),
 * then applies `-o a.b=value` overrides with the same checks. Every problem
 * (malformed YAML, unknown key, wrong type, value out of range) is exit 2
 * with `cresnet: error: FILE:LINE:COL: KEY: WHAT` (overrides: WHERE is
 * `-o KEY`). cr_config_write emits the resolved config as YAML that loads
 * back to the same struct, and cr_config_digest hashes it (ranks compare
 * digests; checkpoints record it).
 * Not here: what the values mean to the trainer; paths are not checked for
 * existence. */
#ifndef CRESNET_CONFIG_H
#define CRESNET_CONFIG_H

#include "cresnet/model.h"

#include <stdint.h>
#include <stdio.h>

enum { CR_PATH_MAX = 1024 };

typedef enum { CR_PRECISION_FP32, CR_PRECISION_TF32, CR_PRECISION_BF16 } cr_precision;
typedef enum {
    CR_SCHEDULE_CYCLIC,
    CR_SCHEDULE_ONECYCLE,
    CR_SCHEDULE_COSINE,
    CR_SCHEDULE_CONSTANT
} cr_schedule_name;
typedef enum { CR_CYCLIC_TRIANGULAR, CR_CYCLIC_TRIANGULAR2, CR_CYCLIC_EXP_RANGE } cr_cyclic_mode;
typedef enum { CR_DIST_AUTO, CR_DIST_NONE, CR_DIST_MPI, CR_DIST_NCCL } cr_dist_backend;
typedef enum { CR_DEVICE_AUTO, CR_DEVICE_CPU, CR_DEVICE_CUDA } cr_device_type;
typedef enum { CR_RESUME_AUTO, CR_RESUME_NONE, CR_RESUME_PATH } cr_resume_mode;
/* data.on_device: the uint8 images in the backend's memory, augmented there. */
typedef enum { CR_ON_DEVICE_AUTO, CR_ON_DEVICE_TRUE, CR_ON_DEVICE_FALSE } cr_on_device;
typedef enum { CR_PROGRESS_AUTO, CR_PROGRESS_BAR, CR_PROGRESS_LINES, CR_PROGRESS_OFF } cr_progress;

typedef struct {
    struct {
        char arch[16]; /* small | medium | large | custom */
        int num_widths, widths[CR_MAX_STAGES];
        int num_blocks, blocks[CR_MAX_STAGES];
    } model;
    struct {
        char dir[CR_PATH_MAX]; /* "" = $CRESNET_DATA, else ./data/cifar-10-batches-bin */
        int crop_padding;      /* >= 0 */
        int hflip;             /* bool */
        float rotate_deg;      /* 0..180 */
        float mean[3], std[3]; /* std > 0 */
        int train_limit;       /* 0 = all */
        int num_threads;       /* loader threads, 0 = automatic */
        cr_on_device on_device;
    } data;
    struct {
        int epochs;     /* >= 1 */
        int batch_size; /* global, >= 1 */
        uint64_t seed;
        cr_precision precision;
        int deterministic;
        int inject_nan_step; /* debug: the loss of this global step (from 1) is NaN; 0 = off */
    } train;
    struct {
        char name[16]; /* sgd */
        float lr, momentum;
        int nesterov;
        float weight_decay;
    } optimizer;
    struct {
        cr_schedule_name name;
        float base_lr, max_lr;
        int step_size_up;
        int step_size_down; /* 0 = step_size_up, as PyTorch's None */
        cr_cyclic_mode mode;
        float gamma; /* exp_range */
        int cycle_momentum;
        float base_momentum, max_momentum;
    } schedule;
    struct {
        cr_dist_backend backend;
        int sync_bn;
        float bucket_mb; /* > 0 */
        float timeout_s; /* longest wait for the other ranks before giving up */
    } dist;
    struct {
        cr_device_type type;
        int debug;
        int graphs;   /* record the training step once, replay it (CUDA graphs) */
        int autotune; /* time cuDNN's engines per convolution plan, keep the fastest */
    } device;
    struct {
        char dir[CR_PATH_MAX]; /* "" = <log.dir>/checkpoints */
        int every_epochs;      /* 0 = only at the end */
        int keep;              /* >= 1 */
        cr_resume_mode resume;
        char resume_path[CR_PATH_MAX];
    } checkpoint;
    struct {
        char dir[CR_PATH_MAX];
        int every_steps; /* 0 = per epoch only */
        int tensorboard;
        cr_progress progress;
        char timeline[CR_PATH_MAX]; /* "" = off; else a Chrome trace per rank */
    } log;
} cr_config;

void cr_config_defaults(cr_config *cfg);
/* Loads path over the defaults, then the overrides ("key.path=value").
 * Exits with code 2 and SPEC's message on any error. */
void cr_config_load(const char *path, const char *const *overrides, int num_overrides,
                    cr_config *cfg);
/* Applies one "key.path=value" override; exits 2 on error. */
void cr_config_override(cr_config *cfg, const char *assignment);
/* Cross-key checks (e.g. custom widths and blocks form a valid model). */
void cr_config_validate(const cr_config *cfg, const char *where);
void cr_config_write(const cr_config *cfg, FILE *out);
/* FNV-1a 64 of every key that shapes the computation (all but log.*,
 * checkpoint.*, data.dir, data.num_threads, data.on_device, device.debug,
 * device.graphs, device.autotune): equal training,
 * equal digests, wherever its files go. */
uint64_t cr_config_digest(const cr_config *cfg);
/* The model description of cfg->model. Exits 2 if invalid. */
cr_model_desc cr_config_model(const cr_config *cfg);

#endif
