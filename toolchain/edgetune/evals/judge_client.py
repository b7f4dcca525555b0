"""One chat call to the judge, with the retry policy: the only module that talks to the endpoint.

Uses `openai.AsyncOpenAI` with the client's own retries off (`max_retries=0`), so the policy lives here and is
tested: 408, 409, 429, 5xx, timeouts, dropped connections and malformed replies (not an OpenAI chat
completion) are retried with exponential backoff and jitter, honouring `Retry-After` / `retry-after-ms`; 400,
401, 403, 404 and other 4xx raise JudgeError at once, naming the endpoint, the model and the fix. Nothing here logs the key.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from edgetune.errors import JudgeError
from edgetune.judge_config import JudgeConfig

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None
    attempts: int
    latency_s: float


class _Retryable(Exception):  # internal signal, never leaves this module
    def __init__(self, what: str, retry_after_s: float | None = None):
        super().__init__(what)
        self.what = what
        self.retry_after_s = retry_after_s


def backoff_delay_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry number `attempt` (0 = first retry): base * 2^attempt, capped at `max_s`, times a
    random factor in [0.5, 1] (jitter, so parallel callers do not retry in lockstep)."""
    return min(max_s, base_s * 2**attempt) * rng.uniform(0.5, 1.0)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked to wait: `retry-after-ms`, else `Retry-After` as seconds or an HTTP date."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class JudgeClient:
    """Async context manager around one AsyncOpenAI client. The API key is read when it is entered."""

    def __init__(
        self,
        cfg: JudgeConfig,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.cfg = cfg
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._client: Any = None

    async def __aenter__(self) -> Self:
        import openai

        self._client = openai.AsyncOpenAI(
            base_url=self.cfg.base_url, api_key=self.cfg.api_key(), timeout=self.cfg.timeout_s, max_retries=0
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def complete(self, messages: list[dict[str, str]], *, json_schema: dict | None = None) -> Reply:
        """The judge's reply to `messages` (temperature and length from the config). `json_schema` is sent as
        llama.cpp's response_format grammar. Raises JudgeError on a non-retryable error or when every try
        failed."""
        cfg = self.cfg
        extra = {"response_format": {"type": "json_object", "schema": json_schema}} if json_schema else None
        started = time.perf_counter()
        last = ""
        for attempt in range(cfg.max_retries + 1):
            try:
                text, finish = await self._call(messages, extra)
                return Reply(text, finish, attempt + 1, time.perf_counter() - started)
            except _Retryable as exc:
                last = exc.what
                if attempt == cfg.max_retries:
                    break
                computed = backoff_delay_s(attempt, cfg.backoff_base_s, cfg.backoff_max_s, self._rng)
                delay = (
                    min(cfg.backoff_max_s, exc.retry_after_s) if exc.retry_after_s is not None else computed
                )
                log.info(
                    "judge %s: %s; retry %d/%d in %.2fs",
                    cfg.base_url,
                    exc.what,
                    attempt + 1,
                    cfg.max_retries,
                    delay,
                )
                await self._sleep(delay)
        tries = cfg.max_retries + 1
        raise JudgeError(
            f"judge at {cfg.base_url} failed {tries} time{'s' if tries > 1 else ''}; last: {last}",
            "the endpoint is overloaded or down: retry later, lower judge.concurrency, or raise "
            "judge.max_retries / judge.timeout_s (finished verdicts are cached)",
        )

    async def _call(self, messages: list[dict[str, str]], extra: dict | None) -> tuple[str, str | None]:
        import openai

        cfg = self.cfg
        try:
            resp = await self._client.chat.completions.create(
                model=cfg.model,
                messages=messages,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                extra_body=extra,
            )
        except openai.APITimeoutError as exc:
            raise _Retryable(f"timed out after {cfg.timeout_s:g}s") from exc
        except openai.APIConnectionError as exc:
            raise _Retryable(f"connection failed ({exc.__cause__ or exc})") from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in RETRYABLE_STATUS or status >= 500:
                raise _Retryable(f"HTTP {status}", retry_after_s(exc.response.headers)) from exc
            raise _fatal(cfg, status, exc) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a 200 whose body is not JSON
            raise _Retryable("reply is not JSON (not an OpenAI-compatible endpoint?)") from exc
        choices = getattr(resp, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise _Retryable(f"reply is not a chat completion: {str(resp)[:80]!r}")
        return choices[0].message.content or "", choices[0].finish_reason


def _fatal(cfg: JudgeConfig, status: int, exc: Exception) -> JudgeError:
    where = f"judge at {cfg.base_url}"
    detail = " ".join(str(getattr(exc, "message", exc)).split())[:200]
    if status == 401:
        hint = (
            f"check the key in ${cfg.api_key_env}"
            if cfg.api_key_env
            else "the server wants a key: set judge.api_key_env to the NAME of the variable holding it"
        )
        return JudgeError(f"{where} rejected the API key (HTTP 401)", hint)
    if status == 403:
        return JudgeError(
            f"{where} refused access to model {cfg.model!r} (HTTP 403)",
            "the key lacks access to this model: pick another judge.model or key",
        )
    if status == 404:
        return JudgeError(
            f"{where} has no model {cfg.model!r} or no chat endpoint (HTTP 404)",
            "check judge.model, and that judge.base_url ends with /v1",
        )
    hint = "check judge.model and judge.max_tokens"
    if cfg.json_schema_grammar:
        hint += "; json_schema_grammar works only with llama.cpp servers, turn it off for other endpoints"
    return JudgeError(f"{where} rejected the request (HTTP {status}): {detail}", hint)
