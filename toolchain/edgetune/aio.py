"""Running a coroutine to completion from synchronous code, wherever that code is called from."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, or the same in a worker thread when this thread already runs an event loop (a notebook, a
    caller's async code, a library that left its loop running): asyncio.run refuses to nest."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgetune-async") as pool:
        return pool.submit(asyncio.run, coro).result()
