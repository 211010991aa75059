"""What the engine tells the world about its turns: one seam for metrics, logs, traces, audit and the inspector.

The engine calls a :class:`TurnObserver` at fixed points of a turn's life; the default observer does nothing. The
server wires one that feeds ``/metrics``, the turn log line, traces, the audit log and ``/inspect``. An observer
must not block and must not raise: it runs on the turn's own path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.engine.turn import Turn
    from tether.protocol.errors import ProtocolError
    from tether.protocol.request import CreateRequest


class Resolution(StrEnum):
    """Where a turn's ``previous_response_id`` was found, or that the turn starts a new chain."""

    LANE = "lane"
    HOT_CACHE = "hot_cache"
    STORE = "store"
    NEW_CHAIN = "new_chain"


class InterruptReason(StrEnum):
    """Why a ``store=true`` generation ended as ``generation_interrupted`` instead of being committed."""

    LEASE_EXPIRED = "lease_expired"  # its node stopped renewing the lease (dead, paused, cut off from the store)
    DRAIN = "drain"  # its node shut down before the generation finished (past the shutdown grace)
    STORE_UNREACHABLE = "store_unreachable"  # its node could not write the generation's events to the store
    CANCELLED = "cancelled"  # cancelled on its node (every client left) before it finished


class LeaseRenewal(StrEnum):
    """How a heartbeat failed: the store ``refused`` it (the lease was fenced off) or raised an ``error``."""

    REFUSED = "refused"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TurnOrigin:
    """Where a turn came from, as its transport saw it.

    Attributes:
        transport: ``http``, ``websocket``, or ``internal`` (a turn started in process).
        request_bytes: the size of the body (HTTP) or message (WebSocket) the client actually sent.
        key_id: the short fingerprint of the API key that authenticated the request (never the key).
        trace_headers: the W3C trace context (``traceparent``, ``tracestate``) the request arrived with.
        credentials: the agent's own upstream credential headers (names in lower case), for a turn an edge relayed:
            sent upstream only when the routed provider has no key configured. Held in memory for the turn only:
            never in its ``repr``, the store, the stream log, a log line, a trace or the audit log.
    """

    transport: str = "internal"
    request_bytes: int = 0
    key_id: str | None = None
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class TurnTimings:
    """``time.perf_counter()`` readings of a turn's milestones (``None`` until reached), and its delta count."""

    opened: float = field(default_factory=time.perf_counter)
    resolved: float | None = None
    upstream_started: float | None = None
    first_token: float | None = None
    upstream_done: float | None = None
    committed: float | None = None
    ended: float | None = None
    deltas: int = 0

    def since_opened(self, reading: float | None) -> float | None:
        return None if reading is None else reading - self.opened


class TurnObserver:
    """Receives a turn's milestones. Every method does nothing here; subclasses pick what they need."""

    def turn_started(self, turn: Turn) -> None:
        """The turn's context is resolved and it is about to call its provider."""

    def upstream_headers(self, turn: Turn) -> Mapping[str, str]:
        """Headers to send with the turn's upstream request (the trace context of its upstream span)."""
        return {}

    def turn_finished(self, turn: Turn) -> None:
        """The turn is committed and its log is closed (completed, incomplete, failed or cancelled)."""

    def turn_rejected(
        self, request: CreateRequest, origin: TurnOrigin, error: ProtocolError, *, route: str, provider: str
    ) -> None:
        """The request failed before a turn could start (``previous_response_not_found`` and the like)."""

    def idempotent_replay(self, source: str) -> None:
        """A retried turn was answered from the ``live`` log or the ``store``, not generated again."""

    def resumed(self, response_id: str) -> None:
        """A client re-attached to the stream of ``response_id``."""

    def generation_interrupted(self, node: str, reason: InterruptReason, *, taken_over: bool) -> None:
        """This node ended a generation of ``node`` as interrupted, in the store (once per generation, cluster-wide).

        ``taken_over``: ``node`` is another node, whose claim this node took over after its lease lapsed.
        """

    def lease_renewal_failed(self, outcome: LeaseRenewal) -> None:
        """A heartbeat of one of this node's leases failed."""


class FanOut(TurnObserver):
    """Tells several observers, in order."""

    def __init__(self, observers: Sequence[TurnObserver]) -> None:
        self.observers = list(observers)

    def turn_started(self, turn: Turn) -> None:
        for observer in self.observers:
            observer.turn_started(turn)

    def upstream_headers(self, turn: Turn) -> Mapping[str, str]:
        headers: dict[str, str] = {}
        for observer in self.observers:
            headers.update(observer.upstream_headers(turn))
        return headers

    def turn_finished(self, turn: Turn) -> None:
        for observer in self.observers:
            observer.turn_finished(turn)

    def turn_rejected(
        self, request: CreateRequest, origin: TurnOrigin, error: ProtocolError, *, route: str, provider: str
    ) -> None:
        for observer in self.observers:
            observer.turn_rejected(request, origin, error, route=route, provider=provider)

    def idempotent_replay(self, source: str) -> None:
        for observer in self.observers:
            observer.idempotent_replay(source)

    def resumed(self, response_id: str) -> None:
        for observer in self.observers:
            observer.resumed(response_id)

    def generation_interrupted(self, node: str, reason: InterruptReason, *, taken_over: bool) -> None:
        for observer in self.observers:
            observer.generation_interrupted(node, reason, taken_over=taken_over)

    def lease_renewal_failed(self, outcome: LeaseRenewal) -> None:
        for observer in self.observers:
            observer.lease_renewal_failed(outcome)


def turn_outcome(turn: Turn) -> str:
    """``completed``, ``incomplete``, ``failed`` (an error answered the turn) or ``cancelled`` (shutdown, client)."""
    status = str(turn.stream.response["status"])
    if status == "failed" and turn.failed is None:
        return "cancelled"
    return status
