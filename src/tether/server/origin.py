"""The :class:`~tether.engine.observer.TurnOrigin` of a request, from its transport's view of it."""

from __future__ import annotations

from collections.abc import Mapping

from tether.engine.observer import TurnOrigin
from tether.server.auth import Identity

TRACE_HEADERS = ("traceparent", "tracestate")


def turn_origin(transport: str, request_bytes: int, identity: Identity, headers: Mapping[str, str]) -> TurnOrigin:
    """Args: the transport's name, the size of the body or message the client sent, who sent it, and the HTTP
    (or WebSocket handshake) headers, whose W3C trace context is kept."""
    trace = {name: headers[name] for name in TRACE_HEADERS if name in headers}
    return TurnOrigin(transport=transport, request_bytes=request_bytes, key_id=identity.key_id, trace_headers=trace)
