#!/usr/bin/env bash
# Sets up everything gantry needs on a fresh machine with cargo and python3, then builds the
# release binaries. Idempotent: a second run only rebuilds what changed.
#   .venv/            torch==2.11.0 (libtorch for tch) and the Python test helpers; with a CUDA
#                     torch, the CUDA headers its wheels leave out (the worker's NCCL shim)
#   libgloo-dev       gloo's headers, for the worker's collectives shim (Debian package; root)
#   target/release/   dataprep, worker, coordinator (binaries find libtorch through their rpath;
#                     deploy/dist.sh packs the worker for machines without this checkout)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$GANTRY_ROOT"

# Toolchain: every problem is listed with its fix before anything is installed or built.
#   cargo    at least the workspace's rust-version (root Cargo.toml), with rustfmt and clippy
#            (tests/run.sh checks formatting and lints).
#   python3  what the pinned wheels of deploy/requirements.txt accept: numpy 2.4.6 needs >= 3.11
#            (torch 2.11.0 and the others >= 3.10), and triton 3.6.0, which torch 2.11.0 pins on
#            Linux, needs < 3.15. With .venv on PATH (env.sh) this checks the venv's python.
python_min=3.11 python_below=3.15
problems=()
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }
rust_min=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
if ! command -v cargo >/dev/null; then
  problems+=("cargo not found: install Rust $rust_min or later (https://rustup.rs)")
else
  cargo_version=$(cargo --version | cut -d' ' -f2)
  if ! version_at_least "$cargo_version" "$rust_min"; then
    problems+=("cargo $cargo_version is older than the workspace's rust-version $rust_min: rustup update stable (or install Rust $rust_min+)")
  fi
  cargo fmt --version >/dev/null 2>&1 ||
    problems+=("cargo fmt is missing: rustup component add rustfmt (or your distribution's rustfmt package)")
  cargo clippy --version >/dev/null 2>&1 ||
    problems+=("cargo clippy is missing: rustup component add clippy (or your distribution's rust-clippy package)")
fi
if ! command -v python3 >/dev/null; then
  problems+=("python3 not found: install Python >= $python_min and < $python_below (Debian/Ubuntu: apt-get install python3 python3-venv)")
else
  python_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  python_where=$(command -v python3)
  if ! version_at_least "$python_version" "$python_min" || version_at_least "$python_version" "$python_below"; then
    fix="put a Python >= $python_min and < $python_below first on PATH"
    [[ $python_where != "$GANTRY_ROOT/.venv/"* ]] || fix="remove .venv and rerun with a Python >= $python_min and < $python_below as python3"
    problems+=("$python_where is Python $python_version; the pinned wheels need >= $python_min and < $python_below: $fix")
  elif [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    problems+=("$python_where cannot create a virtual environment: apt-get install python3-venv (Debian/Ubuntu)")
  fi
fi
if [ ${#problems[@]} -gt 0 ]; then
  printf 'bootstrap: %s\n' "${problems[@]}" >&2
  exit 1
fi

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
# The Python job client (clients/python), its gRPC stubs generated from proto/ by the venv's
# grpcio-tools: re-installed when the proto, the package's files or the pins change.
client_stamp=.venv/.gantry-client
client_want=$(find proto/gantry deploy/requirements.txt clients/python/pyproject.toml clients/python/setup.py \
  clients/python/README.md clients/python/src -type f ! -name '*.pyc' ! -name 'gantry_pb2*' ! -path '*.egg-info/*' \
  -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$client_stamp" 2>/dev/null)" != "$client_want" ]; then
  echo "bootstrap: installing the Python job client (clients/python) into .venv"
  .venv/bin/pip install --disable-pip-version-check --quiet --no-build-isolation --no-deps ./clients/python
  echo "$client_want" > "$client_stamp"
fi

# The worker's collectives shim (worker/build.rs) compiles against libtorch's c10d headers.
# Its Gloo side also needs gloo's own headers, which the torch wheel does not ship: the Debian
# package libgloo-dev has them (only the headers are used; libtorch carries its own gloo).
gloo_folders=()
[ -z "${GANTRY_GLOO_INCLUDE:-}" ] || IFS=: read -r -a gloo_folders <<< "$GANTRY_GLOO_INCLUDE"
gloo_folders+=(/usr/local/include /usr/include)
have_gloo() {
  local folder
  for folder in "${gloo_folders[@]}"; do [ -f "$folder/gloo/algorithm.h" ] && return 0; done
  return 1
}
if ! have_gloo; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing libgloo-dev (gloo's headers, for the worker's collectives)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq libgloo-dev >/dev/null 2>&1 || {
      apt-get update -qq && apt-get install -y -qq libgloo-dev >/dev/null
    }
  fi
  if ! have_gloo; then
    echo "bootstrap: gloo's headers (gloo/algorithm.h) are missing and cannot be installed here" \
      "(that needs root and apt-get): as root, run 'apt-get install libgloo-dev'; or set" \
      "GANTRY_GLOO_INCLUDE to a folder holding gloo/ (gloo's source tree, configured)" >&2
    exit 1
  fi
fi

# Its NCCL side, with a CUDA torch: the CUDA runtime's headers come with the torch wheel's
# nvidia-* dependencies, except crt/ and nv/target, which CUDA 13 moved into wheels of their own.
# Without them the worker still builds, with Gloo only (worker/build.rs says so).
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -f "$site/torch/lib/libtorch_cuda.so" ]; then
  cuda_folders=()
  [ -z "${GANTRY_CUDA_INCLUDE:-}" ] || IFS=: read -r -a cuda_folders <<< "$GANTRY_CUDA_INCLUDE"
  cuda_folders+=("$site"/nvidia/*/include "${CUDA_HOME:-/usr/local/cuda}/include")
  have_cuda_header() {
    local folder
    for folder in "${cuda_folders[@]}"; do [ -e "$folder/$1" ] && return 0; done
    return 1
  }
  if ! have_cuda_header crt/host_config.h || ! have_cuda_header nv/target; then
    torch_cuda=$(sed -n "s/^cuda: .* = '\([0-9.]*\)'.*/\1/p" "$site/torch/version.py")
    case $torch_cuda in
      # The releases of the CUDA 13.0 toolkit whose runtime the torch wheel pins.
      13.0) headers=(nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85) ;;
      *) headers=() ;;
    esac
    if [ ${#headers[@]} -gt 0 ]; then
      echo "bootstrap: installing the CUDA $torch_cuda headers torch's wheels leave out (${headers[*]})"
      .venv/bin/pip install --disable-pip-version-check --quiet --no-deps "${headers[@]}"
    else
      echo "bootstrap: torch is built for CUDA ${torch_cuda:-?}, for which this script knows no header" \
        "wheels: the worker builds without NCCL unless CUDA_HOME or GANTRY_CUDA_INCLUDE points to" \
        "CUDA's include folder" >&2
    fi
  fi
fi

# The launch files' test (deploy/check.py) lints the shell scripts with shellcheck (Debian
# package; root).
if ! command -v shellcheck >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing shellcheck (the lint of the deploy scripts' test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq shellcheck >/dev/null 2>&1 || {
      apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null
    }
  fi
  if ! command -v shellcheck >/dev/null; then
    echo "bootstrap: shellcheck is missing and cannot be installed here (that needs root and" \
      "apt-get): as root, run 'apt-get install shellcheck' (or put a shellcheck binary on PATH)" >&2
    exit 1
  fi
fi

# The dashboard's test drives a real headless browser: Debian's chromium and its WebDriver
# (chromium-driver), through selenium (deploy/requirements.txt).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing chromium and chromium-driver (the dashboard's browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || {
      apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    }
  fi
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "bootstrap: chromium or chromedriver is missing and cannot be installed here (that needs" \
      "root and apt-get): as root, run 'apt-get install chromium chromium-driver'" >&2
    exit 1
  fi
fi

echo "bootstrap: building release binaries"
cargo build --release --workspace --bins --quiet
