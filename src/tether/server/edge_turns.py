"""The gateway's log of edge turns: every piece of an answer, numbered, kept while the turn runs and for a grace
period after, so a dropped edge resumes after the last piece it saw and a repeated turn is answered from the log,
never generated twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog

from tether.protocol.edge_wire import Piece
from tether.store.base import StoreDamagedError

_log = structlog.get_logger("tether.server.edge")


class TurnLog:
    """One turn's pieces, appended by its producer and read by any number of followers."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.finished = False
        self._changed = asyncio.Condition()

    async def append(self, piece: Piece) -> None:
        async with self._changed:
            self.pieces.append(piece)
            self._changed.notify_all()

    async def finish(self) -> None:
        async with self._changed:
            self.finished = True
            self._changed.notify_all()

    async def follow(self, after: int = -1) -> AsyncIterator[tuple[int, Piece]]:
        """The pieces numbered above ``after``, live until the turn finishes."""
        seq = after + 1
        while True:
            async with self._changed:
                while len(self.pieces) <= seq and not self.finished:
                    await self._changed.wait()
                ready = self.pieces[seq:]
                finished = self.finished
            for piece in ready:
                yield seq, piece
                seq += 1
            if finished and seq >= len(self.pieces):
                return


class EdgeTurns:
    """The turn logs of every tenant, each kept ``grace_s`` after it finishes.

    Args:
        grace_s: how long a finished turn stays resumable.
        max_turns: the logs kept at once; past it the oldest finished ones go first.
    """

    def __init__(self, grace_s: float, max_turns: int = 4096) -> None:
        self.grace_s = grace_s
        self.max_turns = max_turns
        self.started = 0
        """Turns generated so far (a repeated or resumed turn is not counted again)."""
        self._logs: dict[tuple[str, str], TurnLog] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, tenant: str, turn: str) -> TurnLog | None:
        return self._logs.get((tenant, turn))

    def start(self, tenant: str, turn: str, produce: Callable[[], AsyncIterator[Piece]]) -> TurnLog:
        """The log of ``turn``, started with ``produce`` unless it already exists (a repeated turn)."""
        key = (tenant, turn)
        existing = self._logs.get(key)
        if existing is not None:
            return existing
        self._make_room()
        self.started += 1
        log = TurnLog()
        self._logs[key] = log
        task = asyncio.create_task(self._run(key, log, produce))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return log

    async def _run(self, key: tuple[str, str], log: TurnLog, produce: Callable[[], AsyncIterator[Piece]]) -> None:
        try:
            async for piece in produce():
                await log.append(piece)
        except StoreDamagedError as error:  # the disk's fault, not a bug: one line naming the file
            _log.error("store.damaged", turn=key[1], problem=str(error))
            await log.append({"end": True, "error": "the gateway failed while answering"})
        except Exception as error:  # the producer renders its own errors; this is a bug, reported as a 502 end
            _log.error("edge.turn.failed", turn=key[1], error=repr(error))
            await log.append({"end": True, "error": "the gateway failed while answering"})
        finally:
            await log.finish()
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(self.grace_s, self._expire, key, log)

    def _expire(self, key: tuple[str, str], log: TurnLog) -> None:
        if self._logs.get(key) is log:
            del self._logs[key]

    def _make_room(self) -> None:
        if len(self._logs) < self.max_turns:
            return
        for key, log in list(self._logs.items()):
            if log.finished:
                del self._logs[key]
                if len(self._logs) < self.max_turns:
                    return

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
