#!/usr/bin/env bash
# Runs gantry's whole test suite on a fresh machine: set-up (deploy/bootstrap.sh), a loopback
# S3 server (moto) for the object-storage tests, formatting and lint checks, then every Rust test
# (unit, integration, and end-to-end tests that drive the release binaries).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../deploy/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/env.sh"
cd "$GANTRY_ROOT"
deploy/bootstrap.sh

cargo fmt --all -- --check
# Lints, warnings as errors, with the tests' profile so that the build scripts (torch-sys's C++
# shim above all) and proc-macros built for the release binaries serve it too. What it adds,
# measured on 2 cores: about 2.5 minutes the first time (a check pass over the ~270
# dependencies, which release builds do not produce), about 15 s when the workspace crates
# changed, under a second when nothing did.
cargo clippy --workspace --all-targets --release -- -D warnings

# An S3-compatible server on a free loopback port, stopped on exit.
mkdir -p target
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# Wait until it answers (bounded), then create the test bucket.
.venv/bin/python - <<'PY'
import os, time, boto3, botocore
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
deadline = time.time() + 60
while True:
    try:
        s3.create_bucket(Bucket="gantry-test")
        break
    except botocore.exceptions.EndpointConnectionError:
        if time.time() > deadline:
            raise SystemExit("moto_server did not start; see target/moto.log")
        time.sleep(0.2)
PY
export GANTRY_TEST_S3=s3://gantry-test GANTRY_REQUIRE_S3=1

# --show-output prints what passing tests report (the conditioning figures of the quality test).
if [ $# -eq 0 ]; then set -- -- --show-output; fi
cargo test --release --workspace "$@"
