"""One worker thread for the CPU-bound reading of large requests: decoding, checking and validating their JSON.

A request above :data:`OFF_LOOP_BYTES` is read there instead of on the event loop; smaller ones are read inline and
pay nothing. One thread, not a pool: orjson's decoder and pydantic's validator hold the GIL for a whole call (about
0.5 s for a 16 MiB body of small objects on a loaded core), so parallel parses would not finish sooner, and every
extra one in flight is one more thread the event loop waits behind for the GIL before it can answer anyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")

# Bodies (HTTP) and messages (WebSocket, in characters) above this are read on the worker thread.
OFF_LOOP_BYTES = 1024 * 1024


class OffLoop:
    """Runs large reads one at a time on a thread of its own, in the order they arrive."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-read")

    async def read(self, size: int, parse: Callable[[], _T]) -> _T:
        """``parse()``: inline when ``size`` is at most :data:`OFF_LOOP_BYTES`, else on the worker thread."""
        if size <= OFF_LOOP_BYTES:
            return parse()
        return await asyncio.get_running_loop().run_in_executor(self._executor, parse)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
