"""The planner: for one target board, which quant of a model fits in memory, and how fast it should run.

Reads models through `edgetune.modelshape` (GGUF files, an HF config.json, a run folder). Writes nothing. Raises
ConfigError for bad input, ExportError for an unreadable GGUF, PlanError (from `Plan.require_pick`) when no
candidate fits the board.

Memory need = weights + KV cache + runtime overhead (RUNTIME_BASE_BYTES + llama.cpp's compute buffer), against
`Target.usable_ram_bytes`; swap never counts (paging weights from SD/eMMC or zram stalls every token).
Predicted speeds are rooflines, estimates to be checked against on-device measurements (llama-bench pp512/tg128):
  generation tok/s = mem_bandwidth_gbs × GEN_BW_EFFICIENCY / bytes read per token (weights + KV)
  prompt tok/s     = cores × clock × ops/cycle(features) × PP_EFFICIENCY × kernel speedup / ops per token
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.constants import Quant
from edgetune.errors import ConfigError, PlanError
from edgetune.modelshape import (
    RUNTIME_BASE_BYTES,
    ModelShape,
    ggufs_in_run,
    read_model_file,
    shape_from_hf_config,
)
from edgetune.targets import Target

log = logging.getLogger(__name__)

# --- speed: rooflines scaled by constants fitted on published measurements -----------------------------------
# The fit and its held-out check: benchmarks/planner_fit.py over benchmarks/data/published_speeds.yaml (sources
# and results in docs/planner.md; log benchmarks/results-planner-fit-2026-12-07.log). A board's own llama-bench
# runs replace both shares with its calibration (edgetune.calibration, `edgetune plan --calibrate`).
# Share of the sustained bandwidth llama.cpp's decode streams (thread barriers per op, attention, sampling): a
# convention, not a fit. The profiles' mem_bandwidth_gbs are fitted at this share from the fit set's decode rates.
GEN_BW_EFFICIENCY = 0.8
# Share of the int8 (or float) peak reached in prompt processing: the geometric mean of measured / predicted
# over the fit set's prompt rates (Llama-2-7B Q4_0 on a Pi 5, Phi-3-mini IQ4_XS on an RK3588).
PP_EFFICIENCY = 0.153
# Q4_0 and IQ4_NL are repacked at load for ARM NEON+dotprod (4x4) or i8mm (4x8) GEMM kernels. An assumption of
# their prompt speed-up over the plain dot-product path, neither fitted nor tested: every published figure in
# the data predates repacking. A board's llama-bench pp512 of Q4_0 against Q8_0 measures it.
REPACK_SPEEDUP = 2.0
REPACKED_ON_ARM = frozenset({Quant.Q4_0.value, Quant.IQ4_NL.value})
# int8 multiply-accumulate ops per cycle per core (1 MAC = 2 ops): SMMLA 2 pipes × 32 MACs; AVX-VNNI 2 ports
# × 32; SDOT 2 pipes × 16; AVX2 vpmaddubsw+vpmaddwd ≈ 32 MACs; plain NEON widening multiplies ≈ 8 MACs.
INT8_OPS_PER_CYCLE = (("i8mm", 128), ("avx512_vnni", 128), ("avx_vnni", 128), ("dotprod", 64), ("avx2", 64))
NEON_INT8_OPS_PER_CYCLE = 16
# F16 weights run on float FMAs: 2 pipes × 8 half lanes × 2 with ARM fp16 or x86 FMA (f32 × 8), else f32 × 4.
F16_OPS_PER_CYCLE = (("fp16", 32), ("fma", 32))
F32_NEON_OPS_PER_CYCLE = 16
BENCH_CONTEXT_TOKENS = 512  # speeds are predicted for a 512-token prompt and tokens generated right after it

# Kernel-speed order per CPU class (the pick takes the target's own `quants` first, then this order).
_PREFERENCE = {
    "x86": ["Q8_0", "Q4_K_M", "Q6_K", "Q5_K_M", "Q4_0", "IQ4_NL", "Q5_0", "Q3_K_M", "Q2_K", "F16"],
    "i8mm": ["Q4_K_M", "Q4_0", "Q8_0", "Q6_K", "Q5_K_M", "IQ4_NL", "Q5_0", "Q3_K_M", "Q2_K", "F16"],
    "dotprod": ["Q4_0", "IQ4_NL", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q3_K_M", "Q2_K", "F16"],
    "neon": ["Q4_0", "Q8_0", "Q5_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_NL", "Q3_K_M", "Q2_K", "F16"],
}
_WHY = {
    "x86": "x86 AVX2 has fast kernels for Q8_0 and the K-quants",
    "i8mm": "i8mm/SVE int8 matrix kernels make the K-quants fast",
    "dotprod": "llama.cpp repacks Q4_0 and IQ4_NL for NEON+dotprod at load: the fastest 4-bit path without i8mm",
    "neon": "no dotprod: no repacking; Q4_0 is the simplest 4-bit NEON kernel and halves the bytes per token",
}


def cpu_class(target: Target) -> str:
    features = set(target.cpu.features)
    if target.arch == "x86_64":
        return "x86"
    return "i8mm" if features & {"i8mm", "sve"} else "dotprod" if "dotprod" in features else "neon"


def preference(target: Target) -> list[str]:
    """Quant names in pick order: the target's own list first, then the kernel-speed order of its CPU class."""
    return list(dict.fromkeys([*(q.value for q in target.quants), *_PREFERENCE[cpu_class(target)]]))


@dataclass(frozen=True)
class Row:
    quant: str
    source: str  # "file" or "estimate"
    path: Path | None
    n_ctx: int
    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    need_bytes: int
    status: str  # fits | over-share (under the RAM, over its usable share) | swap | oom
    prompt_tok_s: float
    gen_tok_s: float

    @property
    def fits(self) -> bool:
        return self.status == "fits"


@dataclass(frozen=True)
class Efficiency:
    """The two shares the rooflines are scaled by: the published fit (below) or a board's own calibration
    (edgetune.calibration, from llama-bench runs on the device)."""

    gen_bw: float = GEN_BW_EFFICIENCY
    pp: float = PP_EFFICIENCY
    source: str = "published fit (docs/planner.md)"


DEFAULT_EFFICIENCY = Efficiency()


@dataclass(frozen=True)
class Speeds:
    prompt: float
    gen: float  # min(bandwidth roofline, prompt): what the plan shows
    gen_roofline: float  # the bandwidth roofline alone: what a calibration scales


def predict_speeds(target: Target, shape: ModelShape, quant: str, read_bytes: int,
                   eff: Efficiency = DEFAULT_EFFICIENCY) -> Speeds:
    """Prompt and generation tokens per second for a BENCH_CONTEXT_TOKENS prompt: roofline estimates."""
    ctx = min(BENCH_CONTEXT_TOKENS, target.context_length)
    features = set(target.cpu.features)
    if quant == Quant.F16.value:
        per_cycle = next((n for f, n in F16_OPS_PER_CYCLE if f in features), F32_NEON_OPS_PER_CYCLE)
    else:
        per_cycle = next((n for f, n in INT8_OPS_PER_CYCLE if f in features), NEON_INT8_OPS_PER_CYCLE)
    repacked = target.arch == "aarch64" and quant in REPACKED_ON_ARM and bool(features & {"dotprod", "i8mm"})
    attention = 2 * shape.n_layers * shape.n_head * (shape.key_length + shape.value_length) * ctx // 2
    ops_per_token = 2 * (shape.n_params - shape.lookup_params) + attention
    peak = target.cpu.cores * target.cpu.clock_ghz * 1e9 * per_cycle
    prompt = peak * eff.pp * (REPACK_SPEEDUP if repacked else 1.0) / ops_per_token
    gen = target.mem_bandwidth_gbs * 1e9 * eff.gen_bw / (read_bytes + shape.kv_bytes(ctx))
    return Speeds(prompt, min(gen, prompt), gen)  # a decode step is never faster than a prompt token


def predict_tok_s(target: Target, shape: ModelShape, quant: str, read_bytes: int,
                  eff: Efficiency = DEFAULT_EFFICIENCY) -> tuple[float, float]:
    """(prompt, generation) tokens per second for a BENCH_CONTEXT_TOKENS prompt: roofline estimates."""
    speeds = predict_speeds(target, shape, quant, read_bytes, eff)
    return speeds.prompt, speeds.gen


def plan_context(target: Target, shape: ModelShape) -> int:
    """The context a plan row's KV cache and compute buffer are sized for: the target's, within the model's."""
    return min(target.context_length, shape.n_ctx_train or target.context_length)


def runtime_bytes(target: Target, shape: ModelShape) -> tuple[int, int]:
    """(KV cache, runtime overhead) bytes beside the weights at the planned context."""
    n_ctx = plan_context(target, shape)
    return shape.kv_bytes(n_ctx), RUNTIME_BASE_BYTES + shape.compute_bytes(n_ctx)


def max_file_bytes(target: Target, shape: ModelShape) -> int:
    """The largest model file of `shape` that still `fits` the target's usable RAM (the rows' own memory model:
    file + KV cache + runtime overhead at the planned context); negative when not even an empty one would."""
    kv, overhead = runtime_bytes(target, shape)
    return target.usable_ram_bytes - kv - overhead


def max_read_bytes(target: Target, shape: ModelShape, quant: str, min_gen_tok_s: float,
                   eff: Efficiency = DEFAULT_EFFICIENCY) -> int:
    """The most weight bytes a generated token may read for the predicted generation speed (`predict_speeds`'
    gen) to stay at or above `min_gen_tok_s`: the bandwidth roofline solved for the bytes. Negative when no
    size reaches it (the KV cache alone is too slow, or the prompt roofline, which caps decode, is below it)."""
    if min_gen_tok_s <= 0:
        raise ConfigError(f"a speed floor must be above 0 tok/s, got {min_gen_tok_s:g}", "give a positive tok/s")
    if predict_speeds(target, shape, quant, 1, eff).prompt < min_gen_tok_s:
        return -1
    ctx = min(BENCH_CONTEXT_TOKENS, target.context_length)
    return int(target.mem_bandwidth_gbs * 1e9 * eff.gen_bw / min_gen_tok_s) - shape.kv_bytes(ctx)


def _row(target: Target, shape: ModelShape, quant: str, source: str, path: Path | None, size: int,
         read: int, eff: Efficiency) -> Row:
    n_ctx = plan_context(target, shape)
    kv, overhead = runtime_bytes(target, shape)
    need = size + kv + overhead
    ram, swap = int(target.ram_gb * 1e9), int(target.swap_gb * 1e9)
    status = ("fits" if need <= target.usable_ram_bytes else "over-share" if need <= ram
              else "swap" if need <= ram + swap else "oom")
    prompt, gen = predict_tok_s(target, shape, quant, read, eff)
    return Row(quant, source, path, n_ctx, size, kv, overhead, need, status, round(prompt, 1), round(gen, 1))


@dataclass(frozen=True)
class Plan:
    target: Target
    rows: list[Row]  # in pick order
    pick: Row | None
    efficiency: Efficiency = DEFAULT_EFFICIENCY

    @property
    def reason(self) -> str:
        if self.pick is None or self.pick.quant == self.rows[0].quant:
            return _WHY[cpu_class(self.target)]
        skipped = list(dict.fromkeys(r.quant for r in self.rows[: self.rows.index(self.pick)]))
        return f"the first in {self.target.name}'s order that fits; too big: {', '.join(skipped)}"

    def require_pick(self) -> Row:
        """The pick; PlanError naming the smallest need and the usable RAM when nothing fits."""
        if self.pick is None:
            t, small = self.target, min(self.rows, key=lambda r: r.need_bytes)
            raise PlanError(
                f"no quant fits {t.name}: the smallest need is {small.quant} at {_mb(small.need_bytes)}, "
                f"usable RAM is {_mb(t.usable_ram_bytes)} ({t.usable_ram_share:.0%} of {t.ram_gb:g} GB)",
                "use a smaller model or a lower-bit quant, shorten the target's context_length, or pick a board "
                "with more RAM; swap is no way out: paging weights stalls every token")
        return self.pick

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {"target": t.name, "ram_gb": t.ram_gb, "usable_ram_bytes": t.usable_ram_bytes,
                "rows": [{**vars(r), "path": str(r.path) if r.path else None, "fits": r.fits} for r in self.rows],
                "pick": self.pick.quant if self.pick else None,
                "pick_path": str(self.pick.path) if self.pick and self.pick.path else None, "reason": self.reason,
                "assumptions": {"gen_bw_efficiency": self.efficiency.gen_bw, "pp_efficiency": self.efficiency.pp,
                                "efficiency_source": self.efficiency.source,
                                "repack_speedup": REPACK_SPEEDUP, "bench_context_tokens": BENCH_CONTEXT_TOKENS,
                                "runtime_base_bytes": RUNTIME_BASE_BYTES, "kv_cache": "f16"}}

    def table(self) -> str:
        t = self.target
        head = (f"{t.name}: {t.cpu.cores}x {t.cpu.core} @ {t.cpu.clock_ghz:g} GHz [{', '.join(t.cpu.features)}], "
                f"{t.mem_bandwidth_gbs:g} GB/s; usable RAM {_mb(t.usable_ram_bytes)} "
                f"({t.usable_ram_share:.0%} of {t.ram_gb:g} GB)")
        fmt = "{:<8} {:<9} {:>5} {:>10} {:>10} {:<10} {:>12} {:>9}".format
        lines = [head, fmt("quant", "source", "ctx", "weights", "need", "fits", "prompt tok/s", "gen tok/s")]
        lines += [fmt(r.quant, r.source, r.n_ctx, _mb(r.weights_bytes), _mb(r.need_bytes), r.status,
                      f"{r.prompt_tok_s:.1f}", f"{r.gen_tok_s:.1f}") for r in self.rows]
        lines.append(f"pick: {self.pick.quant} ({self.reason})" if self.pick else "pick: none fits")
        e = self.efficiency
        lines.append(f"speeds are roofline estimates (bandwidth x {e.gen_bw:.3g}, int8 peak x {e.pp:.3g}; "
                     f"{e.source}) for a 512-token prompt: check them on the device")
        return "\n".join(lines)


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def make_plan(target: Target, *, ggufs: Sequence[Path] = (), run_dir: Path | None = None,
              hf_config: Path | None = None, quants: Sequence[Quant] = (),
              efficiency: Efficiency = DEFAULT_EFFICIENCY) -> Plan:
    """Rows for every GGUF given (real sizes) and estimated rows for `quants` (default, when no GGUF is given:
    the target's list) from the HF config's shape, else the first GGUF's. Raises ConfigError with no model."""
    files = [read_model_file(p) for p in [*ggufs, *(ggufs_in_run(run_dir) if run_dir else [])]]
    shape = shape_from_hf_config(hf_config) if hf_config else files[0].shape if files else None
    if shape is None:
        raise ConfigError("no model to plan for", "give --gguf FILE, --run RUN_DIR or --hf-config PATH")
    rows = [_row(target, f.shape, f.quant, "file", f.path, f.size_bytes, f.read_bytes, efficiency) for f in files]
    for quant in quants or ([] if files else target.quants):
        rows.append(_row(target, shape, quant.value, "estimate", None, *shape.estimate(quant), efficiency))
    order = {q: i for i, q in enumerate(preference(target))}
    rows.sort(key=lambda r: (order.get(r.quant, len(order)), r.source != "file"))
    pick = next((r for r in rows if r.fits), None)
    log.debug("plan for %s: %d rows, pick %s", target.name, len(rows), pick and pick.quant)
    return Plan(target, rows, pick, efficiency)
