"""Run a transformers causal LM from a local safetensors folder (the build host's view of a model).

Reads `model_dir` (config.json + *.safetensors; never remote code, never the hub). Scoring is batched with
right padding, and requests that share a context run the context once and reuse its KV cache for every
continuation. Decoding is an explicit argmax loop over the KV cache, so it is exactly greedy whatever the
folder's generation_config says.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from edgetune.errors import ConfigError, ModelError
from edgetune.runtimes.base import (
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Runtime,
    check_ids,
    check_prompt,
    check_request,
)

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class HFRuntime(Runtime):
    """A transformers model in eval mode. `batch_size` is the number of sequences per forward pass."""

    name = "hf"

    def __init__(self, model_dir: Path, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 8):
        """Load `model_dir`. Raises ConfigError for an unknown dtype or batch size, ModelError when the folder
        is missing or transformers cannot load it."""
        from safetensors import SafetensorError
        from transformers import AutoModelForCausalLM

        if dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}", f"use one of {', '.join(_DTYPES)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise ModelError(
                f"{self.model_dir} is not a model folder (no config.json)",
                "pass a merged or base model folder",
            )
        self.device = torch.device(device)
        self.batch_size = batch_size
        try:
            model = AutoModelForCausalLM.from_pretrained(
                self.model_dir,
                dtype=_DTYPES[dtype],
                use_safetensors=True,
                trust_remote_code=False,
                local_files_only=True,
            )
        except (OSError, ValueError, SafetensorError) as exc:
            # OSError: no *.safetensors; ValueError: unknown architecture or bad config; SafetensorError: a
            # truncated or corrupt weights file.
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(
                f"transformers could not load {self.model_dir}: {reason}",
                "check the folder holds config.json and intact *.safetensors",
            ) from exc
        self._model = model.to(self.device).eval()
        self.n_vocab = self._model.get_input_embeddings().num_embeddings
        # transformers 5.2x renamed the KV-cache argument and output `past_key_values` -> `cache` (the old
        # name warns and goes in 5.40); older 5.x (e.g. 5.17 on the GPU host) knows only the old one.
        self._cache_key = (
            "cache" if "cache" in inspect.signature(self._model.forward).parameters else "past_key_values"
        )
        log.info("loaded %s (%s, %s)", self.model_dir, dtype, device)

    # -- scoring -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(requests):
            check_request(ctx, cont)
            self._check_ids(ctx)
            self._check_ids(cont)
            groups.setdefault(tuple(ctx), []).append(i)
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        singles: list[int] = []
        for ctx, idxs in groups.items():
            if len(idxs) == 1:
                singles.append(idxs[0])
            else:
                self._score_shared(list(ctx), [(i, list(requests[i][1])) for i in idxs], results)
        self._score_full([(i, list(requests[i][0]), list(requests[i][1])) for i in singles], results)
        return results  # type: ignore[return-value]  # every slot is filled above

    def _score_full(self, reqs: list[tuple[int, list[int], list[int]]], results: list) -> None:
        """Requests with distinct contexts: whole sequences batched, longest first to keep padding small."""
        reqs = sorted(reqs, key=lambda r: -(len(r[1]) + len(r[2])))
        for start in range(0, len(reqs), self.batch_size):
            chunk = reqs[start : start + self.batch_size]
            feeds = [(ctx + cont)[:-1] for _, ctx, cont in chunk]
            input_ids, mask = self._right_pad(feeds)
            width = input_ids.shape[1]
            # logits only for the tail holding some continuation (saves a vocab-sized row per context token)
            first = min(len(ctx) - 1 for _, ctx, _ in chunk)
            logits = self._model(
                input_ids=input_ids, attention_mask=mask, logits_to_keep=width - first
            ).logits
            for row, (i, ctx, cont) in enumerate(chunk):
                lo = len(ctx) - 1 - first
                results[i] = _score_rows(logits[row, lo : lo + len(cont)], cont)

    def _score_shared(self, ctx: list[int], reqs: list[tuple[int, list[int]]], results: list) -> None:
        """One context, many continuations: run the context once, then the continuations in batches on
        copies of its KV cache."""
        out = self._model(input_ids=torch.tensor([ctx], device=self.device), use_cache=True, logits_to_keep=1)
        first_row = out.logits[0, -1:]  # predicts the first continuation token
        cache = out[self._cache_key]
        for start in range(0, len(reqs), self.batch_size):
            chunk = reqs[start : start + self.batch_size]
            feeds = [cont[:-1] for _, cont in chunk]  # the last token is predicted, never fed
            rest = None
            if any(feeds):
                input_ids, mask = self._right_pad(feeds)
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(chunk))
                past = torch.ones((len(chunk), len(ctx)), dtype=mask.dtype, device=self.device)
                rest = self._model(
                    input_ids=input_ids,
                    attention_mask=torch.cat([past, mask], dim=1),
                    use_cache=True,
                    **{self._cache_key: batch_cache},
                ).logits
            for row, (i, cont) in enumerate(chunk):
                rows = (
                    first_row if rest is None else torch.cat([first_row, rest[row, : len(cont) - 1]], dim=0)
                )
                results[i] = _score_rows(rows[: len(cont)], cont)

    def _right_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(s) for s in seqs))
        # pad id 0 is a real token; padding sits after every real token and is masked: it never affects them
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _check_ids(self, ids: Sequence[int]) -> None:
        check_ids(ids, self.n_vocab)

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> np.ndarray:
        check_prompt(ids, 0)
        self._check_ids(ids)
        out = self._model(input_ids=torch.tensor([ids], device=self.device))
        return out.logits[0].float().cpu().numpy()

    # -- decoding ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
        check_prompt(prompt_ids, max_new_tokens)
        self._check_ids(prompt_ids)
        stops = set(stop_ids)
        new: list[int] = []
        if max_new_tokens == 0:
            return new
        out = self._model(
            input_ids=torch.tensor([prompt_ids], device=self.device), use_cache=True, logits_to_keep=1
        )
        while True:
            token = int(torch.argmax(out.logits[0, -1]))
            if token in stops:
                break
            new.append(token)
            if len(new) >= max_new_tokens:
                break
            out = self._model(
                input_ids=torch.tensor([[token]], device=self.device),
                use_cache=True,
                **{self._cache_key: out[self._cache_key]},
            )
        return new

    def close(self) -> None:
        self._model = None


def _score_rows(logits: torch.Tensor, cont: list[int]) -> LoglikelihoodResult:
    """Sum of log-probs of `cont` under `logits` (row j predicts cont[j]) and whether each is the argmax."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(cont, device=logits.device)
    total = float(logprobs.gather(1, target[:, None]).sum())
    greedy = bool((logprobs.argmax(dim=-1) == target).all())
    return total, greedy
