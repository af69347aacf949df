#!/usr/bin/env bash
# Prints gantry's benchmark figures on this machine, side by side:
#   data path:  dataprep bench (packing and reading throughput)
#   trainer:    worker bench vs the same step in PyTorch eager from .venv (same threads),
#               at the book's settings (64x64, batch 128, width 128) unless overridden, e.g.
#               deploy/bench.sh --image-size 32 --batch 32 --width 32 --steps 10
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$GANTRY_ROOT"
deploy/bootstrap.sh >&2
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--steps 3 --warmup 1)
echo "machine: $(nproc) cores"
"$GANTRY_BIN/dataprep" bench --count 4000 --size 64 2>/dev/null
echo -n "gantry   "; "$GANTRY_BIN/worker" bench --device cpu "${args[@]}"
echo -n "pytorch  "; .venv/bin/python worker/python/gantry_ref.py bench "${args[@]}"
echo -n "pytorch  "; .venv/bin/python worker/python/gantry_ref.py bench --channels-last "${args[@]}"
