#!/usr/bin/env bash
# Issue 16 (train.compile_layers vs Unsloth on the Llama-3.2-1B shape) on the device tool's one-H100 host, which has
# no PyPI and (2026-12-07) Python 3.12, torch 2.11, transformers 5.17, peft 0.21, accelerate, but no bitsandbytes,
# trl, datasets, liger-kernel or pydantic: those and Unsloth's set are carried as wheels. Every run has edgetune-trl
# and unsloth-trl beside the new variants, in one invocation (benchmarks/results-train-throughput-compile-2026-12-07.log).
#
#   here:    benchmarks/train_compile_device.sh fetch     (pip download --no-deps into build/, ~90 MB; build/ is ignored)
#   device:  two calls back to back, as the carry limit is 64 MiB: first carry build/bnb-wheels and run
#              python3 -m pip install -q --no-index --no-deps --target /tmp/site-bnb build/bnb-wheels/*.whl
#            then carry build/et-wheels build/unsloth-wheels build/alt and run
#              PYTHONPATH=/tmp/site-bnb benchmarks/train_compile_device.sh 1b|7b|checks
#            (1b: ~4 min with cold compiles; checks: the CUDA compile test and the host-overhead probe,
#            train_host_overhead.py). The device tool copies the lead's checkout, not a helper's worktree.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = fetch ]; then
  dl() { d=$1; shift; python3 -m pip download -q --no-deps -d "build/$d" "$@"; }
  dl bnb-wheels bitsandbytes==0.50.2
  dl et-wheels trl==1.16.0 datasets==5.2.0 liger-kernel==0.8.5 dill==0.4.1 pydantic==2.14.4 \
     annotated-types typing-inspection click rich markdown-it-py mdurl pygments
  dl unsloth-wheels unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 datasets==4.3.0 cut_cross_entropy \
     torchao tyro hf_transfer docstring-parser typeguard shtab
  for v in 3.10 3.11 3.12; do  # per Python version: the host's decides which it takes
    dl "alt/py${v/./}" --only-binary=:all: --python-version "$v" msgspec==0.23.0 multiprocess==0.70.19 \
       pydantic-core==2.50.5 pyyaml
  done
  exit 0
fi
python3 --version; nvidia-smi -L; lscpu | grep -E "Model name|^CPU\(s\)"
python3 -m pip list 2>/dev/null | grep -iE 'torch|transformers|peft|bitsandbytes|trl|liger|datasets|accelerate|triton'
PYV=$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
# the binary wheels of the host's Python: msgspec for Unsloth's set, the rest for edgetune's
rm -f build/unsloth-wheels/msgspec-*; cp build/alt/py"$PYV"/msgspec-* build/unsloth-wheels/
cp $(ls build/alt/py"$PYV"/*.whl | grep -v msgspec) build/et-wheels/
[ -d /tmp/site ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site build/et-wheels/*.whl
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}/tmp/site:$PWD/toolchain HF_HUB_OFFLINE=1
B=(python3 benchmarks/train_throughput.py --unsloth-wheels build/unsloth-wheels --variant-timeout 300)
case "${1:-1b}" in
  1b) set -x; "${B[@]}" --shapes llama-1b --steps 8 --warmup 3 --variants \
        edgetune-trl,unsloth-trl,edgetune-trl-d0,edgetune-trl-compile-d0,edgetune-trl-compile ;;
  7b) set -x; "${B[@]}" --shapes mistral-7b --steps 4 --warmup 2 --variants \
        edgetune-trl,unsloth-trl,edgetune-trl-compile-d0,edgetune-trl-offload-d0,edgetune-trl-compile-offload-d0 ;;
  checks) set -x; python3 -m pytest -q -m gpu tests/train/test_compile.py -k cuda
    for d in 0.05 0.0; do python3 benchmarks/train_host_overhead.py --device cuda --dropout $d --steps 30; done ;;
esac
