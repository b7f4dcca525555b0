"""Fidelity of an edge build to the GPU build, on the same token ids.

Three checks per held-out prompt (rendered with the chat template):
1. stop survival: the edge build stops generating where the GPU build stops (template and EOS survived);
2. greedy agreement: the share of the GPU build's first `n_tokens` greedy tokens the edge build reproduces
   before the first divergence;
3. next-token distributions: mean KL(GPU || edge) and top-1 agreement over every position of prompt + the GPU
   build's own continuation (llama.cpp logits through eval()+scores, never echo logprobs).
Works on any pair of `Runtime`s; reads and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgetune.outputs import FidelitySummary
from edgetune.runtimes.base import Runtime


@dataclass(frozen=True)
class Reference:
    """The GPU build's greedy continuation of one prompt, and whether it stopped on a stop id."""

    id: str
    prompt_ids: list[int]
    output_ids: list[int]
    stopped: bool


@dataclass(frozen=True)
class FidelityItem:
    id: str
    kld_mean: float
    top1: float
    greedy_match_share: float
    stop_agrees: bool
    n_positions: int


@dataclass(frozen=True, kw_only=True)
class FidelityResult(FidelitySummary):
    """The summary figures (edgetune.outputs.FidelitySummary, what the artifact records) and each prompt's."""

    items: list[FidelityItem]


def references(runtime: Runtime, prompts: Sequence[tuple[str, list[int]]], *, n_tokens: int,
               stop_ids: Sequence[int], on_item: Callable[[], None] | None = None) -> list[Reference]:
    """Greedy continuations of the GPU build, computed once and shared by every edge build's comparison."""
    refs = []
    for pid, ids in prompts:
        out = runtime.generate(list(ids), n_tokens, stop_ids)
        refs.append(Reference(pid, list(ids), out, stopped=len(out) < n_tokens))
        if on_item:
            on_item()
    return refs


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def kld_and_top1(ref_logits: np.ndarray, edge_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position KL(ref || edge) in nats and whether the argmax tokens agree."""
    lp, lq = _log_softmax(ref_logits), _log_softmax(edge_logits)
    kld = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    return np.maximum(kld, 0.0), lp.argmax(axis=-1) == lq.argmax(axis=-1)


def compare(reference: Runtime, edge: Runtime, refs: Sequence[Reference], *, stop_ids: Sequence[int],
            on_item: Callable[[], None] | None = None) -> FidelityResult:
    items: list[FidelityItem] = []
    all_kld: list[np.ndarray] = []
    all_top1: list[np.ndarray] = []
    for ref in refs:
        n_tokens = max(len(ref.output_ids), 1) if not ref.stopped else len(ref.output_ids) + 1
        out = edge.generate(list(ref.prompt_ids), n_tokens, stop_ids)
        matched = 0
        while matched < min(len(out), len(ref.output_ids)) and out[matched] == ref.output_ids[matched]:
            matched += 1
        stopped = len(out) < n_tokens
        stop_agrees = stopped == ref.stopped and (not stopped or out == ref.output_ids)
        # the sequence whose every next-token distribution we compare: the prompt + the GPU's continuation
        seq = list(ref.prompt_ids) + list(ref.output_ids)
        kld, top1 = kld_and_top1(reference.logits(seq), edge.logits(seq))
        kld, top1 = kld[1:], top1[1:]  # position 0 has no context worth comparing
        all_kld.append(kld)
        all_top1.append(top1)
        items.append(FidelityItem(ref.id, float(kld.mean()), float(top1.mean()),
                                  matched / max(1, len(ref.output_ids)), bool(stop_agrees), int(kld.size)))
        if on_item:
            on_item()
    kld_cat, top1_cat = np.concatenate(all_kld), np.concatenate(all_top1)
    return FidelityResult(
        kld_mean=float(kld_cat.mean()), kld_p99=float(np.percentile(kld_cat, 99)),
        top1_agreement=float(top1_cat.mean()),
        greedy_agreement=float(np.mean([i.greedy_match_share for i in items])),
        stop_agreement=float(np.mean([i.stop_agrees for i in items])),
        n_prompts=len(items), n_positions=int(kld_cat.size), items=items,
    )
