"""How to reach the LLM judge: any OpenAI-compatible endpoint, its model, and how hard to try.

The config holds the NAME of the environment variable that carries the API key (`api_key_env`), never the key:
the key is read from the environment when a judge run starts and is never logged, cached or written. Errors
about this model hide the offending input (`hide_input_in_errors`), so a key pasted into the wrong field does
not end up in an error line either.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgetune.errors import JudgeError

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
log = logging.getLogger(__name__)
_DROPPED = ("backoff_base_s", "backoff_max_s")  # see JudgeConfig._dropped_backoff
NO_KEY = "no-key"  # sent when api_key_env is None: servers started without --api_key ignore it


class JudgeConfig(BaseModel):
    """An OpenAI-compatible judge endpoint.

    Endpoint: `base_url` (up to and including `/v1`), `model`, `api_key_env` (None for a server without
    authentication, e.g. the local llama.cpp judge).
    Load: `concurrency` requests in flight at most; each waits `timeout_s` seconds.
    Retries: the `openai` client's own: 429, 5xx, 408/409, timeouts and dropped connections are retried up to
    `max_retries` times with its exponential backoff (0.5 s doubling, at most 8 s, with jitter), or after the
    server's `Retry-After` / `retry-after-ms` when it sends one (up to 2 minutes). A 200 that is not a chat
    completion is asked again within the same budget.
    Sampling: `temperature` 0 (greedy) and at most `max_tokens` tokens of reply.
    `json_schema_grammar`: send the standard `response_format={"type": "json_schema", "json_schema": {...}}`
    so the verdict is well-formed JSON (llama-server turns the schema into a grammar, so even a tiny model
    complies; OpenAI and vLLM accept it too). Leave it off for endpoints without JSON-schema support.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    base_url: str = Field(description="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")
    model: str = Field(min_length=1, description="Judge model name as the endpoint knows it.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="NAME of the environment variable holding the API key (None: no key)."
    )
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at most.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout, seconds.")
    max_retries: int = Field(
        4, ge=0, le=20, description="Retries of a retryable failure (so 1 + this tries)."
    )
    temperature: float = Field(0.0, ge=0, le=0, description="Sampling temperature; fixed at 0 (greedy).")
    max_tokens: int = Field(512, ge=1, description="Longest judge reply, tokens.")
    json_schema_grammar: bool = Field(
        False,
        description="Ask for a JSON verdict through the standard JSON-schema response_format.",
    )

    @model_validator(mode="before")
    @classmethod
    def _dropped_backoff(cls, data: Any) -> Any:
        # backoff_base_s / backoff_max_s tuned the hand-written retry loop that the openai client's own retries
        # replaced (issue 21): old configs still load, with a warning, until the release after 0.1 rejects them
        if isinstance(data, dict) and (dropped := sorted(k for k in _DROPPED if k in data)):
            log.warning("judge.%s ignored: the openai client's own backoff applies now; remove it from the "
                        "config (the release after 0.1 rejects it)", " and judge.".join(dropped))
            data = {k: v for k, v in data.items() if k not in _DROPPED}
        return data

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://, e.g. https://api.openai.com/v1")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not ENV_NAME.match(v):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (like OPENAI_API_KEY), not the key"
            )
        return v

    def api_key(self) -> str:
        """The key, read from the environment now. Raises JudgeError (naming the variable) when unset."""
        if self.api_key_env is None:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise JudgeError(
                f"the judge's API key variable ${self.api_key_env} is not set",
                f"export {self.api_key_env}=... (or set judge.api_key_env to the variable holding the key)",
            )
        return key

    def describe(self) -> dict[str, object]:
        """What identifies the judge in results and manifests (no key, only the variable's name)."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "json_schema_grammar": self.json_schema_grammar,
        }
