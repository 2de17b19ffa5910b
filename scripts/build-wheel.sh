#!/usr/bin/env bash
# Builds the wheel into DIR (default dist/) with scikit-build-core, in a build virtual environment
# (build-wheel/venv), and tags it for the oldest glibc its binaries allow: manylinux_2_N, where
# GLIBC_2.N is the newest glibc symbol version the library and the CLI need (objdump -T), the
# rule auditwheel applies. Fails if they need libstdc++ or libgcc_s (GLIBCXX_, CXXABI_, GCC_
# versions, or libraries beyond glibc's): those are linked in statically (GPUSLEEP_STATIC_RUNTIME).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
work=build-wheel
venv=${WHEEL_BUILD_VENV:-$work/venv}
[ -x /usr/local/cuda/bin/nvcc ] && export CUDAToolkit_ROOT=${CUDAToolkit_ROOT:-/usr/local/cuda}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
if ! "$venv/bin/python" -c "import scikit_build_core, wheel" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "scikit-build-core>=0.10" wheel
fi
args=()
[ -d .deps ] && args+=("-Ccmake.define.CMAKE_PREFIX_PATH=$PWD/.deps")
rm -rf "$work/raw" "$work/unpacked"
"$venv/bin/pip" wheel . -q --no-build-isolation --no-deps -w "$work/raw" \
  -Cbuild-dir="$work/cmake" "${args[@]}"
raw=$(ls "$work"/raw/gpusleep-*.whl)

# What the binaries need from the system.
"$venv/bin/python" -m zipfile -e "$raw" "$work/unpacked"
bins=("$work/unpacked/gpusleep/lib/libgpusleep.so" "$work/unpacked/gpusleep/bin/gpusleep")
for b in "${bins[@]}"; do
  [ -f "$b" ] || { echo "build-wheel: $b is missing from the wheel" >&2; exit 1; }
done
if objdump -T "${bins[@]}" | grep -E 'GLIBCXX_|CXXABI_|GCC_[0-9]'; then
  echo "build-wheel: the binaries need libstdc++/libgcc_s symbol versions (above)" >&2
  exit 1
fi
needed=$(objdump -p "${bins[@]}" | awk '/NEEDED/ {print $2}' | sort -u)
for lib in $needed; do
  case $lib in
    libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux-*.so.*) ;;
    *) echo "build-wheel: the binaries need $lib, which manylinux does not allow" >&2; exit 1 ;;
  esac
done
glibc=$(objdump -T "${bins[@]}" | grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2,2n -u | tail -1)
minor=${glibc#GLIBC_2.}
platform="manylinux_2_${minor}_$(uname -m)"
name=$(basename "$raw")
name=${name%-linux_*.whl}-$platform.whl
"$venv/bin/python" -m wheel tags --platform-tag "$platform" --remove "$raw" >/dev/null
mkdir -p "$out"
mv "$work/raw/$name" "$out/$name"
echo "$out/$name (newest glibc symbol version: $glibc; needs: $(echo $needed))"
