#!/usr/bin/env bash
# Checks a GPU node before workers are launched on it: libtorch must see a CUDA device and run a
# full training step there. Prints the device report and the step throughput at book settings.
#   deploy/gpu-check.sh [cuda:N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
device=${1:-cuda:0}
"$GANTRY_BIN/worker" device --require-cuda
"$GANTRY_BIN/worker" bench --device "$device" --image-size 64 --batch 128 --steps 20 --warmup 5
