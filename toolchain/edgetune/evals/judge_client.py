"""One chat call to the judge: the only module that talks to the endpoint.

Retries are the `openai` client's own (`max_retries` from the config): it retries 408, 409, 429, 5xx, timeouts
and dropped connections with exponential backoff and jitter, honouring `Retry-After` / `retry-after-ms`. What
it cannot know is a 200 whose body is not a chat completion (a proxy's HTML page, truncated JSON): that one
check is ours, and such a reply is asked again at once, within the same `max_retries` budget. 400, 401, 403,
404 and other 4xx raise JudgeError at once, naming the endpoint, the model and the fix. Nothing here logs the
key.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from edgetune.errors import JudgeError
from edgetune.judge_config import JudgeConfig

log = logging.getLogger(__name__)

# what the openai client retries itself (besides timeouts and connection errors): exhausted, not fatal
RETRYABLE_STATUS = frozenset({408, 409, 429})
# the request header in which the openai client numbers its own retries (0 on the first try)
RETRY_COUNT_HEADER = "x-stainless-retry-count"


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None
    attempts: int
    latency_s: float


def response_format(name: str, schema: dict) -> dict[str, Any]:
    """The standard JSON-schema `response_format` (OpenAI, vLLM and llama-server accept it; llama.cpp turns
    the schema into a grammar, so even a tiny model replies with well-formed JSON)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


class JudgeClient:
    """Async context manager around one AsyncOpenAI client. The API key is read when it is entered."""

    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        self._client: Any = None

    async def __aenter__(self) -> Self:
        import openai

        self._client = openai.AsyncOpenAI(
            base_url=self.cfg.base_url,
            api_key=self.cfg.api_key(),
            timeout=self.cfg.timeout_s,
            max_retries=self.cfg.max_retries,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def complete(
        self, messages: list[dict[str, str]], *, json_schema: dict | None = None, schema_name: str = "verdict"
    ) -> Reply:
        """The judge's reply to `messages` (temperature and length from the config). `json_schema` is sent as
        the standard JSON-schema `response_format`. Raises JudgeError on a non-retryable error or when every
        try failed."""
        cfg = self.cfg
        fmt = response_format(schema_name, json_schema) if json_schema else None
        started = time.perf_counter()
        tries = 0  # HTTP requests sent so far, the client's retries included
        while True:
            text, finish, sent, malformed = await self._call(messages, fmt, cfg.max_retries - tries, tries)
            tries += sent
            if malformed is None:
                return Reply(text, finish, tries, time.perf_counter() - started)
            if tries > cfg.max_retries:
                raise _exhausted(cfg, tries, malformed)
            log.info("judge %s: %s; asking again (try %d of %d)", cfg.base_url, malformed, tries + 1,
                     cfg.max_retries + 1)

    async def _call(
        self, messages: list[dict[str, str]], fmt: dict | None, retries: int, tries_before: int
    ) -> tuple[str, str | None, int, str | None]:
        """One create() with at most `retries` client retries: (text, finish reason, requests sent, what was
        malformed about a 200 reply or None)."""
        import openai

        cfg = self.cfg
        extra = {"response_format": fmt} if fmt else {}
        try:
            raw = await self._client.with_options(max_retries=retries).chat.completions.with_raw_response.create(
                model=cfg.model,
                messages=messages,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                **extra,
            )
        except openai.APITimeoutError as exc:
            raise _exhausted(cfg, tries_before + _sent(exc), f"timed out after {cfg.timeout_s:g}s") from exc
        except openai.APIConnectionError as exc:
            what = f"connection failed ({exc.__cause__ or exc})"
            raise _exhausted(cfg, tries_before + _sent(exc), what) from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in RETRYABLE_STATUS or status >= 500:
                raise _exhausted(cfg, tries_before + _sent(exc), f"HTTP {status}") from exc
            raise _fatal(cfg, status, exc) from exc
        sent = raw.retries_taken + 1
        try:
            resp = raw.parse()
        except (json.JSONDecodeError, UnicodeDecodeError):  # a 200 whose body is not JSON
            return "", None, sent, "reply is not JSON (not an OpenAI-compatible endpoint?)"
        choices = getattr(resp, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            return "", None, sent, f"reply is not a chat completion: {str(resp)[:80]!r}"
        return choices[0].message.content or "", choices[0].finish_reason, sent, None


def _sent(exc: Exception) -> int:
    """Requests the client sent for the call that raised `exc`: it numbers its retries in a request header."""
    request = getattr(exc, "request", None)
    try:
        return int(request.headers[RETRY_COUNT_HEADER]) + 1 if request is not None else 1
    except (KeyError, ValueError):
        return 1


def _exhausted(cfg: JudgeConfig, tries: int, last: str) -> JudgeError:
    return JudgeError(
        f"judge at {cfg.base_url} failed {tries} time{'s' if tries > 1 else ''}; last: {last}",
        "the endpoint is overloaded or down: retry later, lower judge.concurrency, or raise "
        "judge.max_retries / judge.timeout_s (finished verdicts are cached)",
    )


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
        hint += ("; json_schema_grammar sends a JSON-schema response_format, turn it off for endpoints that do "
                 "not support one")
    return JudgeError(f"{where} rejected the request (HTTP {status}): {detail}", hint)
