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
# Data-parallel scaling on this host: 2 ranks x 1 thread against 1 rank x 1 thread at the same
# per-rank batch (book settings unless overridden), alternating, each line's median; then where
# a 2-rank step's time goes (critic_exchange and generator_exchange are the gradient all-reduce,
# waiting for the slower rank included).
if [ "$device" = cpu ]; then
  scaling=$(mktemp)
  for ((round = 1; round <= (repeat > 3 ? repeat : 3); round++)); do
    for ranks in 1 2; do
      echo "$ranks $("$GANTRY_BIN/worker" bench --device cpu --threads 1 --ranks "$ranks" "${args[@]}")" | tee -a "$scaling"
    done
  done
  .venv/bin/python - "$scaling" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    ranks, rest = line.split(" ", 1)
    runs.setdefault(int(ranks), []).append(float(re.search(r"images_per_sec=([0-9.]+)", rest).group(1)))
one, two = statistics.median(runs[1]), statistics.median(runs[2])
print(f"scaling: 1 rank x 1 thread {one:.2f} images/s, 2 ranks x 1 thread {two:.2f} images/s: {two / one:.2f}x (medians of {len(runs[1])})")
PY
  rm -f "$scaling"
  "$GANTRY_BIN/worker" bench --device cpu --threads 1 --ranks 2 --profile "${args[@]}"
fi
