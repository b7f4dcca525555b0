"""What the planner knows about a model: its shape and sizes, from a GGUF, an HF config.json or a run folder.

Reads GGUF metadata and tensor sizes (`edgetune.export.inspect`), `config.json`, or `runs/<target>/run.json` and
the gguf artifacts it names. Writes nothing. Raises ExportError for an unreadable GGUF, ConfigError for a file that
is not a decoder model or a run folder without GGUFs.

  weights   the GGUF's real size; else n_params × BITS_PER_WEIGHT / 8 (+ tokenizer metadata)
  KV cache  n_ctx × n_layers × n_kv_heads × (key_length + value_length) × 2 bytes (f16 K and V)
  compute   the buffer llama.cpp reserves for one N_UBATCH-token graph
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.constants import ARTIFACT_FILE, RUN_RECORD, Quant
from edgetune.errors import ConfigError

# --- sizes -------------------------------------------------------------------------------------------------
# Whole-file bits per weight. Block types are exact (Q8_0: 34 bytes per 32 weights; Q4_0, IQ4_NL: 18/32; Q5_0:
# 22/32; Q6_K: 210/256). The K-quant _M mixes keep attn_v/ffn_down partly at higher types: typical 7B averages.
BITS_PER_WEIGHT = {Quant.F16: 16.0, Quant.Q8_0: 8.5, Quant.Q6_K: 6.5625, Quant.Q5_K_M: 5.7, Quant.Q5_0: 5.5,
                   Quant.Q4_K_M: 4.85, Quant.Q4_0: 4.5, Quant.IQ4_NL: 4.5, Quant.Q3_K_M: 3.9, Quant.Q2_K: 3.35}
QK_K = 256  # K-quant super-block: rows whose length is not a multiple of it fall back to another type
# llama-quantize's fallbacks for such rows (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0, Q3_K/Q2_K→IQ4_NL); SmolLM2's
# hidden size 576 sends 180 of its 272 tensors there.
KQUANT_FALLBACK_BPW = {Quant.Q4_K_M: 5.5, Quant.Q5_K_M: 6.0, Quant.Q6_K: 8.5, Quant.Q3_K_M: 4.5, Quant.Q2_K: 4.5}
# The output matrix (output.weight, or token_embd when tied) stays at Q6_K below 8 bits, Q8_0 when unaligned.
OUTPUT_BPW, OUTPUT_FALLBACK_BPW = 6.5625, 8.5
METADATA_BYTES_PER_VOCAB_ENTRY = 40  # tokens + merges in the GGUF header: SmolLM2 measures 36.3 per entry
KV_BYTES_PER_VALUE = 2  # llama.cpp's default cache type is f16 for both K and V
N_UBATCH = 512  # llama.cpp's default physical batch
# llama.cpp's CPU compute buffer is the larger of the ubatch's logits (n_vocab) and attention scores
# (n_head × n_ctx), f32, plus FFN/residual activations. Measured with llama-cpp-python 0.3.36 on SmolLM2-135M,
# flash attention off: 98.3 MiB at n_ctx 512 and 2048, 166.4 MiB at 8192; this formula gives 117 / 117 / 170.
COMPUTE_SLACK = 1.1
# Process RSS before weights: Python + llama_cpp import measured 40 MB here (x86_64); a llama-server
# process with its vocab and thread stacks is in the same range.
RUNTIME_BASE_BYTES = 50_000_000


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs to know about a model, from GGUF metadata or an HF config."""

    n_params: int
    out_params: int  # the output matrix: output.weight, or token_embd when tied
    lookup_params: int  # an untied input embedding: one row is read per token, never multiplied
    n_layers: int
    n_embd: int
    n_head: int
    n_kv_head: int
    key_length: int
    value_length: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int | None
    metadata_bytes: int  # the GGUF header (tokenizer vocab and merges)

    def kv_bytes(self, n_ctx: int) -> int:
        return n_ctx * self.n_layers * self.n_kv_head * (self.key_length + self.value_length) * KV_BYTES_PER_VALUE

    def compute_bytes(self, n_ctx: int) -> int:
        widest = max(self.n_vocab, self.n_head * n_ctx) + 2 * self.n_ff + 4 * self.n_embd
        return int(min(N_UBATCH, n_ctx) * 4 * widest * COMPUTE_SLACK)

    def estimate(self, quant: Quant) -> tuple[int, int]:
        """(file bytes, weight bytes read per token) of this model quantized to `quant`."""
        aligned = self.n_embd % QK_K == 0
        bpw = BITS_PER_WEIGHT[quant] if aligned else KQUANT_FALLBACK_BPW.get(quant, BITS_PER_WEIGHT[quant])
        out_bpw = max(bpw, OUTPUT_BPW if aligned else OUTPUT_FALLBACK_BPW)
        body = self.n_params - self.out_params - self.lookup_params
        read_bits = body * bpw + self.out_params * out_bpw
        return int((read_bits + self.lookup_params * bpw) / 8) + self.metadata_bytes, int(read_bits / 8)


@dataclass(frozen=True)
class ModelFile:
    path: Path
    quant: str
    size_bytes: int
    read_bytes: int  # tensor bytes read per generated token (all but an untied input embedding)
    shape: ModelShape


def _need(value: Any, key: str, source: Path) -> Any:
    if value is None:
        raise ConfigError(f"{source} has no {key}", "give a decoder model's GGUF or config.json (not an adapter)")
    return value


def _widest(value: Any) -> int:
    return int(max(value) if isinstance(value, list) else value)  # per-layer lists (e.g. OpenELM) → the widest


def read_model_file(path: Path) -> ModelFile:
    """Shape, quant label and sizes of a GGUF. Raises ExportError (unreadable) or ConfigError (not a model)."""
    from gguf import Keys

    from edgetune.export.inspect import field_value, file_type_name, read_gguf

    path = Path(path)
    reader = read_gguf(path)
    arch = _need(field_value(reader, Keys.General.ARCHITECTURE), Keys.General.ARCHITECTURE, path)
    llm, attention = Keys.LLM, Keys.Attention

    def name(template: str) -> str:  # gguf.Keys' per-architecture keys are "{arch}.embedding_length" etc.
        return template.format(arch=arch)

    def key(template: str, default: Any = None) -> Any:
        value = field_value(reader, name(template))
        return default if value is None else value

    tensors = {t.name: t for t in reader.tensors}
    n_embd = int(_need(key(llm.EMBEDDING_LENGTH), name(llm.EMBEDDING_LENGTH), path))
    n_head = _widest(_need(key(attention.HEAD_COUNT), name(attention.HEAD_COUNT), path))
    key_length = int(key(attention.KEY_LENGTH, n_embd // n_head))
    embd = _need(tensors.get("token_embd.weight"), "token_embd.weight tensor", path)
    out = tensors.get("output.weight", embd)
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    shape = ModelShape(
        n_params=sum(int(t.n_elements) for t in reader.tensors), out_params=int(out.n_elements),
        lookup_params=int(embd.n_elements) if out is not embd else 0,
        n_layers=int(_need(key(llm.BLOCK_COUNT), name(llm.BLOCK_COUNT), path)), n_embd=n_embd, n_head=n_head,
        n_kv_head=_widest(key(attention.HEAD_COUNT_KV, n_head)), key_length=key_length,
        value_length=int(key(attention.VALUE_LENGTH, key_length)),
        n_ff=_widest(key(llm.FEED_FORWARD_LENGTH, 4 * n_embd)), n_vocab=int(out.n_elements) // n_embd,
        n_ctx_train=key(llm.CONTEXT_LENGTH), metadata_bytes=path.stat().st_size - tensor_bytes)
    matrices = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) > 1)
    label = file_type_name(field_value(reader, Keys.General.FILE_TYPE))
    quant = label or next(iter(matrices.most_common(1)), ("?",))[0]
    read = tensor_bytes - (int(embd.n_bytes) if shape.lookup_params else 0)
    return ModelFile(path, quant, path.stat().st_size, read, shape)


def shape_from_hf_config(path: Path) -> ModelShape:
    """A Llama-family shape (gated MLP) from config.json, or a folder holding one. Raises ConfigError."""
    path = Path(path)
    cfg_path = path / "config.json" if path.is_dir() else path
    try:
        raw = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read HF config {cfg_path}: {exc}", "point at a model folder's config.json") from exc
    raw = raw.get("text_config", raw) if "num_hidden_layers" not in raw else raw  # multimodal wrappers
    n_embd, n_layers = _need(raw.get("hidden_size"), "hidden_size", cfg_path), _need(
        raw.get("num_hidden_layers"), "num_hidden_layers", cfg_path)
    n_head = _need(raw.get("num_attention_heads"), "num_attention_heads", cfg_path)
    n_kv = raw.get("num_key_value_heads") or n_head
    head_dim = raw.get("head_dim") or n_embd // n_head
    n_ff = _need(raw.get("intermediate_size"), "intermediate_size", cfg_path)
    n_vocab = _need(raw.get("vocab_size"), "vocab_size", cfg_path)
    tied = bool(raw.get("tie_word_embeddings", False))  # absent: count an untied head (the larger need)
    per_layer = 2 * n_embd * n_head * head_dim + 2 * n_embd * n_kv * head_dim + 3 * n_embd * n_ff + 2 * n_embd
    embd = n_vocab * n_embd
    return ModelShape(
        n_params=n_layers * per_layer + n_embd + embd * (1 if tied else 2), out_params=embd,
        lookup_params=0 if tied else embd, n_layers=n_layers, n_embd=n_embd, n_head=n_head, n_kv_head=n_kv,
        key_length=head_dim, value_length=head_dim, n_ff=n_ff, n_vocab=n_vocab,
        n_ctx_train=raw.get("max_position_embeddings"), metadata_bytes=n_vocab * METADATA_BYTES_PER_VOCAB_ENTRY)


def ggufs_in_run(run_dir: Path) -> list[Path]:
    """The GGUF of every `gguf-*` stage named in RUN_DIR/run.json (written by `edgetune build`)."""
    record_path = Path(run_dir) / RUN_RECORD
    try:
        stages = json.loads(record_path.read_text())["stages"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{record_path} is missing or unreadable", "point --run at edgetune-out/runs/<target>, "
                          "written by `edgetune build`") from exc
    found = []
    for name, folder in sorted(stages.items()):
        # a searched mix (gguf-auto:<QUANT>-size) carries its budget's file type and fits where that file fits:
        # planned, it would be a second row of the same name
        if not name.startswith("gguf-") or name.startswith("gguf-auto:"):
            continue
        folder = Path(folder)
        if folder.parts[-3:-2] == ("store",) and not folder.is_dir():  # a relative out_dir: resolve from the run
            folder = Path(run_dir).parent.parent.joinpath(*folder.parts[-3:])
        try:
            found.append(folder / json.loads((folder / ARTIFACT_FILE).read_text())["outputs"]["gguf"])
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"stage {name} of {record_path}: no readable artifact at {folder}",
                              "re-run `edgetune build`") from exc
    if not found:
        raise ConfigError(f"{record_path} names no GGUF stages", "run `edgetune build` to the export stage first")
    return found
