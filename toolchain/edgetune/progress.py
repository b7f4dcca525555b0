"""How long-running library code reports progress without printing: the CLI passes a `Progress` that draws
rich bars; library callers get `NullProgress`."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any, Protocol


class Task(Protocol):
    def advance(self, n: float = 1, **fields: Any) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None) -> Any:
        """A context manager yielding a Task."""


class _NullTask:
    def advance(self, n: float = 1, **fields: Any) -> None:
        pass


class NullProgress:
    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[_NullTask]:
        yield _NullTask()
