/* test_schedule: cr_schedule_at against PyTorch's schedulers, step by step
 * (fixture from tests/optim/make_schedule_fixture.py, path as argv[1]), and
 * a few values worked out by hand. */
#include "check.h"
#include "cresnet/optim.h"

#include <stdlib.h>
#include <string.h>

enum { LINE_MAX_LEN = 1024 };

/* 1e-9 relative; an absolute 1e-15 near zero (cosine to eta_min 0). */
static const double TOL = 1e-9, FLOOR = 1e-6;

typedef struct {
    char name[64];
    long total;
} fixture_case;

static double max_rel_error;
static long values_seen, values_identical;

static void note_error(double got, double want) {
    double scale = fmax(fmax(fabs(got), fabs(want)), FLOOR);
    max_rel_error = fmax(max_rel_error, fabs(got - want) / scale);
    values_seen++;
    values_identical += got == want;
}

/* Sets one `key=value` of a case header; returns 0 for an unknown key. */
static int set_param(cr_config *cfg, fixture_case *c, const char *key, const char *value) {
    float f = (float)strtod(value, NULL);
    int i = atoi(value);
    if (!strcmp(key, "schedule")) {
        if (!strcmp(value, "cyclic"))
            cfg->schedule.name = CR_SCHEDULE_CYCLIC;
        else if (!strcmp(value, "onecycle"))
            cfg->schedule.name = CR_SCHEDULE_ONECYCLE;
        else if (!strcmp(value, "cosine"))
            cfg->schedule.name = CR_SCHEDULE_COSINE;
        else if (!strcmp(value, "constant"))
            cfg->schedule.name = CR_SCHEDULE_CONSTANT;
        else
            return 0;
    } else if (!strcmp(key, "mode")) {
        if (!strcmp(value, "triangular"))
            cfg->schedule.mode = CR_CYCLIC_TRIANGULAR;
        else if (!strcmp(value, "triangular2"))
            cfg->schedule.mode = CR_CYCLIC_TRIANGULAR2;
        else if (!strcmp(value, "exp_range"))
            cfg->schedule.mode = CR_CYCLIC_EXP_RANGE;
        else
            return 0;
    } else if (!strcmp(key, "total"))
        c->total = atol(value);
    else if (!strcmp(key, "opt_lr"))
        cfg->optimizer.lr = f;
    else if (!strcmp(key, "opt_momentum"))
        cfg->optimizer.momentum = f;
    else if (!strcmp(key, "base_lr"))
        cfg->schedule.base_lr = f;
    else if (!strcmp(key, "max_lr"))
        cfg->schedule.max_lr = f;
    else if (!strcmp(key, "up"))
        cfg->schedule.step_size_up = i;
    else if (!strcmp(key, "down"))
        cfg->schedule.step_size_down = i;
    else if (!strcmp(key, "gamma"))
        cfg->schedule.gamma = f;
    else if (!strcmp(key, "cycle_momentum"))
        cfg->schedule.cycle_momentum = i;
    else if (!strcmp(key, "base_momentum"))
        cfg->schedule.base_momentum = f;
    else if (!strcmp(key, "max_momentum"))
        cfg->schedule.max_momentum = f;
    else
        return 0;
    return 1;
}

/* "case NAME key=value ..." -> a fresh config (fields not named stay 0). */
static void parse_header(char *line, cr_config *cfg, fixture_case *c) {
    memset(cfg, 0, sizeof *cfg);
    memset(c, 0, sizeof *c);
    strtok(line, " \n"); /* "case" */
    const char *name = strtok(NULL, " \n");
    snprintf(c->name, sizeof c->name, "%s", name ? name : "?");
    for (char *tok = strtok(NULL, " \n"); tok; tok = strtok(NULL, " \n")) {
        char *eq = strchr(tok, '=');
        CHECK(eq != NULL, "%s: token %s", c->name, tok);
        if (!eq) continue;
        *eq = '\0';
        CHECK(set_param(cfg, c, tok, eq + 1), "%s: unknown %s=%s", c->name, tok, eq + 1);
    }
}

static void check_point(const cr_config *cfg, const fixture_case *c, long step, double lr,
                        double momentum) {
    cr_schedule_point p = cr_schedule_at(cfg, step, c->total);
    note_error(p.lr, lr);
    note_error(p.momentum, momentum);
    CHECK(close_enough(p.lr, lr, TOL, FLOOR), "%s step %ld lr %.17g vs torch %.17g", c->name, step,
          p.lr, lr);
    CHECK(close_enough(p.momentum, momentum, TOL, FLOOR),
          "%s step %ld momentum %.17g vs torch %.17g", c->name, step, p.momentum, momentum);
}

static void run_fixture(const char *path) {
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    char line[LINE_MAX_LEN];
    cr_config cfg;
    fixture_case c = {"", 0};
    int cases = 0;
    long points = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (!strncmp(line, "case ", 5)) {
            parse_header(line, &cfg, &c);
            cases++;
            continue;
        }
        long step;
        double lr, momentum;
        int ok = cases > 0 && sscanf(line, "%ld %lf %lf", &step, &lr, &momentum) == 3;
        CHECK(ok, "bad fixture line: %s", line);
        if (!ok) continue;
        check_point(&cfg, &c, step, lr, momentum);
        points++;
    }
    fclose(f);
    CHECK(cases >= 13 && points > 1000, "fixture has %d cases, %ld points", cases, points);
    printf("fixture: %d cases, %ld steps, max relative error %.3g, %ld of %ld values identical\n",
           cases, points, max_rel_error, values_identical, values_seen);
}

/* A cyclic config: base 0.001, max 0.01, momentum 0.9 -> 0.8. */
static cr_config cyclic_config(cr_cyclic_mode mode, int up, int down) {
    cr_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.optimizer.lr = 0.5f;
    cfg.optimizer.momentum = 0.7f;
    cfg.schedule.name = CR_SCHEDULE_CYCLIC;
    cfg.schedule.mode = mode;
    cfg.schedule.base_lr = 0.001f;
    cfg.schedule.max_lr = 0.01f;
    cfg.schedule.step_size_up = up;
    cfg.schedule.step_size_down = down;
    cfg.schedule.gamma = 1.0f;
    cfg.schedule.cycle_momentum = 1;
    cfg.schedule.base_momentum = 0.8f;
    cfg.schedule.max_momentum = 0.9f;
    return cfg;
}

#define CHECK_POINT(cfg, step, total, want_lr, want_m)                                             \
    do {                                                                                           \
        cr_schedule_point p_ = cr_schedule_at(&(cfg), (step), (total));                            \
        CHECK_CLOSE(p_.lr, (want_lr), 1e-12, 1e-9, "lr at step " #step);                           \
        CHECK_CLOSE(p_.momentum, (want_m), 1e-12, 1e-9, "momentum at step " #step);                \
    } while (0)

static void check_by_hand(void) {
    /* Triangular, 100 up and 100 down: base at cycle starts, max at peaks. */
    cr_config tri = cyclic_config(CR_CYCLIC_TRIANGULAR, 100, 0);
    CHECK_POINT(tri, 0, 1000, 0.001, 0.9);
    CHECK_POINT(tri, 50, 1000, 0.0055, 0.85);
    CHECK_POINT(tri, 100, 1000, 0.01, 0.8);
    CHECK_POINT(tri, 150, 1000, 0.0055, 0.85);
    CHECK_POINT(tri, 200, 1000, 0.001, 0.9);
    CHECK_POINT(tri, 300, 1000, 0.01, 0.8);

    /* The decimals of the config come back exactly, not as widened floats. */
    cr_schedule_point p0 = cr_schedule_at(&tri, 0, 1000);
    CHECK(p0.lr == 0.001 && p0.momentum == 0.9, "%.17g %.17g", p0.lr, p0.momentum);

    /* Without momentum cycling the optimizer's momentum stays. */
    tri.schedule.cycle_momentum = 0;
    CHECK_POINT(tri, 100, 1000, 0.01, 0.7);

    /* Triangular2 halves the height every cycle: second peak at step 300. */
    cr_config tri2 = cyclic_config(CR_CYCLIC_TRIANGULAR2, 100, 0);
    CHECK_POINT(tri2, 100, 1000, 0.01, 0.8);
    CHECK_POINT(tri2, 300, 1000, 0.0055, 0.85);
    CHECK_POINT(tri2, 500, 1000, 0.001 + 0.009 / 4, 0.9 - 0.1 / 4);

    /* Asymmetric: 100 up, 300 down; halfway down at step 250. */
    cr_config asym = cyclic_config(CR_CYCLIC_TRIANGULAR, 100, 300);
    CHECK_POINT(asym, 100, 1000, 0.01, 0.8);
    CHECK_POINT(asym, 250, 1000, 0.0055, 0.85);
    CHECK_POINT(asym, 400, 1000, 0.001, 0.9);

    /* exp_range scales the height by gamma**step; gamma as written (0.9995),
     * which widening 0.9995f would miss by 5e-5 relative at step 2000. */
    cr_config exp = cyclic_config(CR_CYCLIC_EXP_RANGE, 100, 0);
    exp.schedule.gamma = 0.9995f;
    double g = pow(0.9995, 2100);
    CHECK_POINT(exp, 2100, 3000, 0.001 + 0.009 * g, 0.9 - 0.1 * g);

    /* OneCycle, max 0.1 over 1000 steps: 0.004 -> 0.1 at step 299 -> 4e-7. */
    cr_config one = cyclic_config(CR_CYCLIC_TRIANGULAR, 100, 0);
    one.schedule.name = CR_SCHEDULE_ONECYCLE;
    one.schedule.max_lr = 0.1f;
    one.schedule.base_momentum = 0.85f;
    one.schedule.max_momentum = 0.95f;
    CHECK_POINT(one, 0, 1000, 0.004, 0.95);
    CHECK_POINT(one, 299, 1000, 0.1, 0.85);
    CHECK_POINT(one, 999, 1000, 4e-7, 0.95);

    /* Cosine from 0.01 to 0 over 1000 steps: half at 500. */
    cr_config cosine = cyclic_config(CR_CYCLIC_TRIANGULAR, 100, 0);
    cosine.schedule.name = CR_SCHEDULE_COSINE;
    cosine.schedule.base_lr = 0.0f;
    cosine.optimizer.lr = 0.01f;
    CHECK_POINT(cosine, 0, 1000, 0.01, 0.7);
    CHECK_POINT(cosine, 500, 1000, 0.005, 0.7);
    CHECK_POINT(cosine, 1000, 1000, 0.0, 0.7);

    cr_config constant = cosine;
    constant.schedule.name = CR_SCHEDULE_CONSTANT;
    CHECK_POINT(constant, 0, 1000, 0.01, 0.7);
    CHECK_POINT(constant, 777, 1000, 0.01, 0.7);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s tests/optim/fixtures/schedules.txt\n", argv[0]);
        return 2;
    }
    check_by_hand();
    run_fixture(argv[1]);
    return check_finish();
}
