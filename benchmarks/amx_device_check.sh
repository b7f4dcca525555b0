#!/usr/bin/env bash
# llama.cpp's AMX path on an x86 host with AMX (NOTES.md, issue 13): the same llama.cpp source built with ggml's
# -march=native (what set-up did before) and at toolchain/edgetune/cpu.py's levels `host` (this CPU's sets, AMX
# included) and `host-no-amx`; for each build: whether the AMX buffer is used (llama-bench -v), whether each quant
# type of a random-weight Llama (hidden 2048, 2 layers, SmolLM2 tokenizer) computes or crashes, and tok/s
# (llama-bench -p 512 -n 64 -r 3 -t 8) for Q8_0, Q4_0 and Q4_K_M. For the device tool's GPU host (16 cores).
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
BUILDS=(native host host-no-amx)
declare -A FLAGS=([native]="" [host]="$(python3 toolchain/edgetune/cpu.py cmake-args host)"
                  [host-no-amx]="$(python3 toolchain/edgetune/cpu.py cmake-args host-no-amx)")
for build in "${BUILDS[@]}"; do
  read -r -a extra <<< "${FLAGS[$build]}"
  cmake -S "$W/src" -B "$W/b-$build" "${COMMON[@]}" "${extra[@]}" >/dev/null 2>&1 \
    && cmake --build "$W/b-$build" --target llama-bench llama-quantize -j "$(nproc)" >/dev/null 2>&1 \
    || { echo "$build: build failed"; continue; }
  echo "$build flags: ${FLAGS[$build]:-ggml default (-march=native)}"
done
for q in "${QUANTS[@]}"; do
  "$W/b-host-no-amx/bin/llama-quantize" "$W/m-F16.gguf" "$W/m-$q.gguf" "$q" >/dev/null 2>&1 || echo "quantize $q failed"
done
for build in "${BUILDS[@]}"; do
  amx=$("$W/b-$build/bin/llama-bench" -m "$W/m-Q8_0.gguf" -p 64 -n 8 -r 1 -t 4 -v 2>&1 | grep -c "amx repack")
  echo "build=$build Q8_0 tensors in the AMX buffer: $amx"
  for q in F16 "${QUANTS[@]}"; do
    out=$("$W/b-$build/bin/llama-bench" -m "$W/m-$q.gguf" -p 64 -n 8 -r 1 -t 4 -o csv 2>&1)
    rc=$?
    [ $rc -gt 128 ] && what="CRASH (signal $((rc - 128)))" || what="exit $rc"
    echo "build=$build quant=$q $what"
    [ $rc -ne 0 ] && printf '%s\n' "$out" | tail -3 | sed 's/^/    /'
  done
done
echo "tok/s, llama-bench -p 512 -n 64 -r 3 -t 8 (pp: prompt processing, tg: generation)"
for q in Q8_0 Q4_0 Q4_K_M; do
  for build in "${BUILDS[@]}"; do
    printf '%-12s %-7s ' "$build" "$q"
    "$W/b-$build/bin/llama-bench" -m "$W/m-$q.gguf" -p 512 -n 64 -r 3 -t 8 -o csv 2>/dev/null | python3 -c "
import csv, sys
rows = list(csv.DictReader(sys.stdin))
print(' '.join(f\"{'pp' if int(r['n_prompt']) else 'tg'}={float(r['avg_ts']):.1f}\" for r in rows))"
  done
done
