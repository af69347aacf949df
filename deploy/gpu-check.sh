#!/usr/bin/env bash
# Checks a GPU node before workers are launched on it: libtorch must load its CUDA backend, see a
# CUDA device, form an NCCL group (one rank; two ranks on two GPUs where the node has them) and
# run a full training step there. Prints the device report, the exchanges' checks and the step
# throughput at book settings. Runs the shipped worker of deploy/dist.sh (stripped, with the
# launcher that finds libtorch), so the same check works on a node that has only python3 with
# torch 2.11 (or GANTRY_LIBTORCH set to libtorch 2.11's lib folder):
#   deploy/gpu-check.sh [cuda:N]            in a checkout: packs target/release into target/dist first
#   <dist>/gpu-check.sh [cuda:N]            in a copy of target/dist, e.g. after
#                                           rsync -a target/dist/ node:gantry/ (about 27 MB)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
device=${1:-cuda:0}

if [ -x "$here/bin/worker" ]; then
  worker=$here/bin/worker # a copy of target/dist
else
  # A checkout: ship the current release build, and take torch from the project's .venv.
  root=$(cd "$here/.." && pwd)
  "$here/dist.sh" --from "$root/target/release" --out "$root/target/dist" worker
  worker=$root/target/dist/bin/worker
  if [ -z "${GANTRY_LIBTORCH:-}" ] && [ -z "${GANTRY_PYTHON:-}" ] && [ -x "$root/.venv/bin/python3" ]; then
    export GANTRY_PYTHON=$root/.venv/bin/python3
  fi
fi

"$worker" device --require-cuda
# NCCL: a self-checking all-reduce, broadcast and barrier on loopback.
export GANTRY_GROUP_SECRET=gpu-check
"$worker" collective-check --address 127.0.0.1:0 --rank 0 --world-size 1 --device "$device"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${gpus:-0}" -ge 2 ]; then
  port=$(( 29000 + RANDOM % 1000 ))
  "$worker" collective-check --address "127.0.0.1:$port" --rank 1 --world-size 2 --device cuda:1 &
  peer=$!
  "$worker" collective-check --address "127.0.0.1:$port" --rank 0 --world-size 2 --device cuda:0
  wait "$peer"
fi
"$worker" bench --device "$device" --image-size 64 --batch 128 --steps 20 --warmup 5
