#!/usr/bin/env bash
# gantry's main job, end to end on one machine with local files:
#   1. set-up (deploy/bootstrap.sh: .venv with torch, release build)
#   2. a synthetic CelebA folder in the real on-disk layout (CelebA itself cannot be fetched here;
#      set INPUT=/path/to/celeba to use a real download instead)
#   3. pack it into Parquet shards at 32x32, centre-cropped, and render a preview per class
#   4. train the conditional WGAN-GP on Blond_Hair (deploy/local/demo-job.toml), resuming if a
#      previous demo run left checkpoints
#   5. generate images per class and the label-swap grid from the final checkpoint
# Everything lands under .gantry/demo/.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
cd "$GANTRY_ROOT"
deploy/bootstrap.sh

demo=.gantry/demo
count=${GANTRY_DEMO_IMAGES:-2000}
mkdir -p "$demo"
input=${INPUT:-$demo/celeba-synth}
dataset=$demo/datasets/celeba32
run=$demo/runs/blond32
if [ -n "${INPUT:-}" ]; then
  dataset=$demo/datasets/celeba32-input
  run=$demo/runs/blond32-input
elif [ ! -f "$input/list_attr_celeba.txt" ]; then
  "$GANTRY_BIN/dataprep" synth celeba --output "$input" --count "$count" --seed 0
fi
if [ ! -f "$dataset/manifest.json" ]; then
  "$GANTRY_BIN/dataprep" pack celeba --input "$input" --output "$dataset" --size 32 --crop center
fi
"$GANTRY_BIN/dataprep" inspect "$dataset" --preview "$demo/preview.png" --by Blond_Hair

"$GANTRY_BIN/worker" train --config deploy/local/demo-job.toml --data "$dataset" --output "$run"
"$GANTRY_BIN/worker" generate --checkpoint "$run" --count 8 --out "$demo/generated" --grid "$demo/label-swap.png"
echo "demo: samples during training in $run/samples/, metrics in $run/metrics.jsonl"
echo "demo: label-swap grid at $demo/label-swap.png, images per class under $demo/generated/"
