"""What the session asks of a transport, and the options both transports share.

A transport turns one request into the server events that answer it, and reports failures as exceptions (from
:mod:`tether.client.errors`) the session's retry loop understands: ``ConnectionLostError`` (drop; retry and resume),
``ServerUnreachableError`` (offline; retry), ``WebSocketRefusedError`` (handshake refused or blocked; fall back to
HTTP) and ``APIError`` (the server said no).

Events are yielded as the JSON objects decoded off the wire. They are not typed as
:mod:`tether.protocol.events`' TypedDicts: nothing has validated them (the server may be another Responses server,
or a broken one), so readers take fields with ``.get`` and check their types, and a malformed event is skipped or
refused, never a ``KeyError``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from tether.client.events import TransportKind
from tether.types import JSONObject


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """Timeouts and the WebSocket/HTTP fallback rules.

    Args:
        connect_timeout_s: to open a connection (TCP, TLS and the WebSocket handshake).
        read_timeout_s: the longest silence while a response is expected before the connection counts as dead.
        websocket_drop_limit: drops of a WebSocket within one turn before the session falls back to HTTP.
        websocket_retry_after_s: after a fallback, how long before a turn tries WebSocket mode again.
        max_message_bytes: the largest WebSocket message accepted from the server.
    """

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0
    websocket_drop_limit: int = 3
    websocket_retry_after_s: float = 300.0
    max_message_bytes: int = 64 * 1024 * 1024


class Transport(Protocol):
    """One way to reach the server (WebSocket mode or HTTP SSE)."""

    @property
    def kind(self) -> TransportKind: ...

    async def connect(self) -> None:
        """Make sure a connection is open (a no-op for HTTP, which connects per request).

        Raises:
            ServerUnreachableError, ConnectionLostError, WebSocketRefusedError, APIError: see the module docstring.
        """
        ...

    def create(self, body: JSONObject, idempotency_key: str | None) -> AsyncGenerator[JSONObject, None]:
        """Send a create request and yield the events that answer it, up to a terminal event or a refusal."""
        ...

    def resume(self, response_id: str, after: int, resume_token: str | None) -> AsyncGenerator[JSONObject, None]:
        """Yield the events of ``response_id`` after sequence number ``after`` (a tether extension)."""
        ...

    async def aclose(self) -> None:
        """Close the connection."""
        ...


def responses_url(base_url: str) -> str:
    """``{base_url}/responses``: where the Responses API lives below a base URL such as ``http://host/v1``."""
    return base_url.rstrip("/") + "/responses"


def websocket_url(base_url: str) -> str:
    """The WebSocket mode URL of a base URL, as the official SDKs derive it (``http`` → ``ws``, ``https`` → ``wss``).

    Raises:
        ValueError: if ``base_url`` is not an http(s) or ws(s) URL.
    """
    url = responses_url(base_url)
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(plain):
            return secure + url.removeprefix(plain)
    if url.startswith(("ws://", "wss://")):
        return url
    raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
