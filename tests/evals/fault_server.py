"""A tiny OpenAI-compatible server (stdlib http.server in a thread) whose every reply is scripted, to drive
the judge through 429s, 5xx, hangs, garbage and chosen verdicts. It records every request (body and headers)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Reply:
    """A chat completion whose message content is `text`."""

    text: str


@dataclass(frozen=True)
class Status:
    code: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=lambda: {"error": {"message": "scripted failure"}})


@dataclass(frozen=True)
class Hang:
    """Sleep `seconds` before replying `then` (the client should have timed out by then)."""

    seconds: float
    then: Reply = Reply("Rating: 5")


@dataclass(frozen=True)
class Garbage:
    body: bytes
    content_type: str = "application/json"


Action = Reply | Status | Hang | Garbage
Script = Callable[[int, dict[str, Any]], Action]


def sequence(*actions: Action, then: Action = Reply("Rating: 7")) -> Script:
    """Request i gets actions[i]; requests past the end get `then`."""
    return lambda i, body: actions[i] if i < len(actions) else then


def shown_answers(body: dict[str, Any]) -> tuple[str, str]:
    """The answers in positions A and B of a pairwise prompt rendered with the helpfulness rubric."""
    user = body["messages"][-1]["content"]
    found = re.search(r"\[Assistant A\]\n(.*?)\n\n\[Assistant B\]\n(.*?)\n\n", user, re.DOTALL)
    assert found, user
    return found.group(1), found.group(2)


class FaultServer:
    """Use as a context manager; `base_url` ends in /v1; `requests` holds {"body", "headers"} per request
    (header names lowercased)."""

    def __init__(self, script: Script):
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def count(self) -> int:
        return len(self.requests)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with outer._lock:
                    index = len(outer.requests)
                    outer.requests.append(
                        {"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}}
                    )
                action = outer.script(index, body)
                if isinstance(action, Hang):
                    if outer._stopping.wait(action.seconds):
                        return
                    action = action.then
                try:
                    self._send(action, body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def _send(self, action: Action, body: dict[str, Any]) -> None:
                headers: dict[str, str] = {}
                if isinstance(action, Reply):
                    code, ctype = 200, "application/json"
                    payload = json.dumps(
                        {
                            "id": "chatcmpl-fault",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": body.get("model", "m"),
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": action.text},
                                }
                            ],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                        }
                    ).encode()
                elif isinstance(action, Status):
                    code, ctype, payload, headers = (
                        action.code,
                        "application/json",
                        json.dumps(action.body).encode(),
                        action.headers,
                    )
                else:
                    code, ctype, payload = 200, action.content_type, action.body
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
