# shellcheck shell=bash
# Sourced by gantry's scripts: the environment every build and run uses.
# libtorch comes from the torch wheel in .venv (LIBTORCH_USE_PYTORCH makes torch-sys ask it).
GANTRY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GANTRY_ROOT
export LIBTORCH_USE_PYTORCH=1
export PATH="$GANTRY_ROOT/.venv/bin:$PATH"
export GANTRY_BIN="$GANTRY_ROOT/target/release"
