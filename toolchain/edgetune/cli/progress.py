"""The CLI's Progress: rich bars on stderr with rate and ETA; silent when stderr is not a terminal and
--json is set, so scripts get clean output."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from edgetune.cli.logs import stderr


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed is None until a few updates have arrived)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:6.2f}/s" if task.speed else "     –/s")


class _Task:
    def __init__(self, bar: Progress, task_id: int):
        self.bar, self.task_id = bar, task_id

    def advance(self, n: float = 1, **fields: Any) -> None:
        self.bar.update(self.task_id, advance=n, info=format_fields(fields))


def format_fields(fields: dict[str, Any]) -> str:
    """The bar's trailing text: rates (keys ending in /s) as whole numbers after their value, e.g.
    `loss=2.412  1,830 tok/s`; other floats to 3 decimals; NaN (nothing measured yet) as `–`."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, float) and math.isnan(value):
            text = "–"
        elif isinstance(value, float):
            text = f"{value:,.0f}" if key.endswith("/s") else f"{value:.3f}"
        else:
            text = str(value)
        parts.append(f"{text} {key}" if key.endswith("/s") else f"{key}={text}")
    return "  ".join(parts)


class RichProgress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[_Task]:
        columns = (SpinnerColumn(), TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                   RateColumn(), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        with Progress(*columns, console=stderr, disable=not self.enabled, transient=False) as bar:
            task_id = bar.add_task(description, total=total, info="")
            yield _Task(bar, task_id)
