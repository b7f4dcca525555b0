"""lm-evaluation-harness's model contract over edgetune's `Runtime`: the `edgetune` model class.

`EdgetuneLM(runtime, tokenizer)` answers the harness's three request types on token ids, so any build edgetune
can run is a harness model: the HF build (`HFRuntime`), a GGUF on this host (`LlamaCppRuntime`) and a GGUF on a
device over SSH (`DeviceRuntime`). Tokenisation is the harness's own (`TemplateLM._encode_pair`: trailing
context spaces move to the continuation, the whole string is encoded and split), with the tokenizer called as
its `hf` class calls it (`add_special_tokens` left to the tokenizer unless the harness sets it, the BOS/EOS
prefix for an empty context), so the same request reaches every runtime as the same ids that `hf` would score.
Over-long inputs are cut from the left as `hf` cuts them (the last `max_length` + 1 tokens of context +
continuation). Decoding is greedy only (the runtimes' contract); a request asking to sample raises EvalError.

Registered in the harness as `edgetune` when this module is imported (`lm_eval.api.registry.get_model`), with
`create_from_arg_string` taking `hf=DIR`, `gguf=PATH[,tokenizer=DIR]` and `n_ctx`/`n_threads`. Reads only the
model named; writes nothing. Raises EvalError/ModelError from the runtime, ConfigError for bad arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from edgetune.errors import ConfigError, EvalError
from edgetune.runtimes.base import Runtime

log = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256  # the harness's default for generate_until (HFLM.max_gen_toks)
CHUNK = 64  # requests handed to the runtime per call: bounds memory and gives the progress callback a pulse


@register_model("edgetune")
class EdgetuneLM(TemplateLM):
    """A harness model over an open `Runtime`. `tokenizer` is the model's HF tokenizer; `max_length` the
    longest sequence the runtime may be given (its context); `on_requests(n)` is called after every `n`
    requests scored (progress)."""

    def __init__(self, runtime: Runtime, tokenizer: Any, *, max_length: int = 2048,
                 on_requests: Callable[[int], None] | None = None):
        super().__init__()
        if max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {max_length}")
        self.runtime = runtime
        self.tokenizer = tokenizer
        self._max_length = max_length
        self._on_requests = on_requests or (lambda n: None)
        self.requests_scored = 0  # loglikelihood requests sent to the runtime (benchmarks read it)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> EdgetuneLM:
        """`hf=DIR` or `gguf=PATH[,tokenizer=DIR]`, optional `n_ctx=`, `n_threads=` (the harness's CLI form)."""
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        return open_lm(hf=args.get("hf"), gguf=args.get("gguf"), tokenizer=args.get("tokenizer"),
                       n_ctx=int(args.get("n_ctx", 2048)), n_threads=args.get("n_threads"))

    # -- tokenisation (as the harness's hf class does it) ---------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos if bos is not None else self.tokenizer.eos_token_id)

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return list(self.tokenizer.encode(string, **kw))

    def tok_decode(self, tokens: Iterable[int], **kwargs: Any) -> str:
        return str(self.tokenizer.decode(list(tokens), **kwargs))

    # -- scoring --------------------------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        pairs = []
        for _, ctx, cont in requests:
            whole = (ctx + cont)[-(self._max_length + 1):]  # hf's left cut; the last token is never fed
            cut = max(1, len(whole) - len(cont))
            pairs.append((whole[:cut], whole[cut:]))
        out: list[tuple[float, bool]] = []
        for start in range(0, len(pairs), CHUNK):
            chunk = pairs[start:start + CHUNK]
            out += [(float(lp), bool(g)) for lp, g in self.runtime.loglikelihood(chunk)]
            self.requests_scored += len(chunk)
            self._on_requests(len(chunk))
        for (req, _, _), res in zip(requests, out, strict=True):
            self.cache_hook.add_partial("loglikelihood", req, res)
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scoring of whole documents in windows of `max_length` (the harness's own windows)."""
        results = []
        for req in requests:
            (string,) = req.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(string, add_special_tokens=False), prefix_token=self.prefix_token_id,
                max_seq_len=self._max_length, context_len=1)]
            scored = self._loglikelihood_tokens([((string, ""), ctx, cont) for ctx, cont in windows])
            total = sum(lp for lp, _ in scored)
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return results

    # -- decoding -------------------------------------------------------------------------------------------

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        results = []
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        for req in requests:
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0.0) or 0.0) > 0:
                raise EvalError("a harness task asked to sample; edgetune runtimes decode greedily only",
                                "use a task with do_sample false / temperature 0")
            until = handle_stop_sequences(gen_kwargs.get("until"), eos=eos)
            max_new = int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            ids = self.tok_encode(context)[-max(1, self._max_length - max_new):]
            new = self.runtime.generate(ids, max_new, stop_ids=[self.eot_token_id])
            text = self.tok_decode(new, skip_special_tokens=False)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            results.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            self._on_requests(1)
        return results


def open_lm(*, hf: str | Path | None = None, gguf: str | Path | None = None, tokenizer: str | Path | None = None,
            n_ctx: int = 2048, n_threads: int | str | None = None) -> EdgetuneLM:
    """An `EdgetuneLM` over a freshly opened runtime: `hf` (a model folder, its own tokenizer) or `gguf` (a file
    on this host; the tokenizer from `tokenizer`, else read from the GGUF itself). Close it with
    `lm.runtime.close()`. Raises ConfigError when neither or both are given."""
    from transformers import AutoTokenizer

    if (hf is None) == (gguf is None):
        raise ConfigError("give exactly one of hf=DIR or gguf=PATH", "e.g. hf=runs/x/merged or gguf=model.gguf")
    if hf is not None:
        from edgetune.runtimes import HFRuntime

        tok = AutoTokenizer.from_pretrained(tokenizer or hf)
        return EdgetuneLM(HFRuntime(Path(hf)), tok, max_length=n_ctx)
    from edgetune.runtimes import LlamaCppRuntime

    path = Path(str(gguf))
    tok = (AutoTokenizer.from_pretrained(tokenizer) if tokenizer
           else AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    threads = int(n_threads) if n_threads not in (None, "") else None
    return EdgetuneLM(LlamaCppRuntime(path, n_ctx=n_ctx, n_threads=threads), tok, max_length=n_ctx)

