#!/usr/bin/env bash
# The main job once set-up is done (deploy/local/demo.sh runs deploy/bootstrap.sh, then this):
#   1. data: a synthetic CelebA folder in CelebA's real on-disk layout (or INPUT), packed into
#      Parquet shards in STORAGE, and a preview of the packed rows per class
#   2. a coordinator on a free loopback port (job records in STORAGE) and WORKERS `worker serve`
#      agents, each with a collective port of its own, in the background; all of them stop when
#      this script ends, Ctrl-C included (the workers first: a running job saves a checkpoint)
#   3. the conditional job (deploy/local/demo-job.toml, or book-job.toml with INPUT) submitted
#      over gRPC with `workers = WORKERS`, followed live until it ends
#   4. images per class and the label-swap grid from its last checkpoint
# A second run reuses the folder, the dataset and the run (the job resumes from its latest
# checkpoint, so a finished run finishes at once), and keeps the coordinator's records.
#
# Settings (environment):
#   STORAGE   where the dataset, the job records and the run go: a folder (default
#             .gantry/demo), s3://bucket/prefix (AWS_* variables; AWS_ENDPOINT_URL for MinIO
#             and other S3 APIs), gs://bucket/prefix, az://container/prefix
#   INPUT     a CelebA download (official or Kaggle layout): packed at 64x64, book settings
#   WORKERS   workers to start and the job's world size (default 2)
#   STEPS     the job's steps instead of the job file's
#   HTTP_LISTEN  address of the coordinator's dashboard and /metrics (default 127.0.0.1:0, a
#             free loopback port; the URL is printed)
#   STAY      set (STAY=1): after the job, keep the coordinator and its dashboard up until
#             Ctrl-C, to look at the finished run
#   IMAGES    synthetic faces to draw (default 2000)
#   DEMO_DIR  this machine's folder for the synthetic input, tokens, logs, the preview and the
#             generated images (default .gantry/demo)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
cd "$GANTRY_ROOT"

demo=${DEMO_DIR:-.gantry/demo}
storage=${STORAGE:-$demo}
storage=${storage%/}
workers=${WORKERS:-2}
mkdir -p "$demo"
say() { printf 'demo: %s\n' "$*"; }

if [ -n "${INPUT:-}" ]; then
  input=$INPUT size=64 job_template=deploy/local/book-job.toml
  dataset=$storage/datasets/celeba64 run=$storage/runs/blond64-book
else
  input=$demo/celeba-synth size=32 job_template=deploy/local/demo-job.toml
  dataset=$storage/datasets/celeba32 run=$storage/runs/blond32
  if [ ! -f "$input/list_attr_celeba.txt" ]; then
    "$GANTRY_BIN/dataprep" synth celeba --output "$input" --count "${IMAGES:-2000}" --seed 0
  fi
fi

# 1. The dataset, packed once: a dataset exists when its manifest does.
if ! "$GANTRY_BIN/dataprep" inspect "$dataset" > /dev/null 2>&1; then
  say "packing $input into $dataset at ${size}x$size"
  "$GANTRY_BIN/dataprep" pack celeba --input "$input" --output "$dataset" --size "$size" --crop center
fi
"$GANTRY_BIN/dataprep" inspect "$dataset" --preview "$demo/preview.png" --by Blond_Hair

# 2. A coordinator and the workers. Tokens are made once and kept with the records.
for token in job worker; do
  if [ ! -s "$demo/$token.token" ]; then
    (umask 077 && head -c 24 /dev/urandom | base64 > "$demo/$token.token")
  fi
done
worker_pids=()
coordinator_pid=
client_pid=
stop_all() {
  trap - EXIT INT TERM
  if [ -n "$client_pid" ]; then
    kill -TERM "$client_pid" 2> /dev/null || true
  fi
  # Workers first: a job still running saves a checkpoint at its next step and goes back to the
  # queue (the next run resumes it); then the coordinator, which records that.
  if [ ${#worker_pids[@]} -gt 0 ]; then
    kill -TERM "${worker_pids[@]}" 2> /dev/null || true
    wait "${worker_pids[@]}" 2> /dev/null || true
  fi
  if [ -n "$coordinator_pid" ]; then
    kill -TERM "$coordinator_pid" 2> /dev/null || true
    wait "$coordinator_pid" 2> /dev/null || true
  fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# setsid: a Ctrl-C on the terminal reaches this script, which stops them in order.
setsid "$GANTRY_BIN/coordinator" serve --listen 127.0.0.1:0 --state "$storage/state" \
  --http-listen "${HTTP_LISTEN:-127.0.0.1:0}" --token-file "$demo/job.token" --worker-token-file "$demo/worker.token" \
  > "$demo/coordinator.out" 2> "$demo/coordinator.log" &
coordinator_pid=$!
# It prints its address once it listens (a free port: nothing else on this machine clashes).
for _ in $(seq 600); do
  grep -q '^listening on ' "$demo/coordinator.out" 2> /dev/null && break
  kill -0 "$coordinator_pid" 2> /dev/null || break
  sleep 0.1
done
if ! grep -q '^listening on ' "$demo/coordinator.out" 2> /dev/null; then
  cat "$demo/coordinator.log" >&2
  say "the coordinator did not start within 60 s (log above)" >&2
  exit 1
fi
address=http://$(sed -n 's/^listening on //p' "$demo/coordinator.out")
say "coordinator at $address (log $demo/coordinator.log), job records in $storage/state"
# Printed with the address, in the same write.
dashboard=$(sed -n 's/^dashboard on //p' "$demo/coordinator.out")
say "dashboard at $dashboard (log in with the token in $demo/job.token; Prometheus: ${dashboard}metrics)"
export GANTRY_COORDINATOR=$address
# A job an interrupted run left queued or running writes the same run: cancelled before any
# worker joins (so it cannot start again), since the new job resumes from the checkpoint it saved.
leftovers=$("$GANTRY_BIN/coordinator" list --state queued --state running --token-file "$demo/job.token" |
  awk 'NR > 1 { print $1 }')
for id in $leftovers; do
  "$GANTRY_BIN/coordinator" cancel "$id" --reason "superseded by a new run of the demo" \
    --token-file "$demo/job.token"
done
for i in $(seq 1 "$workers"); do
  # No port in --advertise: each worker reserves a free one for its gang's rendezvous.
  setsid "$GANTRY_BIN/worker" serve --coordinator "$address" --token-file "$demo/worker.token" \
    --advertise 127.0.0.1 2> "$demo/worker-$i.log" &
  worker_pids+=($!)
done
say "$workers workers started (logs $demo/worker-N.log)"

# 3. The job: the template with this run's dataset, output, world size and steps.
job=$demo/job.toml
edits=(-e "/^\[data\]/,/^\[/ s|^url = .*|url = \"$dataset\"|"
  -e "/^\[output\]/,/^\[/ s|^url = .*|url = \"$run\"|"
  -e "s|^workers = .*|workers = $workers|")
if [ -n "${STEPS:-}" ]; then
  edits+=(-e "s|^steps = .*|steps = $STEPS|")
fi
sed "${edits[@]}" "$job_template" > "$job"
say "submitting $job over gRPC"
# In the background, so that a signal to this script is handled at once (bash runs traps only
# between foreground commands); its exit status is the job's.
"$GANTRY_BIN/coordinator" submit "$job" --wait --token-file "$demo/job.token" &
client_pid=$!
wait "$client_pid"
client_pid=
"$GANTRY_BIN/coordinator" list --token-file "$demo/job.token"

# 4. Images from the last checkpoint.
"$GANTRY_BIN/worker" generate --checkpoint "$run" --count 8 --out "$demo/generated" \
  --grid "$demo/label-swap.png"
say "checkpoints:     $run/checkpoints/ (latest: $run/checkpoints/latest)"
say "metrics:         $run/metrics.jsonl"
say "evaluations:     $run/eval/ (conditional accuracy, label swap, feature Fréchet distance)"
say "TensorBoard:     tensorboard --logdir $run/tensorboard"
say "sample grids:    $run/samples/"
say "label-swap grid: $demo/label-swap.png (one row per latent vector, one column per class)"
say "images by class: $demo/generated/<class>/"
say "dataset preview: $demo/preview.png"
if [ -n "${STAY:-}" ]; then
  say "the dashboard stays at $dashboard until Ctrl-C (workers stop first)"
  wait "$coordinator_pid"
fi
