/* config: defaults, the files in configs/, overrides of every type, the
 * written form reloading to the same struct, digests, and the exact error
 * messages (file:line:col, exit code 2), each error run in a child process
 * because errors exit.
 * Usage: test_config REPO_ROOT */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, fork, pipe */

#include "check.h"
#include "cresnet/config.h"
#include "cresnet/error.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp_dir[256];

/* Writes text to tmp_dir/name; returns the path (valid until the next call
 * with the same buffer). */
static const char *write_file(const char *name, const char *text, char *path, size_t len) {
    snprintf(path, len, "%s/%s", tmp_dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

static void load_text(const char *text, cr_config *cfg) {
    char path[512];
    cr_config_load(write_file("t.yaml", text, path, sizeof path), NULL, 0, cfg);
}

static void test_defaults(void) {
    cr_config c;
    cr_config_defaults(&c);
    CHECK(!strcmp(c.model.arch, "small") && c.model.num_widths == 0 && c.model.num_blocks == 0,
          "model");
    CHECK(c.data.dir[0] == '\0', "data.dir");
    CHECK(c.data.crop_padding == 2 && c.data.hflip == 1 && c.data.rotate_deg == 5.0f, "augment");
    CHECK(c.data.mean[0] == 0.4914f && c.data.mean[1] == 0.4822f && c.data.mean[2] == 0.4465f,
          "mean");
    CHECK(c.data.std[0] == 0.2470f && c.data.std[1] == 0.2435f && c.data.std[2] == 0.2616f, "std");
    CHECK(c.data.train_limit == 0 && c.data.num_threads == 0, "data");
    CHECK(c.train.epochs == 30 && c.train.batch_size == 128 && c.train.seed == 0, "train");
    CHECK(c.train.precision == CR_PRECISION_FP32 && !c.train.deterministic, "train");
    CHECK(!strcmp(c.optimizer.name, "sgd") && c.optimizer.lr == 0.01f, "optimizer");
    CHECK(c.optimizer.momentum == 0.9f && c.optimizer.nesterov == 1, "optimizer");
    CHECK(c.optimizer.weight_decay == 5e-4f, "weight_decay");
    CHECK(c.schedule.name == CR_SCHEDULE_CYCLIC && c.schedule.base_lr == 1e-6f, "schedule");
    CHECK(c.schedule.max_lr == 1e-2f && c.schedule.step_size_up == 2000, "schedule");
    CHECK(c.schedule.step_size_down == 0 && c.schedule.mode == CR_CYCLIC_TRIANGULAR, "schedule");
    CHECK(c.schedule.gamma == 1.0f && c.schedule.cycle_momentum == 1, "schedule");
    CHECK(c.schedule.base_momentum == 0.8f && c.schedule.max_momentum == 0.9f, "momentum");
    CHECK(c.dist.backend == CR_DIST_AUTO && c.dist.sync_bn && c.dist.bucket_mb == 25.0f &&
              c.dist.timeout_s == 600.0f,
          "dist");
    CHECK(c.device.type == CR_DEVICE_AUTO && !c.device.debug, "device");
    CHECK(c.checkpoint.dir[0] == '\0' && c.checkpoint.every_epochs == 1, "checkpoint");
    CHECK(c.checkpoint.keep == 3 && c.checkpoint.resume == CR_RESUME_AUTO, "checkpoint");
    CHECK(!strcmp(c.log.dir, "runs/default") && c.log.every_steps == 0, "log");
    CHECK(c.log.tensorboard == 1 && c.log.progress == CR_PROGRESS_AUTO, "log");
    cr_config_validate(&c, "defaults"); /* returns: the defaults are valid */
    cr_model_desc d = cr_config_model(&c);
    CHECK(d.num_stages == 3 && d.widths[2] == 64 && d.blocks[0] == 1, "model desc");
}

/* The report's recipe is the defaults: only the model and log.dir differ. */
static void test_recipe_files(const char *root) {
    const char *models[] = {"small", "medium", "large"};
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/configs/resnet_%s.yaml", root, models[i]);
        cr_config c, expect;
        cr_config_load(path, NULL, 0, &c);
        cr_config_defaults(&expect);
        strcpy(expect.model.arch, models[i]);
        snprintf(expect.log.dir, sizeof expect.log.dir, "runs/resnet_%s", models[i]);
        CHECK(memcmp(&c, &expect, sizeof c) == 0, "%s: defaults but arch and log.dir", path);
        cr_model_desc d = cr_config_model(&c);
        CHECK(d.num_stages == (i == 0 ? 3 : 4), "%s: stages", path);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/configs/debug.yaml", root);
    cr_config c;
    cr_config_load(path, NULL, 0, &c);
    CHECK(!strcmp(c.model.arch, "small") && c.data.train_limit == 2048, "debug");
    CHECK(c.train.epochs == 1 && c.device.debug == 1, "debug");
    CHECK(!strcmp(c.log.dir, "runs/debug") && c.log.every_steps == 10, "debug log");
}

/* The key paths of a YAML file laid out as cr_config_write and configs/
 * lay it out (two spaces a level, a key a line, `#` comments), into out as
 * "\nsection.key\nsection.other\n": a path is found whole by "\nPATH\n". */
static void key_paths(FILE *in, char *out, size_t len) {
    char line[512], sections[4][64];
    size_t used = (size_t)snprintf(out, len, "\n");
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "#\n")] = '\0';
        int depth = (int)strspn(line, " ") / 2;
        char *name = line + 2 * depth, *colon = strchr(name, ':');
        if (!colon || depth >= 4) continue;
        snprintf(sections[depth], sizeof sections[depth], "%.*s", (int)(colon - name), name);
        if (colon[1 + strspn(colon + 1, " ")] == '\0') continue; /* a section: keys follow */
        for (int d = 0; d <= depth && used < len; d++)
            used += (size_t)snprintf(out + used, len - used, "%s%s", sections[d],
                                     d == depth ? "\n" : ".");
    }
}

/* configs/resnet_*.yaml say they list every key: each key the trainer
 * writes into a run's config.yaml is there. */
static void test_recipe_files_list_every_key(const char *root) {
    static char written[8192], listed[8192];
    cr_config defaults;
    cr_config_defaults(&defaults);
    FILE *f = tmpfile();
    CHECK(f != NULL, "tmpfile");
    if (!f) return;
    cr_config_write(&defaults, f);
    rewind(f);
    key_paths(f, written, sizeof written);
    fclose(f);
    CHECK(strstr(written, "\ntrain.epochs\n") && strstr(written, "\ndata.augment.hflip\n"),
          "written keys: %.200s", written);
    const char *models[] = {"small", "medium", "large"};
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/configs/resnet_%s.yaml", root, models[i]);
        FILE *in = fopen(path, "r");
        CHECK(in != NULL, "open %s", path);
        if (!in) continue;
        key_paths(in, listed, sizeof listed);
        fclose(in);
        for (char *key = written, *end; (end = strchr(key + 1, '\n')); key = end) {
            char wanted[128];
            snprintf(wanted, sizeof wanted, "%.*s", (int)(end - key + 1), key);
            CHECK(strstr(listed, wanted) != NULL, "%s lacks %.*s", path, (int)(end - key - 1),
                  key + 1);
        }
    }
}

/* Whatever else lands in configs/ must load too. */
static void test_all_files(const char *root) {
    char dir_path[512];
    snprintf(dir_path, sizeof dir_path, "%s/configs", root);
    DIR *dir = opendir(dir_path);
    CHECK(dir != NULL, "open %s", dir_path);
    if (!dir) return;
    int count = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".yaml")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir_path, e->d_name);
        cr_config c;
        cr_config_load(path, NULL, 0, &c); /* exits on any error */
        count++;
    }
    closedir(dir);
    CHECK(count >= 4, "%d config files", count);
}

static void test_yaml_forms(void) {
    cr_config c;
    /* block lists, flow mappings, nested sections, comments, an empty
     * section, quoted numbers, null strings */
    load_text("model:\n  arch: custom\n  widths:\n    - 8\n    - 16\n  blocks: [2, 1]\n"
              "data: {dir: /x, augment: {hflip: False, rotate_deg: 0}}\n"
              "train:\n  # nothing\n"
              "optimizer: ~\n"
              "schedule:\n  max_lr: '0.5'\n  step_size_up: +10\n"
              "checkpoint:\n  dir:\n",
              &c);
    CHECK(c.model.num_widths == 2 && c.model.widths[1] == 16, "block list");
    CHECK(c.model.num_blocks == 2 && c.model.blocks[0] == 2, "flow list");
    CHECK(!strcmp(c.data.dir, "/x") && c.data.hflip == 0 && c.data.rotate_deg == 0, "flow map");
    CHECK(c.schedule.max_lr == 0.5f && c.schedule.step_size_up == 10, "quoted, signed");
    CHECK(c.checkpoint.dir[0] == '\0', "null string");
    cr_model_desc d = cr_config_model(&c);
    CHECK(d.num_stages == 2 && d.widths[0] == 8 && d.blocks[0] == 2, "custom desc");

    load_text("", &c); /* an empty file is the defaults */
    cr_config expect;
    cr_config_defaults(&expect);
    CHECK(memcmp(&c, &expect, sizeof c) == 0, "empty file");
}

static void test_overrides(void) {
    cr_config c;
    cr_config_defaults(&c);
    cr_config_override(&c, "train.epochs=5");
    CHECK(c.train.epochs == 5, "int");
    cr_config_override(&c, "train.seed=18446744073709551615");
    CHECK(c.train.seed == UINT64_MAX, "u64");
    cr_config_override(&c, "schedule.max_lr=0.1");
    CHECK(c.schedule.max_lr == 0.1f, "float");
    cr_config_override(&c, "optimizer.weight_decay=1e-3");
    CHECK(c.optimizer.weight_decay == 1e-3f, "float with exponent");
    cr_config_override(&c, "data.augment.hflip=false");
    CHECK(c.data.hflip == 0, "bool");
    cr_config_override(&c, "data.dir=/tmp/cifar data");
    CHECK(!strcmp(c.data.dir, "/tmp/cifar data"), "string");
    cr_config_override(&c, "log.dir='runs/a: b'");
    CHECK(!strcmp(c.log.dir, "runs/a: b"), "quoted string");
    cr_config_override(&c, "data.dir=");
    CHECK(c.data.dir[0] == '\0', "empty string");
    cr_config_override(&c, "model.arch=medium");
    CHECK(!strcmp(c.model.arch, "medium"), "name");
    cr_config_override(&c, "schedule.mode=exp_range");
    CHECK(c.schedule.mode == CR_CYCLIC_EXP_RANGE, "enum");
    cr_config_override(&c, "log.progress=off");
    CHECK(c.log.progress == CR_PROGRESS_OFF, "enum");
    cr_config_override(&c, "model.arch=custom");
    cr_config_override(&c, "model.widths=[8, 16, 32]");
    cr_config_override(&c, "model.blocks=[1,2,3]");
    CHECK(c.model.num_widths == 3 && c.model.widths[2] == 32, "int list");
    CHECK(c.model.num_blocks == 3 && c.model.blocks[1] == 2, "int list");
    cr_config_override(&c, "model.blocks=[]");
    CHECK(c.model.num_blocks == 0 && c.model.blocks[1] == 0, "empty list clears");
    cr_config_override(&c, "data.mean=[0.5, 0.25, 0.125]");
    CHECK(c.data.mean[0] == 0.5f && c.data.mean[2] == 0.125f, "float3");
    cr_config_override(&c, "checkpoint.resume=none");
    CHECK(c.checkpoint.resume == CR_RESUME_NONE, "resume none");
    cr_config_override(&c, "checkpoint.resume=runs/x/checkpoints/epoch_3.safetensors");
    CHECK(c.checkpoint.resume == CR_RESUME_PATH &&
              !strcmp(c.checkpoint.resume_path, "runs/x/checkpoints/epoch_3.safetensors"),
          "resume path");
    cr_config_override(&c, "checkpoint.resume=auto");
    CHECK(c.checkpoint.resume == CR_RESUME_AUTO && c.checkpoint.resume_path[0] == '\0',
          "resume auto clears the path");
    cr_config_override(&c, "device={type: cuda, debug: true}");
    CHECK(c.device.type == CR_DEVICE_CUDA && c.device.debug == 1, "a section as a mapping");
    cr_config_validate(&c, "test");

    /* overrides win over the file, in order */
    char path[512];
    const char *overrides[] = {"train.epochs=7", "train.epochs=8", "train.batch_size=64"};
    cr_config_load(write_file("o.yaml", "train:\n  epochs: 3\n", path, sizeof path), overrides, 3,
                   &c);
    CHECK(c.train.epochs == 8 && c.train.batch_size == 64, "file then overrides");
    cr_config_load(NULL, overrides, 1, &c);
    CHECK(c.train.epochs == 7, "overrides without a file");
}

/* A config far from the defaults, with awkward strings and floats. */
static void unusual_config(cr_config *c) {
    cr_config_defaults(c);
    strcpy(c->model.arch, "custom");
    int widths[] = {8, 24, 4096, 1}, blocks[] = {3, 1, 64, 2};
    c->model.num_widths = c->model.num_blocks = 4;
    memcpy(c->model.widths, widths, sizeof widths);
    memcpy(c->model.blocks, blocks, sizeof blocks);
    strcpy(c->data.dir, "/data/\"quoted\" \\back\\slash: #not a comment\t\xc3\xa9");
    c->data.crop_padding = 0;
    c->data.hflip = 0;
    c->data.rotate_deg = 1.0f / 3.0f;
    c->data.mean[0] = -0.0f;
    c->data.mean[1] = 1e-30f;
    c->data.mean[2] = 3.4028235e38f;
    c->data.std[0] = 1e-38f;
    c->data.std[1] = 0.1f + 0.2f;
    c->data.std[2] = 7.0f;
    c->data.train_limit = 2147483647;
    c->data.num_threads = 3;
    c->train.epochs = 1;
    c->train.batch_size = 1000;
    c->train.seed = 12345678901234567890ull;
    c->train.precision = CR_PRECISION_BF16;
    c->train.deterministic = 1;
    c->optimizer.lr = 0.123456789f;
    c->optimizer.momentum = 0.0f;
    c->optimizer.nesterov = 0;
    c->optimizer.weight_decay = 0.0f;
    c->schedule.name = CR_SCHEDULE_ONECYCLE;
    c->schedule.base_lr = 2.5e-7f;
    c->schedule.max_lr = 1.0f;
    c->schedule.step_size_up = 1;
    c->schedule.step_size_down = 99;
    c->schedule.mode = CR_CYCLIC_TRIANGULAR2;
    c->schedule.gamma = 0.99994f;
    c->schedule.cycle_momentum = 0;
    c->schedule.base_momentum = 0.95f;
    c->schedule.max_momentum = 0.85f;
    c->dist.backend = CR_DIST_NCCL;
    c->dist.sync_bn = 0;
    c->dist.bucket_mb = 0.5f;
    c->dist.timeout_s = 30.5f;
    c->device.type = CR_DEVICE_CUDA;
    c->device.debug = 1;
    strcpy(c->checkpoint.dir, "");
    c->checkpoint.every_epochs = 0;
    c->checkpoint.keep = 1;
    c->checkpoint.resume = CR_RESUME_PATH;
    strcpy(c->checkpoint.resume_path, "none.safetensors");
    strcpy(c->log.dir, "'single' [brackets] {braces}");
    c->log.every_steps = 10;
    c->log.tensorboard = 0;
    c->log.progress = CR_PROGRESS_LINES;
}

static void round_trip(const cr_config *c, const char *what) {
    char path[512];
    snprintf(path, sizeof path, "%s/written.yaml", tmp_dir);
    FILE *f = fopen(path, "w");
    cr_config_write(c, f);
    fclose(f);
    cr_config back;
    cr_config_load(path, NULL, 0, &back);
    CHECK(memcmp(c, &back, sizeof back) == 0, "%s: write then load gives the same struct", what);
    CHECK(cr_config_digest(c) == cr_config_digest(&back), "%s: same digest", what);
}

static void test_round_trip(void) {
    cr_config c;
    cr_config_defaults(&c);
    round_trip(&c, "defaults");
    unusual_config(&c);
    cr_config_validate(&c, "test");
    round_trip(&c, "unusual");

    /* the written form shows floats as written, not as 0.000500000024 */
    cr_config_defaults(&c);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    cr_config_write(&c, mem);
    fclose(mem);
    CHECK(strstr(text, "  weight_decay: 0.0005\n") != NULL, "shortest float");
    CHECK(strstr(text, "  mean: [0.4914, 0.4822, 0.4465]\n") != NULL, "float list");
    CHECK(strstr(text, "data:\n  dir: \"\"\n  augment:\n    crop_padding: 2\n") != NULL,
          "nested section");
    CHECK(strstr(text, "  widths: []\n") != NULL, "empty list");
    CHECK(strncmp(text, "model:\n  arch: small\n", 21) == 0, "starts with model");
    free(text);
}

static void test_digest(void) {
    cr_config a, b;
    cr_config_defaults(&a);
    cr_config_defaults(&b);
    CHECK(cr_config_digest(&a) == cr_config_digest(&b), "equal configs, equal digests");
    b.train.epochs = 31;
    CHECK(cr_config_digest(&a) != cr_config_digest(&b), "epochs changes the digest");
    cr_config_defaults(&b);
    b.data.std[2] = nextafterf(b.data.std[2], 1.0f);
    CHECK(cr_config_digest(&a) != cr_config_digest(&b), "one float ulp changes the digest");
    /* Where the run writes and how it is watched are not the computation. */
    cr_config_defaults(&b);
    strcpy(b.log.dir, "elsewhere");
    strcpy(b.data.dir, "/data/cifar");
    b.checkpoint.resume = CR_RESUME_NONE;
    b.log.every_steps = 7;
    b.device.debug = 1;
    CHECK(cr_config_digest(&a) == cr_config_digest(&b), "run-only keys leave the digest alone");
    b.dist.sync_bn = !b.dist.sync_bn;
    CHECK(cr_config_digest(&a) != cr_config_digest(&b), "dist.sync_bn changes the digest");
}

/* ------------------------------------------------------------------------
 * Errors: each in a child, checking exit code 2 and the start of stderr. */

static void expect_error_n(const char *file, const char *const *overrides, int num_overrides,
                           const char *expected) {
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        exit(1);
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        cr_config c;
        cr_config_load(file, overrides, num_overrides, &c);
        _exit(0); /* no error: the parent reports it */
    }
    close(fds[1]);
    char got[2048];
    size_t n = 0;
    for (ssize_t r; n + 1 < sizeof got && (r = read(fds[0], got + n, sizeof got - 1 - n)) > 0;)
        n += (size_t)r;
    got[n] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2, "exit code %d for '%s'",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1, expected);
    CHECK(strncmp(got, expected, strlen(expected)) == 0, "\n  expected: %s\n  got:      %s",
          expected, got);
    CHECK(n > 0 && got[n - 1] == '\n' && strchr(got, '\n') == got + n - 1, "one line: %s", got);
}

/* The file of `text`, loaded, must fail with "cresnet: error: FILE:" + rest. */
static void expect_error(const char *file, const char *override, const char *expected) {
    expect_error_n(file, override ? &override : NULL, override ? 1 : 0, expected);
}

static void expect_file_error(const char *text, const char *override, const char *rest) {
    char path[512], expected[1024];
    write_file("bad.yaml", text, path, sizeof path);
    snprintf(expected, sizeof expected, "cresnet: error: %s:%s", path, rest);
    expect_error(path, override, expected);
}

static void test_errors(void) {
    expect_file_error("model:\n  widht: [16]\n", NULL,
                      "2:3: model.widht: unknown key (did you mean model.widths?)");
    expect_file_error("train:\n  lr: 0.1\n", NULL,
                      "2:3: train.lr: unknown key (did you mean optimizer.lr?)");
    expect_file_error("modle:\n  arch: small\n", NULL,
                      "1:1: modle: unknown key (did you mean model?)");
    expect_file_error("train:\n  epochs: abc\n", NULL,
                      "2:11: train.epochs: expected an integer >= 1, got 'abc'");
    expect_file_error("train:\n  epochs: 2.5\n", NULL,
                      "2:11: train.epochs: expected an integer >= 1, got '2.5'");
    expect_file_error("train:\n  epochs: [1]\n", NULL,
                      "2:11: train.epochs: expected an integer >= 1, got a list");
    expect_file_error("train:\n  seed: -1\n", NULL,
                      "2:9: train.seed: expected an integer in 0..18446744073709551615, got '-1'");
    expect_file_error("data:\n  augment:\n    hflip: yes\n", NULL,
                      "3:12: data.augment.hflip: expected true or false, got 'yes'");
    expect_file_error("data:\n  augment:\n    rotate_deg: 200\n", NULL,
                      "3:17: data.augment.rotate_deg: expected a number in 0..180, got '200'");
    expect_file_error("data:\n  std: [0.2, 0, 0.2]\n", NULL,
                      "2:14: data.std: expected a number > 0, got '0'");
    expect_file_error("data:\n  mean: [0.5, 0.5]\n", NULL,
                      "2:9: data.mean: expected a list of 3 numbers (one per channel), got 2 "
                      "entries");
    expect_file_error("optimizer:\n  lr: nan\n", NULL,
                      "2:7: optimizer.lr: expected a number >= 0, got 'nan'");
    expect_file_error("optimizer:\n  lr: 1e39\n", NULL,
                      "2:7: optimizer.lr: expected a number >= 0, got '1e39'");
    expect_file_error("schedule:\n  gamma: 0\n", NULL,
                      "2:10: schedule.gamma: expected a number > 0 and <= 1, got '0'");
    expect_file_error("schedule:\n  mode: foo\n", NULL,
                      "2:9: schedule.mode: expected one of triangular, triangular2, exp_range, "
                      "got 'foo'");
    expect_file_error("model:\n  arch: tiny\n", NULL,
                      "2:9: model.arch: expected one of small, medium, large, custom, got 'tiny'");
    expect_file_error("model:\n  widths: [16, 32\n", NULL,
                      "3:1: malformed YAML: did not find expected ',' or ']' (while parsing a "
                      "flow sequence at line 2, column 11)");
    expect_file_error("train:\n  epochs: 3\n  batch_size: 8\n  epochs: 4\n", NULL,
                      "4:3: train.epochs: duplicate key (first at line 2)");
    expect_file_error("model: small\n", NULL,
                      "1:8: model: expected a mapping (the model.* keys), "
                      "got 'small'");
    expect_file_error("- model\n", NULL,
                      "1:1: expected a mapping of sections (model, data, train, ...), got a list");
    expect_file_error("train: {}\n---\ntrain: {}\n", NULL,
                      "3:1: expected one YAML document, found another");
    expect_file_error("model:\n  arch: custom\n  widths: [16, 32]\n  blocks: [1]\n", NULL,
                      "4:11: model: blocks has 1 entries but widths has 2");
    expect_file_error("model:\n  arch: custom\n", NULL,
                      "2:9: model: custom model needs 1 to 8 widths, got 0");
    expect_file_error("model:\n  widths: [16, 0]\n", NULL,
                      "2:16: model.widths: expected an integer in 1..4096, got '0'");
    expect_file_error("model:\n  widths: [1, 2, 3, 4, 5, 6, 7, 8, 9]\n", NULL,
                      "2:11: model.widths: expected at most 8 entries, got 9");
    expect_file_error("model:\n  widths: [16, 32]\n", NULL,
                      "2:11: model.widths: only used with model.arch custom (arch is small)");
    expect_file_error("train:\n  precision: tf32\ndevice:\n  type: cpu\n", NULL,
                      "2:14: train.precision: tf32 needs device.type cuda (device.type is cpu)");
    expect_file_error("schedule:\n  base_lr: 0.1\n  max_lr: 0.01\n", NULL,
                      "3:11: schedule.max_lr: must be >= schedule.base_lr (0.100000001), got "
                      "0.00999999978");
    /* a check between two keys points at the one the user set */
    expect_file_error("optimizer:\n  momentum: 0\n", NULL,
                      "2:13: optimizer.nesterov: needs optimizer.momentum > 0");
    expect_file_error("schedule:\n  base_lr: 0.5\n", NULL,
                      "2:12: schedule.max_lr: must be >= schedule.base_lr (0.5), got "
                      "0.00999999978");
    expect_file_error("checkpoint:\n  resume: ''\n", NULL,
                      "2:11: checkpoint.resume: expected auto, none or a checkpoint path, got ''");

    /* a file and an override make the cross-key error: WHERE is the key set
     * last, the override */
    static const struct {
        const char *file, *override, *expected;
    } crossed[] = {
        {"device:\n  type: cpu\n", "train.precision=tf32",
         "-o train.precision: train.precision: tf32 needs device.type cuda (device.type is cpu)"},
        {"train:\n  precision: tf32\n", "device.type=cpu",
         "-o device.type: train.precision: tf32 needs device.type cuda (device.type is cpu)"},
        {"device:\n  type: cpu\n", "dist.backend=nccl",
         "-o dist.backend: dist.backend: nccl needs device.type cuda (device.type is cpu)"},
        {"model:\n  arch: small\n  widths: []\n  blocks: []\n", "model.arch=custom",
         "-o model.arch: model: custom model needs 1 to 8 widths, got 0"},
        {"model:\n  arch: custom\n  widths: [8, 16]\n", "model.arch=small",
         "-o model.arch: model.widths: only used with model.arch custom (arch is small)"},
        {"schedule:\n  name: constant\n  base_lr: 0.5\n", "schedule.name=cyclic",
         "-o schedule.name: schedule.max_lr: must be >= schedule.base_lr (0.5), got "
         "0.00999999978"},
    };
    for (size_t i = 0; i < sizeof crossed / sizeof crossed[0]; i++) {
        char path[512], expected[512];
        write_file("crossed.yaml", crossed[i].file, path, sizeof path);
        snprintf(expected, sizeof expected, "cresnet: error: %s", crossed[i].expected);
        expect_error(path, crossed[i].override, expected);
    }
    /* of two overrides, the later */
    const char *nesterov_last[] = {"optimizer.momentum=0", "optimizer.nesterov=true"};
    expect_error_n(NULL, nesterov_last, 2,
                   "cresnet: error: -o optimizer.nesterov: optimizer.nesterov: needs "
                   "optimizer.momentum > 0");
    const char *momentum_last[] = {"optimizer.nesterov=true", "optimizer.momentum=0"};
    expect_error_n(NULL, momentum_last, 2,
                   "cresnet: error: -o optimizer.momentum: optimizer.nesterov: needs "
                   "optimizer.momentum > 0");

    expect_error(NULL, "train.epochs", "cresnet: error: -o train.epochs: expected key.path=value");
    expect_error(NULL, "=5", "cresnet: error: -o : expected key.path=value");
    expect_error(NULL, "train.epoch=3",
                 "cresnet: error: -o train.epoch: train.epoch: unknown key (did you mean "
                 "train.epochs?)");
    expect_error(NULL, "zzz=1", "cresnet: error: -o zzz: zzz: unknown key\n");
    expect_error(NULL, "train.epochs=0",
                 "cresnet: error: -o train.epochs: train.epochs: expected an integer >= 1, got "
                 "'0'");
    expect_error(NULL, "model.widths=16",
                 "cresnet: error: -o model.widths: model.widths: expected a list of integers in "
                 "1..4096, got '16'");
    expect_error(NULL, "model.widths=[16,",
                 "cresnet: error: -o model.widths: malformed YAML: did not find expected node "
                 "content");
    expect_error(NULL, "model.arch=custom",
                 "cresnet: error: -o model.arch: model: custom model needs 1 to 8 widths, got 0");

    char path[512], expected[1024];
    snprintf(path, sizeof path, "%s/missing.yaml", tmp_dir);
    snprintf(expected, sizeof expected,
             "cresnet: error: %s: cannot open: No such file or directory", path);
    expect_error(path, NULL, expected);
    snprintf(expected, sizeof expected, "cresnet: error: %s: cannot open: Is a directory", tmp_dir);
    expect_error(tmp_dir, NULL, expected);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_config REPO_ROOT\n");
        return 2;
    }
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_config_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_defaults();
    test_recipe_files(argv[1]);
    test_recipe_files_list_every_key(argv[1]);
    test_all_files(argv[1]);
    test_yaml_forms();
    test_overrides();
    test_round_trip();
    test_digest();
    test_errors();

    const char *names[] = {"t.yaml", "o.yaml", "written.yaml", "bad.yaml", "crossed.yaml"};
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", tmp_dir, names[i]);
        remove(path);
    }
    rmdir(tmp_dir);
    return check_finish();
}
