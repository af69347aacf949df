#!/bin/sh
# Launcher of a shipped gantry binary; deploy/dist.sh installs it as <dist>/bin/<name> next to the
# stripped <dist>/libexec/<name>. Finds libtorch 2.11.x on this machine, puts its folder on
# LD_LIBRARY_PATH (searched before the build machine's RUNPATH baked into the binary, which
# points nowhere here) and runs the binary with the same arguments.
#   GANTRY_LIBTORCH  libtorch's library folder (.../site-packages/torch/lib, holding
#                    libtorch_cpu.so), or the folder above it. Default: where the torch package of
#                    $GANTRY_PYTHON is installed.
#   GANTRY_PYTHON    the Python asked for torch's folder (default: python3 on PATH).
# The NVIDIA libraries of the CUDA wheel (site-packages/nvidia/*/lib) are found by
# libtorch_cuda.so itself, through its own RUNPATH. The launcher's own errors exit with 127.
set -eu

want=2.11
self=$(readlink -f -- "$0" 2>/dev/null || printf '%s\n' "$0")
name=${self##*/}
exe=$(dirname -- "$self")/../libexec/$name

die() {
  printf 'gantry %s: %s\n' "$name" "$*" >&2
  exit 127
}

[ -x "$exe" ] || die "$exe is missing (the launcher runs from <dist>/bin, written by deploy/dist.sh)"

if [ -n "${GANTRY_LIBTORCH:-}" ]; then
  lib=${GANTRY_LIBTORCH%/}
  if [ ! -f "$lib/libtorch_cpu.so" ] && [ -f "$lib/lib/libtorch_cpu.so" ]; then
    lib=$lib/lib
  fi
  [ -f "$lib/libtorch_cpu.so" ] || die "GANTRY_LIBTORCH=$GANTRY_LIBTORCH holds no libtorch_cpu.so (give torch's lib folder)"
  from="GANTRY_LIBTORCH"
else
  python=${GANTRY_PYTHON:-python3}
  command -v "$python" >/dev/null 2>&1 ||
    die "no $python to ask where torch is: install torch==2.11.0 for python3, or set GANTRY_LIBTORCH to libtorch 2.11's lib folder"
  # find_spec locates the package without importing it (no CUDA initialisation, milliseconds).
  package=$("$python" -c 'import importlib.util
spec = importlib.util.find_spec("torch")
print(spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else "")') ||
    die "$python failed to look for torch"
  [ -n "$package" ] ||
    die "$python has no torch: pip install torch==2.11.0 (or set GANTRY_PYTHON, or GANTRY_LIBTORCH to libtorch 2.11's lib folder)"
  lib=$package/lib
  [ -f "$lib/libtorch_cpu.so" ] || die "torch of $python at $package has no lib/libtorch_cpu.so"
  from=$python
fi

# The version: torch/version.py in the wheel, build-version in a libtorch archive.
top=$(dirname -- "$lib")
if [ -f "$top/version.py" ]; then
  version=$(sed -n "s/^__version__ *= *['\"]\([^'\"]*\)['\"].*/\1/p" "$top/version.py")
elif [ -f "$top/build-version" ]; then
  version=$(head -n 1 "$top/build-version")
else
  die "cannot tell the version of libtorch in $lib (no ../version.py nor ../build-version)"
fi
case $version in
  "$want".*) ;;
  *) die "needs torch $want.x (tch 0.24 binds libtorch $want); $lib (from $from) is torch ${version:-of unknown version}" ;;
esac

# The libtorch libraries this build was linked with (written by deploy/dist.sh): a CUDA build
# needs libtorch_cuda.so and libc10_cuda.so, which a CPU-only torch lacks.
if [ -f "$exe.needs" ]; then
  while IFS= read -r needed; do
    if [ -n "$needed" ] && [ ! -f "$lib/$needed" ]; then
      case $needed in
        *cuda*) why="this build links libtorch's CUDA backend, which a CPU-only torch lacks: install torch $want with CUDA" ;;
        *) why="an incomplete libtorch" ;;
      esac
      die "needs $needed, which $lib (from $from) lacks ($why)"
    fi
  done <"$exe.needs"
fi

LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
exec "$exe" "$@"
