"""What a session tells an agent's UI about its connection, and the counters it keeps.

Every event is a small frozen dataclass; ``on_event`` callbacks receive them in order, on the event loop that runs
the session. A UI can show ``Offline``/``Retrying`` ("reconnecting in 2.1 s, attempt 3 of 8") and clear it on
``Connected``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from tether.types import JSONObject

_log = logging.getLogger("tether.client")


class TransportKind(StrEnum):
    WEBSOCKET = "websocket"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class Connecting:
    """A connection is being opened."""

    transport: TransportKind
    url: str


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is open (after a failure, this ends an offline period)."""

    transport: TransportKind
    reconnect: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """An open connection was lost; the turn in flight will be resumed."""

    transport: TransportKind
    reason: str


@dataclass(frozen=True, slots=True)
class Offline:
    """The server cannot be reached at all (connection refused, unreachable)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Retrying:
    """The turn will be tried again after ``delay_s`` seconds (attempt ``attempt`` of at most ``max_attempts``)."""

    attempt: int
    max_attempts: int
    delay_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The retry bound was reached; the turn raises :class:`~tether.client.errors.RetryExhaustedError`."""

    attempts: int
    elapsed_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """A dropped response is being resumed after sequence number ``after``."""

    response_id: str
    after: int
    transport: TransportKind


@dataclass(frozen=True, slots=True)
class FallbackToHTTP:
    """WebSocket mode was refused, blocked, or kept dropping: turns go over HTTP SSE for a while."""

    reason: str


@dataclass(frozen=True, slots=True)
class BackToWebSocket:
    """A WebSocket connection works again after a fallback to HTTP."""


@dataclass(frozen=True, slots=True)
class Healed:
    """The server no longer had ``previous_response_id``; the full context was re-sent from the journal."""

    previous_response_id: str
    items_resent: int


ConnectionEvent: TypeAlias = (
    Connecting
    | Connected
    | Disconnected
    | Offline
    | Retrying
    | GaveUp
    | Resumed
    | FallbackToHTTP
    | BackToWebSocket
    | Healed
)
EventCallback: TypeAlias = Callable[[ConnectionEvent], None]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request as it went on the wire (for tracing and tests): a ``response.create``, a resume, a POST or GET.

    Attributes:
        transport: the transport that sent it.
        method: ``"WS"`` for a WebSocket message, else the HTTP method.
        url: the WebSocket URL or the HTTP URL with its query.
        body: the JSON payload (``None`` for a GET).
        size: payload bytes.
    """

    transport: TransportKind
    method: str
    url: str
    body: JSONObject | None
    size: int


RequestCallback: TypeAlias = Callable[[SentRequest], None]


@dataclass(slots=True)
class ClientStats:
    """Counters of one session.

    Attributes:
        turns: turns completed (completed or incomplete responses).
        reconnects: connections re-established after a drop or an offline period.
        resumes: resume requests sent for dropped responses (by id, after the last delivered sequence number).
        heals: ``previous_response_not_found`` answers healed by re-sending the full context.
        fallbacks: switches from WebSocket to HTTP.
        retries: waits before another attempt.
        interrupted: responses that ended in ``generation_interrupted`` (their node died) and were created again.
        bytes_sent: application payload sent (JSON bodies and messages).
        bytes_received: application payload received (SSE bytes and WebSocket messages).
    """

    turns: int = 0
    reconnects: int = 0
    resumes: int = 0
    heals: int = 0
    fallbacks: int = 0
    retries: int = 0
    interrupted: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class Emitter:
    """Calls the session's ``on_event`` and ``on_request`` callbacks; a failing callback is logged, never raised."""

    def __init__(self, on_event: EventCallback | None = None, on_request: RequestCallback | None = None) -> None:
        self._on_event = on_event
        self._on_request = on_request

    def event(self, event: ConnectionEvent) -> None:
        _log.debug("client.event %r", event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a UI bug must not break the agent's turn
                _log.exception("client.on_event_failed")

    def request(self, request: SentRequest) -> None:
        if self._on_request is not None:
            try:
                self._on_request(request)
            except Exception:
                _log.exception("client.on_request_failed")
