"""Per-tensor precision search: which tensors to keep at higher precision for a given file size.

1. Groups: the token embedding (tied to the output head on SmolLM2-class models) and each weight kind
   (attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down) within a band of consecutive layers.
2. Sensitivity: starting from a file with every group at the high type, quantize one group alone to each
   lower type and measure the fidelity loss (mean KL to the reference build on calibration prompts, given by a
   caller's `score` function) above the all-high file.
3. Choice: a multiple-choice knapsack over groups (exact dynamic programme over bytes, 4 KiB units): the
   type per group that minimises the summed KLD increases with the file size within the budget (export/budget.py:
   the tightest of the plain file's size, the target's usable RAM and a speed floor). Assumes the groups' losses
   add up, which the measured mix is then checked against.

Files are made by llama.cpp's own `llama-quantize` with `--tensor-type` regex overrides and
`--token-embedding-type` (every group named, so llama.cpp's own mixture rules never apply), through a temp file
renamed into place. Raises ExportError.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.errors import ExportError
from edgetune.export.budget import Budget
from edgetune.llamacpp import LlamaCppTools
from edgetune.proc import run_tool

log = logging.getLogger(__name__)

# Bits per weight of the block types a search may use (32-weight blocks: they fit any row of 32k columns, so no
# fallback surprises on hidden sizes like 576 that K-quants' 256-blocks do not divide). All repack or run fast
# on ARM NEON (llama.cpp repacks Q4_0 at load time).
BITS_PER_WEIGHT: dict[str, float] = {"Q4_0": 4.5, "IQ4_NL": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0,
                                     "Q8_0": 8.5, "F16": 16.0}
WEIGHT_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
TOKEN_EMBD = "token_embd"
# knapsack resolution: 4 KiB keeps the rounding (at most one unit per group) far below any budget's slack, and the
# exact programme stays ~1 s for SmolLM2-135M (23 groups, ~22k units)
UNIT_BYTES = 4096


@dataclass(frozen=True)
class TensorGroup:
    """Tensors that share one type: a weight kind in layers `layers`, or the token embedding (layers empty)."""

    name: str
    kind: str
    layers: tuple[int, ...]
    n_weights: int

    @property
    def pattern(self) -> str:
        """The llama-quantize --tensor-type regex for this group's tensors (searched in the tensor name)."""
        alt = "|".join(str(i) for i in self.layers)
        return rf"blk\.({alt})\.{self.kind}\.weight"

    def size_bytes(self, type_name: str) -> float:
        return self.n_weights * BITS_PER_WEIGHT[type_name] / 8


@dataclass(frozen=True)
class Mix:
    """One type per group; `base` is the file type given to llama-quantize (metadata only: every group is named)."""

    base: str
    types: Mapping[str, str]
    predicted_kld_increase: float = 0.0
    predicted_size_bytes: float = 0.0

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for t in self.types.values():
            counts[t] = counts.get(t, 0) + 1
        return ", ".join(f"{n} groups {t}" for t, n in sorted(counts.items()))


@dataclass
class Sensitivity:
    """KLD of the all-`high` file, and the KLD increase of each (group, lower type) measured alone."""

    high: str
    base_kld: float
    increase: dict[tuple[str, str], float] = field(default_factory=dict)


def tensor_groups(gguf_path: Path, *, bands: int) -> list[TensorGroup]:
    """The quantizable weight groups of a llama-architecture GGUF: the token embedding, and each weight kind in
    `bands` contiguous bands of layers. Raises ExportError when the file has none of the expected tensors."""
    from edgetune.export.inspect import read_gguf

    if bands < 1:
        raise ExportError(f"bands must be 1 or more, got {bands}")
    reader = read_gguf(gguf_path)
    weights: dict[tuple[str, int], int] = {}
    embd = 0
    for t in reader.tensors:
        if t.name == f"{TOKEN_EMBD}.weight":
            embd = int(t.n_elements)
        elif m := re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", t.name):
            if m.group(2) in WEIGHT_KINDS:
                weights[(m.group(2), int(m.group(1)))] = int(t.n_elements)
        elif t.name == "output.weight":
            raise ExportError(f"{gguf_path.name} has an untied output head", "the precision search handles "
                              "tied-embedding models only; use a plain quant type")
    if not weights or not embd:
        raise ExportError(f"{gguf_path.name} has no llama-style blk.N.<kind>.weight tensors",
                          "the precision search supports llama-architecture models")
    n_layers = 1 + max(layer for _, layer in weights)
    groups = [TensorGroup(TOKEN_EMBD, TOKEN_EMBD, (), embd)]
    n_bands = min(bands, n_layers)  # never an empty band (which would leave layers out of every group)
    for b in range(n_bands):
        layers = tuple(range(b * n_layers // n_bands, (b + 1) * n_layers // n_bands))
        for kind in WEIGHT_KINDS:
            n = sum(weights.get((kind, i), 0) for i in layers)
            if n:
                groups.append(TensorGroup(f"{kind}@{layers[0]}-{layers[-1]}", kind, layers, n))
    return groups


def quantize_mix(src: Path, dst: Path, groups: Sequence[TensorGroup], mix: Mix, tools: LlamaCppTools, *,
                 imatrix: Path | None = None, threads: int | None = None) -> Path:
    """llama-quantize `src` (F16) into `dst` with one type per group as `mix` says."""
    missing = [g.name for g in groups if g.name not in mix.types]
    if missing:
        raise ExportError(f"the mix names no type for {', '.join(missing)}", "give every group a type")
    argv: list[str | Path] = [tools.tool("llama-quantize")]
    if imatrix is not None:
        argv += ["--imatrix", imatrix]
    for g in groups:
        t = mix.types[g.name]
        if t not in BITS_PER_WEIGHT:
            raise ExportError(f"type {t!r} for {g.name} is not one the search uses", f"use one of {list(BITS_PER_WEIGHT)}")
        if g.kind == TOKEN_EMBD:
            argv += ["--token-embedding-type", t.lower()]
        else:
            argv += ["--tensor-type", f"{g.pattern}={t.lower()}"]
    fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".gguf.tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        argv += [src, tmp, mix.base]
        if threads:
            argv.append(str(threads))
        run_tool(argv, error=ExportError, hint="llama-quantize refused the per-tensor types")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def default_low_types(group: TensorGroup) -> tuple[str, ...]:
    """Q4_0 for the layer groups; the token embedding (also the output head) may also drop to Q5_0, which is how a
    mix at Q4_0's size makes room (llama.cpp's plain Q4_0 keeps it at Q8_0). Measuring Q5_0 for every group too
    doubled the search's time on a 2-core machine (benchmarks/quant_recovery.py)."""
    return ("Q4_0", "Q5_0") if group.kind == TOKEN_EMBD else ("Q4_0",)


@dataclass(frozen=True)
class SearchResult:
    """The chosen mix, the sensitivities it came from, and the budget (with the cap that bound it) and sizes it was
    chosen against."""

    mix: Mix
    sensitivity: Sensitivity
    budget: Budget
    other_bytes: float

    @property
    def budget_bytes(self) -> float:
        return self.budget.bytes

    def to_dict(self) -> dict:
        return {"types": dict(self.mix.types), "describe": self.mix.describe(),
                "predicted_kld_increase": self.mix.predicted_kld_increase,
                "predicted_size_bytes": self.mix.predicted_size_bytes, "budget_bytes": self.budget_bytes,
                **self.budget.to_dict(), "other_bytes": self.other_bytes, "high": self.sensitivity.high,
                "base_kld": self.sensitivity.base_kld,
                "increase": {f"{g}={t}": v for (g, t), v in self.sensitivity.increase.items()}}


def search_mix(src: Path, work: Path, budget: float | Budget, tools: LlamaCppTools, score: Callable[[Path], float],
               *, base: str, high: str = "Q8_0", bands: int = 3, imatrix: Path | None = None,
               threads: int | None = None, low_types: Callable[[TensorGroup], Sequence[str]] = default_low_types,
               on_step: Callable[[str, float], None] | None = None) -> tuple[list[TensorGroup], SearchResult]:
    """Sensitivity of every group of `src` (F16), then the knapsack under `budget` (bytes: a size cap). Probe
    files go to `work` (removed after). The bytes outside the groups (norms, metadata) are measured on the
    all-`high` probe, so llama.cpp's own per-file overheads count against the budget. A budget the smallest mix
    cannot meet is refused before any probe (the F16 file's own bytes outside the groups estimate them)."""
    budget = budget if isinstance(budget, Budget) else Budget.of_size(budget)
    groups = tensor_groups(src, bands=bands)
    f16_other = src.stat().st_size - sum(g.size_bytes("F16") for g in groups)
    smallest = f16_other + sum(min(g.size_bytes(t) for t in (high, *low_types(g))) for g in groups)
    if smallest > budget.bytes:
        raise budget.refuse(smallest)
    probe = work / "probe.gguf"
    sizes: list[int] = []

    def make(mix: Mix) -> Path:
        quantize_mix(src, probe, groups, mix, tools, imatrix=imatrix, threads=threads)
        sizes.append(probe.stat().st_size)
        return probe

    try:
        sens = measure_sensitivity(groups, low_types, high, make, score, on_step=on_step)
    finally:
        probe.unlink(missing_ok=True)
    other = sizes[0] - sum(g.size_bytes(high) for g in groups)
    mix = choose_mix(groups, sens, budget, base=base, other_bytes=other)
    return groups, SearchResult(mix, sens, budget, other)


def measure_sensitivity(groups: Sequence[TensorGroup], low_types: Callable[[TensorGroup], Sequence[str]], high: str,
                        make: Callable[[Mix], Path], score: Callable[[Path], float],
                        on_step: Callable[[str, float], None] | None = None) -> Sensitivity:
    """KLD increase of each group quantized alone to each of its `low_types(group)`, the rest at `high`. `make`
    builds a mix's file, `score` returns its mean KLD to the reference (lower is better)."""
    all_high = {g.name: high for g in groups}
    base = score(make(Mix(high, all_high)))
    sens = Sensitivity(high, base)
    for g in groups:
        for t in low_types(g):
            kld = score(make(Mix(high, {**all_high, g.name: t})))
            sens.increase[(g.name, t)] = kld - base
            if on_step is not None:
                on_step(f"{g.name}={t}", kld - base)
    return sens


def choose_mix(groups: Sequence[TensorGroup], sens: Sensitivity, budget: float | Budget, *, base: str,
               other_bytes: float = 0.0) -> Mix:
    """The type per group minimising the summed KLD increase with total size <= the budget (bytes: a size cap;
    `other_bytes`: the tensors outside the groups, norms and metadata). Multiple-choice knapsack, exact over
    UNIT_BYTES units. Raises ExportError naming the binding cap when even the smallest types do not fit."""
    budget = budget if isinstance(budget, Budget) else Budget.of_size(budget)
    budget_bytes = budget.bytes
    options: list[list[tuple[str, int, float]]] = []
    for g in groups:
        opts = [(sens.high, _units(g.size_bytes(sens.high)), 0.0)]
        opts += [(t, _units(g.size_bytes(t)), max(0.0, inc)) for (name, t), inc in sens.increase.items() if name == g.name]
        options.append(opts)
    cap = int((budget_bytes - other_bytes) // UNIT_BYTES)
    least = sum(min(u for _, u, _ in opts) for opts in options)
    if cap < least:
        raise budget.refuse(least * UNIT_BYTES + other_bytes)
    inf = float("inf")
    best = [0.0] * (cap + 1)  # best[c]: least loss using groups so far within c units
    picks: list[list[int]] = []
    for opts in options:
        new = [inf] * (cap + 1)
        pick = [-1] * (cap + 1)
        for c in range(cap + 1):
            for i, (_, u, loss) in enumerate(opts):
                if u <= c and best[c - u] + loss < new[c]:
                    new[c], pick[c] = best[c - u] + loss, i
        best = new
        picks.append(pick)
    c = min(range(cap + 1), key=lambda k: (best[k], k))
    types: dict[str, str] = {}
    size = other_bytes
    for g, opts, pick in zip(reversed(groups), reversed(options), reversed(picks), strict=True):
        t, u, _ = opts[pick[c]]
        types[g.name] = t
        size += g.size_bytes(t)
        c -= u
    return Mix(base, {g.name: types[g.name] for g in groups}, predicted_kld_increase=min(best),
               predicted_size_bytes=size)


def _units(n_bytes: float) -> int:
    return -(-int(n_bytes) // UNIT_BYTES)
