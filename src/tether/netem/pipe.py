"""One direction of a proxied connection: read, shape, hold until due, write."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from tether.netem.shaping import DirectionShaper, Piece
from tether.netem.stats import DirectionStats
from tether.netem.types import Direction

READ_SIZE = 16 * 1024
MAX_BATCH_BYTES = 64 * 1024


class LinkControl(Protocol):
    """What a pipe asks of the proxy that owns it."""

    def byte_budget(self, direction: Direction) -> int | None:
        """Bytes that may still be forwarded in ``direction`` before a byte trigger fires; ``None``: no limit."""
        ...

    def forwarded(self, direction: Direction, count: int) -> None:
        """``count`` more bytes were forwarded in ``direction``: update the totals and fire due byte triggers."""
        ...


class Pipe:
    """Moves one direction's bytes from ``source`` to ``sink`` through a ``DirectionShaper``.

    ``pump_in`` reads and shapes, ``pump_out`` sleeps until each piece is due and writes it; they run as two tasks
    so that many pieces can be in flight at once (a link holds a bandwidth-delay product of bytes). Reading pauses
    while more than ``max_queue_bytes`` wait, so TCP flow control pushes back on the sender. Socket errors are left
    to the caller, which knows what a reset on either side means.
    """

    def __init__(
        self,
        direction: Direction,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        shaper: DirectionShaper,
        counters: tuple[DirectionStats, ...],
        link: LinkControl,
        max_queue_bytes: int,
    ) -> None:
        self.direction = direction
        self.shaper = shaper
        self.forwarding = True
        self._source = source
        self._sink = sink
        self._counters = counters
        self._link = link
        self._max_queue_bytes = max_queue_bytes
        self._queue: deque[Piece | None] = deque()
        self._queued_bytes = 0
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def stop_forwarding(self) -> None:
        """Deliver nothing more: queued bytes are dropped, and so is everything read from now on."""
        self.forwarding = False
        eof = bool(self._queue) and self._queue[-1] is None
        dropped = self._queued_bytes
        self._queue.clear()
        self._queued_bytes = 0
        if eof:
            self._queue.append(None)
        self._count(dropped=dropped)
        self._space.set()
        self._ready.set()

    async def pump_in(self) -> None:
        """Read until EOF, queueing shaped pieces (or dropping them once forwarding stopped)."""
        loop = asyncio.get_running_loop()
        while data := await self._source.read(READ_SIZE):
            if not self.forwarding:
                self._count(dropped=len(data))
                continue
            self._queue.extend(self.shaper.shape(data, loop.time()))
            self._queued_bytes += len(data)
            self._ready.set()
            if self._queued_bytes > self._max_queue_bytes:
                self._space.clear()
                await self._space.wait()
        self._queue.append(None)
        self._ready.set()

    async def pump_out(self) -> None:
        """Write each piece when it is due, then pass the EOF on (unless forwarding stopped)."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            head = self._queue[0]
            if head is None:
                self._finish()
                return
            if (wait := head.release_at - loop.time()) > 0:
                await asyncio.sleep(wait)
                continue  # the queue may have been dropped meanwhile
            await self._deliver(self._take_due(loop.time()))

    def _take_due(self, now: float) -> list[Piece]:
        budget = self._link.byte_budget(self.direction)
        limit = MAX_BATCH_BYTES if budget is None else min(budget, MAX_BATCH_BYTES)
        batch: list[Piece] = []
        size = 0
        while self._queue and (piece := self._queue[0]) is not None and piece.release_at <= now and size < limit:
            self._queue.popleft()
            if budget is not None and size + len(piece.data) > budget:
                # Split at the trigger, so that the cut lands right after the budgeted byte.
                keep = budget - size
                self._queue.appendleft(Piece(piece.data[keep:], piece.release_at, new_packet=False))
                piece = Piece(piece.data[:keep], piece.release_at, piece.new_packet, piece.stalled)
            batch.append(piece)
            size += len(piece.data)
        self._queued_bytes -= size
        if self._queued_bytes <= self._max_queue_bytes:
            self._space.set()
        return batch

    async def _deliver(self, batch: list[Piece]) -> None:
        size = sum(len(piece.data) for piece in batch)
        if not self.forwarding:
            self._count(dropped=size)
            return
        if size:
            self._sink.write(b"".join(piece.data for piece in batch))
            await self._sink.drain()
        self._count(
            forwarded=size,
            packets=sum(piece.new_packet for piece in batch),
            loss_stalls=sum(piece.stalled for piece in batch),
        )
        self._link.forwarded(self.direction, size)

    def _finish(self) -> None:
        if self.forwarding and not self._sink.is_closing() and self._sink.can_write_eof():
            self._sink.write_eof()

    def _count(self, *, forwarded: int = 0, packets: int = 0, dropped: int = 0, loss_stalls: int = 0) -> None:
        for counter in self._counters:
            counter.bytes += forwarded
            counter.packets += packets
            counter.dropped += dropped
            counter.loss_stalls += loss_stalls
