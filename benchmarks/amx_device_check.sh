#!/usr/bin/env bash
# Reproduce llama.cpp's AMX crash (NOTES.md, issue 13) on an x86 host with AMX, and check edgetune's build flags
# avoid it: the same llama.cpp source built twice, with ggml's -march=native (what set-up did before) and with
# toolchain/edgetune/cpu.py's flags (this CPU's instruction sets, AMX off); llama-bench then computes with each
# quant type of a random-weight Llama (hidden 2048, 2 layers, SmolLM2 tokenizer) under both builds.
# Meant for the device tool's GPU host (16 cores), whose CPU may have AMX; prints one line per (build, quant).
#
#   needs: build/device/llama-src.tar.gz (vendor/llama.cpp of the llama-cpp-python sdist, no models/docs) and
#          build/device/tok (SmolLM2's tokenizer folder); both made at set-up time, never committed.
#   usage: benchmarks/amx_device_check.sh [QUANT ...]     (default: Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 IQ4_NL)
set -uo pipefail
cd "$(dirname "$0")/.."
QUANTS=("${@:-Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 IQ4_NL}")
read -r -a QUANTS <<< "${QUANTS[*]}"
W=${WORK:-/tmp/amx-check}
mkdir -p "$W/src"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "amx flags: $(grep -o 'amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
tar xzf build/device/llama-src.tar.gz -C "$W/src" --strip-components=1

python3 - "$W/model" build/device/tok <<'PY'
import sys, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
out, tok_dir = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(tok_dir)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=5632, num_hidden_layers=2,
                  num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048)
LlamaForCausalLM(cfg).save_pretrained(out)
tok.save_pretrained(out)
PY
PYTHONPATH=$W/src/gguf-py NO_LOCAL_GGUF= python3 "$W/src/convert_hf_to_gguf.py" "$W/model" --outfile "$W/m-F16.gguf" \
  --outtype f16 >/dev/null 2>&1 || { echo "conversion failed"; exit 1; }

COMMON=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF)
read -r -a EDGETUNE <<< "$(python3 toolchain/edgetune/cpu.py cmake-args)"
declare -A FLAGS=([native]="" [edgetune]="${EDGETUNE[*]}")
for build in native edgetune; do
  read -r -a extra <<< "${FLAGS[$build]}"
  cmake -S "$W/src" -B "$W/b-$build" "${COMMON[@]}" "${extra[@]}" >/dev/null 2>&1 \
    && cmake --build "$W/b-$build" --target llama-bench llama-quantize -j "$(nproc)" >/dev/null 2>&1 \
    || { echo "$build: build failed"; continue; }
  echo "$build flags: ${FLAGS[$build]:-ggml default (-march=native)}"
done
for q in "${QUANTS[@]}"; do
  "$W/b-edgetune/bin/llama-quantize" "$W/m-F16.gguf" "$W/m-$q.gguf" "$q" >/dev/null 2>&1 || echo "quantize $q failed"
done
for build in native edgetune; do
  for q in F16 "${QUANTS[@]}"; do
    out=$("$W/b-$build/bin/llama-bench" -m "$W/m-$q.gguf" -p 64 -n 8 -r 1 -t 4 -o csv 2>&1)
    rc=$?
    [ $rc -gt 128 ] && what="CRASH (signal $((rc - 128)))" || what="exit $rc"
    echo "build=$build quant=$q $what"
    [ $rc -ne 0 ] && printf '%s\n' "$out" | tail -3 | sed 's/^/    /'
  done
done
echo "repack 0 under the native build (the workaround upstream names):"
"$W/b-native/bin/llama-bench" -m "$W/m-Q8_0.gguf" -p 64 -n 8 -r 1 -t 4 --repack 0 -o csv >/dev/null 2>&1; echo "native Q8_0 --repack 0: exit $?"
