#!/usr/bin/env bash
# Prints gantry's benchmark figures on this machine, side by side:
#   data path:  dataprep bench (packing and reading throughput)
#   trainer:    worker bench vs the book's step in PyTorch eager from .venv (same libtorch, same
#               threads): the plain port a PyTorch user writes (as they run it, then with
#               gantry's malloc setting), and the same maths in one critic pass; at the book's
#               settings (64x64, batch 128, width 128) unless overridden, e.g.
#               deploy/bench.sh --image-size 32 --batch 64 --width 64 --steps 10
#               On a GPU node, --device cuda runs both on the GPU (the PyTorch lines then also
#               with cudnn.benchmark, which gantry sets).
# --repeat N runs the trainer lines N times, alternating (gantry, references, gantry, ...), and
# prints each one's median images/s after the runs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$GANTRY_ROOT"
deploy/bootstrap.sh >&2
repeat=1
device=cpu
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --repeat) repeat=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -gt 0 ] || args=(--steps 3 --warmup 1)
echo "machine: $(nproc) cores"
"$GANTRY_BIN/dataprep" bench --count 4000 --size 64 2>/dev/null
ref=(.venv/bin/python worker/python/gantry_ref.py bench --device "$device")
# worker::keep_freed_memory's setting, through glibc's environment variables.
keep_freed=(env MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647)
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((round = 1; round <= repeat; round++)); do
  {
    echo "gantry   $("$GANTRY_BIN/worker" bench --device "$device" "${args[@]}")"
    echo "pytorch  $("${ref[@]}" --step plain "${args[@]}")"
    echo "pytorch  $("${keep_freed[@]}" "${ref[@]}" --step plain "${args[@]}" | sed 's/)$/, malloc keeps freed memory)/')"
    echo "pytorch  $("${ref[@]}" --step one-pass --channels-last "${args[@]}")"
    if [ "$device" != cpu ]; then
      echo "pytorch  $("${ref[@]}" --step plain --cudnn-benchmark "${args[@]}")"
    fi
  } | tee -a "$results"
done
if [ "$repeat" -gt 1 ]; then
  echo "medians of $repeat alternating runs:"
  .venv/bin/python - "$results" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.search(r"images_per_sec=([0-9.]+)", line)
    if m:
        name = re.sub(r"train_step images_per_sec=\S+ ms_per_step=\S+\s*", "", line.strip())
        runs.setdefault(name, []).append(float(m.group(1)))
base = None
for name, values in runs.items():
    median = statistics.median(values)
    base = base or median
    print(f"  {median:8.2f} images/s  (gantry / this: {base / median:.2f}x)  {name}")
PY
fi
# Gradient exchange: all-reduce bus bandwidth (nccl-tests' busbw) between 2, 3 and 4 worker
# processes on loopback (Gloo over TCP, 1 libtorch thread each), beside a plain memory copy
# measured in the same run; 1, 4, 16 and 64 MiB buffers.
"$GANTRY_BIN/worker" bench-allreduce --ranks 2,3,4 --sizes-mib 1,4,16,64
