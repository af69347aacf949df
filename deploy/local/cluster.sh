#!/usr/bin/env bash
# A coordinator and workers on this machine, and the demo job submitted to them: the job API as a
# team uses it on a cluster, with local files.
#   1. set-up (deploy/bootstrap.sh) and the demo's packed dataset (run deploy/local/demo.sh once,
#      or this script packs a synthetic CelebA itself)
#   2. fresh tokens, `coordinator serve` on a free loopback port with its job store under
#      .gantry/cluster/state, and WORKERS (default 1) `worker serve` agents
#   3. `coordinator submit deploy/local/demo-job.toml --wait`, printing every state change, step and
#      checkpoint, then `coordinator list`
# Everything stops when the script ends. Outputs land under .gantry/cluster/.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
cd "$GANTRY_ROOT"
deploy/bootstrap.sh

here=.gantry/cluster
dataset=.gantry/demo/datasets/celeba32
mkdir -p "$here"
if [ ! -f "$dataset/manifest.json" ]; then
  "$GANTRY_BIN/dataprep" synth celeba --output .gantry/demo/celeba-synth --count 2000 --seed 0
  "$GANTRY_BIN/dataprep" pack celeba --input .gantry/demo/celeba-synth --output "$dataset" --size 32
fi
head -c 24 /dev/urandom | base64 > "$here/job.token"
head -c 24 /dev/urandom | base64 > "$here/worker.token"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
"$GANTRY_BIN/coordinator" serve --listen 127.0.0.1:0 --state "$here/state" \
  --token-file "$here/job.token" --worker-token-file "$here/worker.token" \
  > "$here/coordinator.out" 2> "$here/coordinator.log" &
pids+=($!)
# The coordinator prints its address once it listens.
until grep -q '^listening on ' "$here/coordinator.out"; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$here/coordinator.log"; exit 1; }
  sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$here/coordinator.out")
echo "cluster: coordinator at $addr, log $here/coordinator.log"
for i in $(seq 1 "${WORKERS:-1}"); do
  "$GANTRY_BIN/worker" serve --coordinator "http://$addr" --token-file "$here/worker.token" \
    --advertise "127.0.0.1:$((29500 + i))" 2> "$here/worker-$i.log" &
  pids+=($!)
done

export GANTRY_COORDINATOR="http://$addr"
job=$here/demo-job.toml
sed -e "s|^url = \".gantry/demo/runs/blond32\"|url = \"$here/runs/blond32\"|" deploy/local/demo-job.toml > "$job"
"$GANTRY_BIN/coordinator" submit "$job" --wait --token-file "$here/job.token"
"$GANTRY_BIN/coordinator" list --token-file "$here/job.token"
echo "cluster: checkpoints, samples and metrics under $here/runs/blond32/"
