/* optim: the learning-rate and momentum schedules of a run.
 *
 * cr_schedule_at gives the lr and momentum that optimizer step `step`
 * (0-based) uses, as a pure function of the config and the run's total
 * number of steps, reproducing PyTorch step for step:
 *   cyclic   torch.optim.lr_scheduler.CyclicLR(base_lr, max_lr, step_size_up,
 *            step_size_down, mode, gamma, cycle_momentum, base_momentum,
 *            max_momentum), momentum cycling included;
 *   onecycle torch OneCycleLR(max_lr, total_steps, defaults otherwise; cycles
 *            momentum between base_momentum and max_momentum);
 *   cosine   CosineAnnealingLR(T_max = total_steps, eta_min = base_lr) from
 *            optimizer.lr; momentum = optimizer.momentum;
 *   constant optimizer.lr and optimizer.momentum.
 * Being a function of the step, a resumed run needs no scheduler state.
 * Not here: the SGD update itself (a backend op, cr_backend_ops.sgd_step). */
#ifndef CRESNET_OPTIM_H
#define CRESNET_OPTIM_H

#include "cresnet/config.h"

typedef struct {
    double lr, momentum;
} cr_schedule_point;

cr_schedule_point cr_schedule_at(const cr_config *cfg, long step, long total_steps);

#endif
