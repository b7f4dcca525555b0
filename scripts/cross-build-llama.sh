#!/usr/bin/env bash
# Cross-compile llama.cpp's llama-server, llama-cli and llama-bench for an aarch64 board, statically linked,
# from the llama.cpp that the installed llama-cpp-python vendors (its sdist), with -mcpu from the target profile.
#
#   usage: scripts/cross-build-llama.sh MCPU            e.g. scripts/cross-build-llama.sh cortex-a76
#          (MCPU is the `cpu.mcpu` of the board's target profile; `edgetune targets show rpi5` prints it)
#
# Output: $EDGETUNE_HOME/cross/<llama-cpp-python version>-<hash of flags>/
#           bin/llama-server bin/llama-cli bin/llama-bench   static aarch64 executables
#           build.json                                       version, llama.cpp commit, mcpu, flags, features
#           .stamp                                           written last: a folder without it is not a build
# Cached by version + mcpu + flags: a second run with the same ones does nothing. Nothing is committed.
# No downloads at build time (no prebuilt web UI, no HTTPS client, no KleidiAI, no tests or examples).
# GGML_NATIVE=OFF and no GGML_CPU_ARM_ARCH: ggml then adds no -march of its own, so the ISA is exactly what
# -mcpu gives (cortex-a76: NEON, dotprod, fp16; no SVE, no i8mm, as on a Raspberry Pi 5).
# Installs gcc/g++-aarch64-linux-gnu with apt-get when missing (needs root). 5-12 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -eq 1 ] || { echo "usage: $0 MCPU   (e.g. cortex-a76; the target profile's cpu.mcpu)" >&2; exit 2; }
MCPU=$1
[[ $MCPU =~ ^[a-z0-9.+_-]+$ ]] || { echo "error: bad -mcpu value '$MCPU'" >&2; exit 2; }
# Bump when the recipe below changes in a way the flags do not show; edgetune.runtime_build checks it.
RECIPE=1
PY=${PYTHON:-.venv/bin/python}
CACHE=${EDGETUNE_HOME:-$HOME/.cache/edgetune}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-$("$PY" -c "from importlib.metadata import version; print(version('llama-cpp-python'))")}
SDIST=$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz
TOOLS=(llama-server llama-cli llama-bench)
CC=aarch64-linux-gnu-gcc
CXX=aarch64-linux-gnu-g++

if ! command -v "$CXX" >/dev/null || ! command -v "$CC" >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $CXX is missing; run as root or: sudo apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu" >&2
    exit 9
  fi
  echo "==> installing the aarch64 cross compilers (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu >/dev/null
fi
"$CC" -mcpu="$MCPU" -x c -c -o /dev/null /dev/null 2>/dev/null \
  || { echo "error: $CC does not know -mcpu=$MCPU" >&2; exit 2; }

# OpenMP from libgomp.a: CMake's FindOpenMP would name libgomp.so, which a -static link refuses.
GOMP=$("$CC" -print-file-name=libgomp.a)
FLAGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_CPU_KLEIDIAI=OFF
       -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=ON "-DOpenMP_gomp_LIBRARY=$GOMP"
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF
       -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
       "-DCMAKE_C_FLAGS=-mcpu=$MCPU" "-DCMAKE_CXX_FLAGS=-mcpu=$MCPU" "-DCMAKE_EXE_LINKER_FLAGS=-static")
KEY=$(printf '%s\n' "$RECIPE" "$VERSION" "$CC" "${FLAGS[@]}" "${TOOLS[@]}" | sha256sum | cut -c1-12)
OUT=$CACHE/cross/$VERSION-$KEY
if [ -f "$OUT/.stamp" ]; then echo "aarch64 llama.cpp (-mcpu=$MCPU) already built in $OUT/bin" >&2; echo "$OUT"; exit 0; fi

if [ ! -f "$SDIST" ]; then
  echo "error: $SDIST is missing; run scripts/setup.sh (it fetches the sdist once)" >&2
  exit 9
fi
# The build folder outlives a failed or killed run, so the next run picks up where it stopped.
WORK=$CACHE/cross/.build-$VERSION-$KEY
trap 'rm -rf "$OUT.tmp"' EXIT
mkdir -p "$WORK"
[ -f "$WORK/CMakeLists.txt" ] || tar xzf "$SDIST" -C "$WORK" --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp/"
REVISION=$(tar xzf "$SDIST" -O "llama_cpp_python-$VERSION/.git/modules/vendor/llama.cpp/HEAD" 2>/dev/null || echo unknown)
cat >"$WORK/aarch64.cmake" <<EOF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER $CC)
set(CMAKE_CXX_COMPILER $CXX)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
EOF

echo "==> cross-building ${TOOLS[*]} for aarch64 -mcpu=$MCPU (llama-cpp-python $VERSION; 5-12 min on 2 cores)" >&2
START=$(date +%s)
cmake -S "$WORK" -B "$WORK/build" -DCMAKE_TOOLCHAIN_FILE="$WORK/aarch64.cmake" "${FLAGS[@]}" >"$WORK/configure.log" 2>&1 \
  || { tail -30 "$WORK/configure.log" >&2; exit 9; }
# The ARM features these flags turn on, as ggml's own check sees them (__ARM_FEATURE_* of the compiler)
MACROS=$("$CC" -mcpu="$MCPU" -dM -E -x c /dev/null)
FEATURES=$(for f in DOTPROD SVE MATMUL_INT8 FMA FP16_VECTOR_ARITHMETIC SME; do
  if grep -q "__ARM_FEATURE_$f " <<<"$MACROS"; then echo "$f"; fi; done | paste -sd, -)
nice cmake --build "$WORK/build" --target "${TOOLS[@]}" -j "$(nproc)" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; echo "error: build failed; log and objects kept in $WORK" >&2; exit 9; }
SECONDS_TAKEN=$(( $(date +%s) - START ))

rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp/bin"
for t in "${TOOLS[@]}"; do
  cp "$WORK/build/bin/$t" "$OUT.tmp/bin/"
  aarch64-linux-gnu-strip "$OUT.tmp/bin/$t"
  # a static executable has no program interpreter; refuse anything else
  if aarch64-linux-gnu-readelf -l "$OUT.tmp/bin/$t" | grep -q 'program interpreter'; then
    echo "error: $t is not statically linked" >&2; exit 9
  fi
done
"$PY" - "$OUT.tmp/build.json" "$RECIPE" "$VERSION" "$REVISION" "$MCPU" "$FEATURES" "$SECONDS_TAKEN" \
  "$("$CXX" --version | head -1)" "${TOOLS[*]}" "${FLAGS[@]}" <<'EOF'
import json, sys
out, recipe, version, revision, mcpu, features, seconds, compiler, tools, *flags = sys.argv[1:]
record = {"recipe": int(recipe), "llama-cpp-python": version, "llama.cpp": revision, "arch": "aarch64",
          "mcpu": mcpu, "arm_features": [f for f in features.split(",") if f], "compiler": compiler,
          "cmake_flags": flags, "static": True, "binaries": tools.split(), "build_seconds": int(seconds)}
open(out, "w").write(json.dumps(record, indent=2) + "\n")
EOF
touch "$OUT.tmp/.stamp"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
rm -rf "$WORK"
echo "aarch64 llama.cpp (-mcpu=$MCPU) built in $OUT/bin in ${SECONDS_TAKEN}s" >&2
echo "$OUT"
