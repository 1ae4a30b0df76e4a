/* optim/schedule: the lr and momentum of each optimizer step, computed the
 * way PyTorch's schedulers compute them (torch/optim/lr_scheduler.py), in
 * double and in the same order of operations, so that the values agree with
 * PyTorch's to the last bit or nearly (the tests ask for 1e-9 relative).
 * PyTorch's schedulers set the lr of step 0 when they are built and advance
 * one step per scheduler.step(); here `step` is PyTorch's last_epoch. */
#include "cresnet/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Python's math.pi; strict C11 has no M_PI. */
static const double pi = 3.141592653589793;

/* The config holds floats, but the YAML and the PyTorch runs cresnet is
 * compared with write decimals (0.9, 0.9995) that PyTorch uses as doubles.
 * Widening the float would be off by up to 6e-8 relative, which exp_range's
 * gamma**step grows (7e-5 after 3000 steps at gamma 0.9995). The shortest
 * decimal that rounds to the same float is the decimal that was written,
 * for any value of up to 7 significant digits, so use it. */
static double decimal(float f) {
    char text[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, (double)f);
        if (strtof(text, NULL) == f) return strtod(text, NULL);
    }
    return (double)f; /* NaN: nothing reads back equal */
}

/* CyclicLR.get_lr: a triangle from base to max and back, whose height is
 * scaled per cycle (triangular, triangular2) or per step (exp_range). The
 * momentum runs the opposite way, from max_momentum down to base_momentum. */
static cr_schedule_point cyclic_at(const cr_config *cfg, long step) {
    const double up = cfg->schedule.step_size_up;
    const double down = cfg->schedule.step_size_down > 0 ? cfg->schedule.step_size_down : up;
    const double total_size = up + down, step_ratio = up / total_size;
    const double epoch = (double)step;

    const double cycle = floor(1 + epoch / total_size);
    const double x = 1.0 + epoch / total_size - cycle;
    const double scale_factor = x <= step_ratio ? x / step_ratio : (x - 1) / (step_ratio - 1);

    double scale = 1.0; /* triangular */
    if (cfg->schedule.mode == CR_CYCLIC_TRIANGULAR2) scale = 1 / pow(2.0, cycle - 1);
    if (cfg->schedule.mode == CR_CYCLIC_EXP_RANGE) scale = pow(decimal(cfg->schedule.gamma), epoch);

    const double base_lr = decimal(cfg->schedule.base_lr), max_lr = decimal(cfg->schedule.max_lr);
    cr_schedule_point p;
    p.lr = base_lr + (max_lr - base_lr) * scale_factor * scale; /* base_height * scale_fn */
    p.momentum = decimal(cfg->optimizer.momentum);
    if (cfg->schedule.cycle_momentum) {
        const double base_m = decimal(cfg->schedule.base_momentum);
        const double max_m = decimal(cfg->schedule.max_momentum);
        p.momentum = max_m - (max_m - base_m) * scale_factor * scale;
    }
    return p;
}

/* OneCycleLR._annealing_cos: from start (pct 0) to end (pct 1). */
static double anneal_cos(double start, double end, double pct) {
    const double cos_out = cos(pi * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
}

/* OneCycleLR with its defaults (pct_start 0.3, cos, div_factor 25,
 * final_div_factor 1e4, two phases): warm up from max_lr/25 to max_lr over
 * the first 30% of the steps, then anneal to max_lr/25/1e4 at the last
 * step; momentum goes max -> base -> max meanwhile. Past total_steps - 1 the
 * last phase's curve continues (PyTorch raises beyond total_steps). */
static cr_schedule_point onecycle_at(const cr_config *cfg, long step, long total_steps) {
    const double max_lr = decimal(cfg->schedule.max_lr);
    const double initial_lr = max_lr / 25.0, min_lr = initial_lr / 1e4;
    const double max_m = decimal(cfg->schedule.max_momentum);
    const double base_m = decimal(cfg->schedule.base_momentum);
    /* PyTorch's phase ends: a float step for the first, an int for the last. */
    const double warm_end = 0.3 * (double)total_steps - 1, last = (double)(total_steps - 1);
    const double s = (double)step;

    cr_schedule_point p;
    if (s <= warm_end) {
        const double pct = (s - 0.0) / (warm_end - 0.0);
        p.lr = anneal_cos(initial_lr, max_lr, pct);
        p.momentum = anneal_cos(max_m, base_m, pct);
    } else {
        const double pct = (s - warm_end) / (last - warm_end);
        p.lr = anneal_cos(max_lr, min_lr, pct);
        p.momentum = anneal_cos(base_m, max_m, pct);
    }
    if (!cfg->schedule.cycle_momentum) p.momentum = decimal(cfg->optimizer.momentum);
    return p;
}

/* CosineAnnealingLR(T_max = total_steps, eta_min = base_lr). PyTorch
 * updates the lr recursively (lr_t from lr_{t-1} times a ratio of cosines);
 * the closed form below agrees with that recursion to 1.2e-13 relative or
 * better at every step of runs up to 100,000 steps (checked against PyTorch's
 * recursion in float64), and costs O(1) per step instead of O(step). Step 0
 * is optimizer.lr itself, as PyTorch leaves it there. */
static double cosine_lr(const cr_config *cfg, long step, long total_steps) {
    const double base_lr = decimal(cfg->optimizer.lr), eta_min = decimal(cfg->schedule.base_lr);
    if (step == 0) return base_lr;
    return eta_min + (base_lr - eta_min) * (1 + cos(pi * (double)step / (double)total_steps)) / 2;
}

cr_schedule_point cr_schedule_at(const cr_config *cfg, long step, long total_steps) {
    cr_schedule_point p = {decimal(cfg->optimizer.lr), decimal(cfg->optimizer.momentum)};
    switch (cfg->schedule.name) {
    case CR_SCHEDULE_CYCLIC: return cyclic_at(cfg, step);
    case CR_SCHEDULE_ONECYCLE: return onecycle_at(cfg, step, total_steps);
    case CR_SCHEDULE_COSINE: p.lr = cosine_lr(cfg, step, total_steps); return p;
    case CR_SCHEDULE_CONSTANT: return p;
    }
    return p;
}
