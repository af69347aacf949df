#!/usr/bin/env bash
# Prints gantry's benchmark figures on this machine, side by side:
#   data path:  dataprep bench (packing and reading throughput)
#   trainer:    worker bench vs the book's step in PyTorch eager from .venv (same libtorch, same
#               threads): the plain port a PyTorch user writes (as they run it, then with
#               gantry's malloc setting), and the same maths in one critic pass; at the book's
#               settings (64x64, batch 128, width 128) unless overridden, e.g.
#               deploy/bench.sh --image-size 32 --batch 64 --width 64 --steps 10
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
ref=(.venv/bin/python worker/python/gantry_ref.py bench)
# worker::keep_freed_memory's setting, through glibc's environment variables.
keep_freed=(env MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647)
echo -n "pytorch  "; "${ref[@]}" --step plain "${args[@]}"
echo -n "pytorch  "; "${keep_freed[@]}" "${ref[@]}" --step plain "${args[@]}" | sed 's/)$/, malloc keeps freed memory)/'
echo -n "pytorch  "; "${ref[@]}" --step one-pass --channels-last "${args[@]}"
