"""The Python SDK for agents: a session that sends only new items, journals every item, and survives drops,
blocked WebSockets, offline periods and restarts. See ``docs/client.md``."""

from tether.client.errors import (
    APIError,
    ClientError,
    ConnectionLostError,
    PendingTurnError,
    ResponseFailedError,
    RetryExhaustedError,
    ServerUnreachableError,
    WebSocketRefusedError,
)
from tether.client.events import (
    BackToWebSocket,
    ClientStats,
    Connected,
    Connecting,
    ConnectionEvent,
    Disconnected,
    FallbackToHTTP,
    GaveUp,
    Healed,
    Offline,
    Resumed,
    Retrying,
    SentRequest,
    TransportKind,
)
from tether.client.journal import Journal, JournalItem, SessionRecord, TurnRecord
from tether.client.results import Delta, FunctionCall, ReasoningDelta, TextDelta, TurnReset, TurnResult
from tether.client.retry import Backoff, RetryPolicy
from tether.client.session import AsyncSession
from tether.client.stream import TurnStream
from tether.client.sync import Session, SyncTurnStream
from tether.client.transport import ConnectionPolicy

__all__ = [
    "APIError",
    "AsyncSession",
    "BackToWebSocket",
    "Backoff",
    "ClientError",
    "ClientStats",
    "Connected",
    "Connecting",
    "ConnectionEvent",
    "ConnectionLostError",
    "ConnectionPolicy",
    "Delta",
    "Disconnected",
    "FallbackToHTTP",
    "FunctionCall",
    "GaveUp",
    "Healed",
    "Journal",
    "JournalItem",
    "Offline",
    "PendingTurnError",
    "ReasoningDelta",
    "ResponseFailedError",
    "Resumed",
    "RetryExhaustedError",
    "RetryPolicy",
    "Retrying",
    "SentRequest",
    "ServerUnreachableError",
    "Session",
    "SessionRecord",
    "SyncTurnStream",
    "TextDelta",
    "TransportKind",
    "TurnRecord",
    "TurnReset",
    "TurnResult",
    "TurnStream",
    "WebSocketRefusedError",
]
