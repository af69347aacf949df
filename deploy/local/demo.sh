#!/usr/bin/env bash
# gantry's main job, end to end on one machine with local files:
#   1. set-up (deploy/bootstrap.sh: .venv with torch, release build)
#   2. a synthetic CelebA folder in the real on-disk layout (CelebA itself cannot be fetched here;
#      point INPUT at a real download to use it instead)
#   3. pack it into Parquet shards at 64x64, centre-cropped
#   4. inspect the dataset and render a preview grid (one row per Blond_Hair class)
# Everything lands under .gantry/demo/ (override with GANTRY_DEMO_DIR).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
cd "$GANTRY_ROOT"
deploy/bootstrap.sh

demo=${GANTRY_DEMO_DIR:-$GANTRY_ROOT/.gantry/demo}
count=${GANTRY_DEMO_IMAGES:-2000}
mkdir -p "$demo"
input=${INPUT:-$demo/celeba-synth}
if [ -z "${INPUT:-}" ]; then
  "$GANTRY_BIN/dataprep" synth celeba --output "$input" --count "$count" --seed 0
fi
"$GANTRY_BIN/dataprep" pack celeba --input "$input" --output "$demo/datasets/celeba64" --size 64 --crop center
"$GANTRY_BIN/dataprep" inspect "$demo/datasets/celeba64" --preview "$demo/preview.png" --by Blond_Hair
echo "demo: dataset at $demo/datasets/celeba64, preview at $demo/preview.png"
