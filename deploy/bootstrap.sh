#!/usr/bin/env bash
# Sets up everything gantry needs on a fresh machine with cargo and python3, then builds the
# release binaries. Idempotent: a second run only rebuilds what changed.
#   .venv/            torch==2.11.0 (libtorch for tch) and the Python test helpers
#   target/release/   dataprep, worker (binaries find libtorch through their rpath)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$GANTRY_ROOT"

command -v cargo >/dev/null || { echo "bootstrap: cargo not found (install Rust from rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bootstrap: python3 not found" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.gantry-requirements
want=$(sha256sum deploy/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing deploy/requirements.txt into .venv (torch is about 5 GB the first time)"
  .venv/bin/pip install --disable-pip-version-check --quiet -r deploy/requirements.txt
  echo "$want" > "$stamp"
fi

echo "bootstrap: building release binaries"
cargo build --release --workspace --bins --quiet
