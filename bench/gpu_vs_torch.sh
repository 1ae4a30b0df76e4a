#!/usr/bin/env bash
# Training images/s of each model in cresnet (CUDA backend) and in PyTorch
# (eager, channels_last, the same batch of 128) on the same GPU in one run,
# in bf16 (PyTorch: autocast to bfloat16), fp32 and tf32, with the ratio,
# model FLOP utilisation and device memory of both: a Markdown table at the
# end and in $OUT/table.md. Runs on the lent GPU machine after
# scripts/device_kit.sh (docs/gpu_session.md); it is bench/gpu_session.sh's
# "compare" stage, which builds first where no build is there yet.
exec bash "$(dirname "$0")/gpu_session.sh" compare "$@"
