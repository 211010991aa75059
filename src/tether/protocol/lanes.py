"""The lane state machine of a WebSocket connection (sans-I/O).

A connection carries lanes named by ``stream_id`` (``None`` is the default lane). Within a lane responses run one
at a time, in the order they were created; across lanes they run concurrently, up to ``max_in_flight`` at once.
Work that cannot start yet waits in a bounded queue, and starts in arrival order as soon as its lane is idle and a
slot is free.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from tether.protocol.errors import ErrorType, ProtocolError

T = TypeVar("T")
Lane = str | None


@dataclass(frozen=True, slots=True)
class LaneLimits:
    max_in_flight: int = 16
    max_named_lanes: int = 32
    max_queued: int = 64


class LaneScheduler(Generic[T]):
    """Decides when each submitted job of a connection may run.

    Call :meth:`submit` for each new job; when it returns ``True`` the caller starts the job now. Call
    :meth:`finish` when a job ends; it returns the jobs that may start now, in order.
    """

    def __init__(self, limits: LaneLimits | None = None) -> None:
        self.limits = limits or LaneLimits()
        self._named: set[str] = set()
        self._running: set[Lane] = set()
        self._waiting: deque[tuple[Lane, T]] = deque()

    @property
    def running(self) -> frozenset[Lane]:
        return frozenset(self._running)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._running and not self._waiting

    def submit(self, lane: Lane, job: T) -> bool:
        """Admit a job on a lane.

        Returns:
            ``True`` if the job may start now, ``False`` if it was queued.

        Raises:
            ProtocolError: ``websocket_stream_limit_reached`` for one named lane too many,
                ``websocket_queue_full`` when the queue is full. Nothing changes state in either case.
        """
        if lane is not None and lane not in self._named and len(self._named) >= self.limits.max_named_lanes:
            raise ProtocolError(
                400,
                "websocket_stream_limit_reached",
                f"This connection reached the maximum number of distinct stream IDs ({self.limits.max_named_lanes})."
                " Reuse an existing stream_id or open a new WebSocket connection.",
                param="stream_id",
            )
        if self._slot_free(lane) and all(waiting_lane != lane for waiting_lane, _ in self._waiting):
            self._admit(lane)
            return True
        if len(self._waiting) >= self.limits.max_queued:
            raise ProtocolError(
                429,
                "websocket_queue_full",
                f"Too many queued responses on this connection ({self.limits.max_queued}). Wait for responses in "
                "flight to finish before sending more.",
                error_type=ErrorType.RATE_LIMIT,
                headers={"retry-after": "1"},
            )
        if lane is not None:
            self._named.add(lane)
        self._waiting.append((lane, job))
        return False

    def finish(self, lane: Lane) -> list[tuple[Lane, T]]:
        """Mark the running job of ``lane`` done and return the jobs that start now."""
        self._running.discard(lane)
        started: list[tuple[Lane, T]] = []
        blocked: set[Lane] = set()
        for entry in list(self._waiting):
            entry_lane = entry[0]
            if entry_lane in blocked:
                continue
            if self._slot_free(entry_lane):
                self._waiting.remove(entry)
                self._admit(entry_lane)
                started.append(entry)
            blocked.add(entry_lane)  # FIFO within a lane: nothing may overtake the lane's first waiting job
        return started

    def drain(self) -> list[tuple[Lane, T]]:
        """Remove and return every queued job (e.g. when the connection closes)."""
        waiting = list(self._waiting)
        self._waiting.clear()
        return waiting

    def _slot_free(self, lane: Lane) -> bool:
        return lane not in self._running and len(self._running) < self.limits.max_in_flight

    def _admit(self, lane: Lane) -> None:
        if lane is not None:
            self._named.add(lane)
        self._running.add(lane)
