"""The limit on JSON values per request, enforced without decoding an over-limit request in the server process.

A small request is within ``max_json_values`` by :func:`~tether.protocol.json_values.values_upper_bound` (a count
of commas and brackets, at most 1 ms for 1 MiB), or has too few characters to be over it, and is decoded as before.
Any other is counted in one worker process: the same bound first (~15 ms for 16 MiB, where the event loop would
wait for it), then, when the bound is over the limit, the exact :func:`~tether.protocol.json_values.survey`. The
request is decoded here only if it is within the limit. The event loop never waits on that count (it only writes
the text into a pipe), and never on the decode of a request over the limit: that decode is the stall the limit
exists for (~0.5 s of CPU, holding the GIL, for 16 MiB of tiny objects).

The worker is started on first use, reads one text at a time, and ends with the server (or when the server's
process ends: it exits when its stdin closes). It runs ``json_values.py`` by path with ``python -P``, so it imports
orjson and nothing of tether.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass

import orjson
import structlog

from tether.protocol import json_values
from tether.protocol.errors import ErrorType, ProtocolError
from tether.server.off_loop import OFF_LOOP_BYTES

_log = structlog.get_logger("tether.server")

# A WebSocket message is text: it goes to the worker encoded this many characters at a time (~1 ms each).
_ENCODED_CHARS = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Excess:
    """A text over the limit: how many values it holds, and the string its top-level object holds at the key asked
    for (a WebSocket event's ``stream_id``, an edge frame's ``turn``), if any."""

    values: int
    found: str | None


class ValueCounter:
    """Counts the JSON values of texts over the cheap bound, in a worker process of its own."""

    def __init__(self) -> None:
        self._worker: _Worker | None = None
        self._lock = asyncio.Lock()  # one text at a time: each reply is the answer to the text just written
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The worker's process id, while one runs."""
        return None if self._worker is None else self._worker.process.pid

    async def excess(self, text: bytes | str, limit: int, key: str = "stream_id") -> Excess | None:
        """``None`` when ``text`` holds at most ``limit`` JSON values (if it is valid JSON), else how many it holds
        (and its top-level ``key`` string, if any).

        Raises:
            ProtocolError: 503 when the worker cannot be run (or the server is stopping).
        """
        if (len(text) + 1) // 2 <= limit:  # a text of n characters holds at most (n + 1) / 2 values
            return None
        if len(text) <= OFF_LOOP_BYTES and json_values.values_upper_bound(text) <= limit:
            return None
        values, found = await self._survey(text, limit, key)
        return Excess(values, found) if values > limit else None

    async def find(self, text: bytes | str, key: str) -> str | None:
        """The string ``text``'s top-level object holds at ``key``, read without decoding ``text`` (for a text
        refused unread, such as one over the size limit, to say whose it was).

        Raises:
            ProtocolError: 503 when the worker cannot be run (or the server is stopping).
        """
        excess = await self.excess(text, 1, key)  # any text over one value is surveyed, and its key found
        return None if excess is None else excess.found

    async def aclose(self) -> None:
        """Stop the worker (a text being counted gets the 503)."""
        self._closed = True
        await self._discard()

    async def _survey(self, text: bytes | str, limit: int, key: str) -> tuple[int, str | None]:
        async with self._lock:
            for attempt in (1, 2):  # a worker that died (killed, out of memory) is replaced once
                if self._closed:
                    break
                try:
                    return await self._exchange(text, limit, key)
                except (OSError, EOFError, ValueError) as error:
                    _log.warning("json_values.worker_failed", attempt=attempt, error=type(error).__name__)
                    await self._discard()
                except BaseException:  # cancelled mid-exchange: the pipe may hold half a text or a stale reply
                    await asyncio.shield(self._discard())
                    raise
        raise ProtocolError(
            503,
            "server_error",
            "The server could not count the JSON values of this request; try again.",
            error_type=ErrorType.SERVER,
        )

    async def _exchange(self, text: bytes | str, limit: int, key: str) -> tuple[int, str | None]:
        worker = self._worker or await self._start()
        encoded_key = key.encode()
        worker.stdin.writelines([_number(limit), _number(len(encoded_key)), encoded_key])
        if isinstance(text, bytes):
            worker.stdin.writelines([_number(len(text)), text])
        else:  # encoded a piece at a time, so that the loop never spends long on one
            for begin in range(0, len(text), _ENCODED_CHARS):
                piece = text[begin : begin + _ENCODED_CHARS].encode()
                worker.stdin.writelines([_number(len(piece)), piece])
                await worker.stdin.drain()
        worker.stdin.write(_number(0))
        await worker.stdin.drain()
        line = await worker.stdout.readline()
        if not line:
            raise EOFError("the worker ended")
        count, answer = line.split(b" ", 1)
        found = orjson.loads(answer)
        return int(count), found if isinstance(found, str) else None

    async def _start(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # the script's folder (tether/protocol) stays off sys.path: its modules must not shadow any
            json_values.__file__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # a client's text must never put a traceback in the log
        )
        if process.stdin is None or process.stdout is None:  # never with PIPE; says so to the type checker
            raise OSError("the worker has no pipes")
        self._worker = _Worker(process, process.stdin, process.stdout)
        _log.debug("json_values.worker_started", pid=process.pid)
        return self._worker

    async def _discard(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
        await worker.process.wait()


def _number(value: int) -> bytes:
    return value.to_bytes(json_values.WORKER_HEADER_BYTES, "big")


@dataclass(frozen=True, slots=True)
class _Worker:
    process: asyncio.subprocess.Process
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader
