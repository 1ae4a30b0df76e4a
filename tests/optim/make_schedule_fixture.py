#!/usr/bin/env python3
"""PyTorch reference values for cresnet's lr/momentum schedules.

What it is
    For each case below, builds a dummy SGD optimizer (one parameter,
    Nesterov, lr 0.01 and momentum 0.9 unless the case says otherwise) and
    the PyTorch scheduler that cresnet's `schedule.name` stands for:
        cyclic    CyclicLR(base_lr, max_lr, step_size_up, step_size_down,
                  mode, gamma, cycle_momentum, base_momentum, max_momentum)
        onecycle  OneCycleLR(max_lr, total_steps, cycle_momentum,
                  base_momentum, max_momentum; the other arguments default)
        cosine    CosineAnnealingLR(T_max=total_steps, eta_min=base_lr)
        constant  no scheduler
    It then runs the training loop's order for `total` steps: read
    param_groups[0]['lr'] and ['momentum'] (the values optimizer step s
    uses), optimizer.step(), scheduler.step(). tests/optim/test_schedule.c
    checks cr_schedule_at against the recorded values.

    Every parameter is a short decimal (at most 7 significant digits):
    cresnet's config holds floats, and cr_schedule_at reads each back as the
    shortest decimal that rounds to that float, i.e. the value written here.
    main() asserts this holds for every case.

How to run (from the repository root)
    /opt/torchvenv/bin/python tests/optim/make_schedule_fixture.py

Output (committed; rerunning gives a byte-identical file)
    tests/optim/fixtures/schedules.txt, lines:
        # comment
        case NAME schedule=S total=N key=value ...   (parameters, Python repr)
        STEP LR MOMENTUM                              (%.17g)
    Only every STRIDE-th step is kept, plus all steps near the points where
    the schedule's formula changes (cycle starts and peaks, OneCycle's phase
    boundary, the start, the middle and the end of the run).
"""

import math
import os
import struct

import torch

STRIDE = 13  # prime, so the sampled steps fall at every phase of a cycle
NEAR = 2  # steps kept either side of a boundary

# (name, schedule, total, parameters). Keys are the cr_config field names;
# down=0 means step_size_down=None, as in cresnet's config.
CASES = [
    ("cyclic_triangular", "cyclic", 2000,
     dict(base_lr=1e-6, max_lr=0.01, up=200, down=0, mode="triangular",
          cycle_momentum=1, base_momentum=0.8, max_momentum=0.9)),
    ("cyclic_triangular_asym_nomom", "cyclic", 2000,
     dict(base_lr=1e-4, max_lr=0.1, up=150, down=350, mode="triangular",
          cycle_momentum=0, opt_momentum=0.85)),
    ("cyclic_triangular_odd", "cyclic", 2500,
     dict(base_lr=0.001, max_lr=0.05, up=333, down=77, mode="triangular",
          cycle_momentum=1, base_momentum=0.85, max_momentum=0.95)),
    ("cyclic_triangular2", "cyclic", 1500,
     dict(base_lr=1e-6, max_lr=0.01, up=100, down=0, mode="triangular2",
          cycle_momentum=1, base_momentum=0.8, max_momentum=0.9)),
    ("cyclic_triangular2_asym_nomom", "cyclic", 2500,
     dict(base_lr=1e-5, max_lr=0.02, up=300, down=100, mode="triangular2",
          cycle_momentum=0)),
    ("cyclic_exp_range", "cyclic", 3000,
     dict(base_lr=1e-6, max_lr=0.01, up=250, down=0, mode="exp_range",
          gamma=0.9995, cycle_momentum=1, base_momentum=0.8, max_momentum=0.9)),
    ("cyclic_exp_range_asym_nomom", "cyclic", 2000,
     dict(base_lr=1e-5, max_lr=0.1, up=120, down=380, mode="exp_range",
          gamma=0.999, cycle_momentum=0)),
    ("onecycle", "onecycle", 1000,
     dict(max_lr=0.1, cycle_momentum=1, base_momentum=0.85, max_momentum=0.95)),
    ("onecycle_odd_nomom", "onecycle", 2347,
     dict(max_lr=0.05, cycle_momentum=0)),
    ("onecycle_long", "onecycle", 3000,
     dict(max_lr=0.01, cycle_momentum=1, base_momentum=0.8, max_momentum=0.9)),
    ("cosine", "cosine", 2000, dict(base_lr=0.0)),
    ("cosine_eta_min", "cosine", 2999, dict(opt_lr=0.1, base_lr=1e-4)),
    ("constant", "constant", 1000, dict(opt_lr=0.05, opt_momentum=0.9)),
]

DEFAULTS = dict(opt_lr=0.01, opt_momentum=0.9, base_lr=1e-6, max_lr=0.01,
                up=2000, down=0, mode="triangular", gamma=1.0,
                cycle_momentum=1, base_momentum=0.8, max_momentum=0.9)


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def decimal_of_float(x):
    """The shortest decimal that rounds to float32(x), as cr_schedule_at
    reads config values; must give back x for the fixture to apply."""
    f = f32(x)
    for prec in range(1, 10):
        s = "%.*g" % (prec, f)
        if f32(float(s)) == f:
            return float(s)
    return f


def make_scheduler(schedule, total, p, opt):
    if schedule == "cyclic":
        return torch.optim.lr_scheduler.CyclicLR(
            opt, base_lr=p["base_lr"], max_lr=p["max_lr"],
            step_size_up=p["up"], step_size_down=p["down"] or None,
            mode=p["mode"], gamma=p["gamma"],
            cycle_momentum=bool(p["cycle_momentum"]),
            base_momentum=p["base_momentum"], max_momentum=p["max_momentum"])
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=p["max_lr"], total_steps=total,
            cycle_momentum=bool(p["cycle_momentum"]),
            base_momentum=p["base_momentum"], max_momentum=p["max_momentum"])
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=total, eta_min=p["base_lr"])
    assert schedule == "constant"
    return None


def boundaries(schedule, total, p):
    """Steps where the schedule's formula changes branch."""
    points = [0, total // 2, total - 1]
    if schedule == "cyclic":
        cycle = p["up"] + (p["down"] or p["up"])
        for start in range(0, total, cycle):
            points += [start, start + p["up"]]
    elif schedule == "onecycle":
        points.append(int(math.floor(0.3 * total - 1)))
    return points


def record(schedule, total, p):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=p["opt_lr"], momentum=p["opt_momentum"],
                          nesterov=True)
    sched = make_scheduler(schedule, total, p, opt)
    values = []
    for _ in range(total):
        group = opt.param_groups[0]
        values.append((float(group["lr"]), float(group["momentum"])))
        param.grad = torch.ones(1)
        opt.step()
        if sched is not None:
            sched.step()
    return values


def keep_steps(schedule, total, p):
    keep = set(range(0, total, STRIDE))
    for b in boundaries(schedule, total, p):
        keep.update(range(max(b - NEAR, 0), min(b + NEAR + 1, total)))
    keep.update(range(max(total - 20, 0), total))  # recursion/annealing tail
    return sorted(keep)


def main():
    root = os.path.dirname(os.path.abspath(__file__))
    out_path = os.path.join(root, "fixtures", "schedules.txt")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    lines = ["# cresnet schedule fixture: made by tests/optim/make_schedule_fixture.py",
             "# torch %s; lines: case NAME key=value... / STEP LR MOMENTUM"
             % torch.__version__.split("+")[0]]
    for name, schedule, total, params in CASES:
        p = dict(DEFAULTS, **params)
        for key, value in p.items():
            if isinstance(value, float):
                assert decimal_of_float(value) == value, (name, key, value)
        values = record(schedule, total, p)
        header = ["case", name, "schedule=" + schedule, "total=%d" % total]
        header += ["%s=%s" % (k, repr(v) if isinstance(v, float) else v)
                   for k, v in sorted(p.items())]
        lines.append(" ".join(header))
        for s in keep_steps(schedule, total, p):
            lines.append("%d %.17g %.17g" % (s, values[s][0], values[s][1]))
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d lines)" % (out_path, len(lines)))


if __name__ == "__main__":
    main()
