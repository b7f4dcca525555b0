#!/usr/bin/env bash
# Build llama.cpp's native tools (llama-quantize, llama-imatrix, llama-perplexity, llama-bench, llama-server) from the
# llama.cpp that the installed llama-cpp-python vendors (its sdist), into $EDGETUNE_HOME/llama.cpp/<ver>/bin.
# Cached by version + flags: a second run does nothing. Nothing here is committed to the repo.
#   usage: scripts/build-llama-tools.sh [extra cmake flags]
# scripts/setup.sh passes the CPU flags of toolchain/edgetune/cpu.py (this CPU's instruction sets, AMX off), the
# same as the llama-cpp-python wheel's; with none, ggml's own -march=native applies. build.json records them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CACHE=${EDGETUNE_HOME:-$HOME/.cache/edgetune}
VERSION=$("$PY" -c "from importlib.metadata import version; print(version('llama-cpp-python'))")
SDIST=$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz
# llama-server: the x86 twin of the runtime bundles ship (tests run the device runner against it)
TOOLS=(llama-quantize llama-imatrix llama-perplexity llama-bench llama-server)
# No downloads at build time: no prebuilt web UI, no HTTPS client, no tests or examples.
FLAGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
       -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF "$@")
STAMP=$(printf '%s ' "$VERSION" "${FLAGS[@]}" | sha256sum | cut -c1-12)
OUT=$CACHE/llama.cpp/$VERSION/bin
if [ -f "$OUT/.stamp-$STAMP" ]; then echo "llama.cpp tools already built in $OUT" >&2; exit 0; fi

[ -f "$SDIST" ] || "$PY" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$CACHE/sdist"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgetune-llama-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar xzf "$SDIST" -C "$WORK" --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp/"
echo "==> building ${TOOLS[*]} (llama-cpp-python $VERSION; about 5-10 min on 2 cores)" >&2
cmake -S "$WORK" -B "$WORK/build" "${FLAGS[@]}" >/dev/null
cmake --build "$WORK/build" --target "${TOOLS[@]}" -j "$(nproc)" >/dev/null
mkdir -p "$OUT.tmp"
for t in "${TOOLS[@]}"; do cp "$WORK/build/bin/$t" "$OUT.tmp/"; done
printf '{"llama_cpp_python": "%s", "cmake_args": "%s"}\n' "$VERSION" "${FLAGS[*]}" > "$OUT.tmp/build.json"
touch "$OUT.tmp/.stamp-$STAMP"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "llama.cpp tools built in $OUT" >&2
