#!/usr/bin/env bash
# Packs already-built release binaries for other machines (GPU nodes): stripped copies and, for
# those that use libtorch, a launcher that finds libtorch 2.11 wherever torch is installed there.
#   deploy/dist.sh [--from DIR] [--out DIR] [BINARY...]
#     --from  the built binaries (default: target/release; build them with deploy/bootstrap.sh)
#     --out   where to write (default: target/dist); replaced as a whole, swapped in when complete
#     BINARY  which binaries (default: worker, what a GPU node runs)
# Writes:
#   bin/<name>             launcher (deploy/launcher.sh) for a libtorch binary, else the binary
#   libexec/<name>         the stripped libtorch binary
#   libexec/<name>.needs   the libtorch libraries it links (the launcher checks they are there)
#   gpu-check.sh           deploy/gpu-check.sh, which finds bin/worker beside it
# Copy the folder to a node with python3 and torch 2.11 (or set GANTRY_LIBTORCH there to
# libtorch 2.11's lib folder) and run bin/worker or gpu-check.sh. Stripping removes the debug
# line tables (the release worker is about 200 MB, the stripped one about 27 MB) and keeps the
# symbol table, so backtraces still name functions; the release binaries are left as built.
# Needs binutils (strip, readelf), which the C++ compiler of the build already brings.
set -euo pipefail
deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$deploy/.." && pwd)

from=$root/target/release
out=$root/target/dist
binaries=()
while [ $# -gt 0 ]; do
  case $1 in
    --from) from=${2:?--from needs a folder}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "dist: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) binaries+=("$1"); shift ;;
  esac
done
[ ${#binaries[@]} -gt 0 ] || binaries=(worker)

for tool in strip readelf; do
  command -v "$tool" >/dev/null || { echo "dist: $tool not found (apt-get install binutils)" >&2; exit 1; }
done
for name in "${binaries[@]}"; do
  [ -x "$from/$name" ] || {
    echo "dist: $from/$name is missing: build it first (deploy/bootstrap.sh, or cargo build --release --bins)" >&2
    exit 1
  }
done

# Built beside the destination, then swapped in: a reader never sees half a dist. Only a folder
# that is empty or looks like a dist is replaced.
if [ -e "$out" ] && [ ! -d "$out/bin" ] && [ -n "$(ls -A "$out" 2>/dev/null || echo not-a-folder)" ]; then
  echo "dist: $out exists and is not a dist folder; not replacing it" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
staging=$(mktemp -d "$out.staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/bin" "$staging/libexec"
for name in "${binaries[@]}"; do
  needed=$(readelf -d "$from/$name" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  libtorch=$(grep -E '^lib(torch|c10)' <<<"$needed" || true)
  if [ -n "$libtorch" ]; then
    strip --strip-debug -o "$staging/libexec/$name" "$from/$name"
    printf '%s\n' "$libtorch" >"$staging/libexec/$name.needs"
    install -m 0755 "$deploy/launcher.sh" "$staging/bin/$name"
  else
    strip --strip-debug -o "$staging/bin/$name" "$from/$name"
  fi
done
install -m 0755 "$deploy/gpu-check.sh" "$staging/gpu-check.sh"
chmod 0755 "$staging"

rm -rf "$out"
mv "$staging" "$out"
trap - EXIT
for name in "${binaries[@]}"; do
  file=$out/libexec/$name
  [ -f "$file" ] || file=$out/bin/$name
  echo "dist: $out/bin/$name ($(du -k "$file" | cut -f1) KiB$([ -f "$file.needs" ] && printf ', needs %s' "$(paste -sd' ' "$file.needs")"))"
done
