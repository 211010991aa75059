"""ASGI middleware that sees every request on the wire: bytes in and out, open WebSockets, one access log line.

It wraps ``receive`` and ``send`` only to count; it never buffers or changes a message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.server.metrics import Metrics

_log = structlog.get_logger("tether.access")

QUIET_PATHS = frozenset({"/metrics", "/health"})
ERROR_BODY_LIMIT = 8192  # error envelopes are small; a larger 4xx body is not one of tether's


@dataclass(slots=True)
class _Exchange:
    received: int = 0
    sent: int = 0
    status: int = 0
    streaming: bool = False
    error_body: bytes = b""


class TrafficMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = _Exchange()
        started = time.perf_counter()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                exchange.streaming = content_type.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                exchange.sent += len(body)
                if exchange.status >= 400 and len(exchange.error_body) < ERROR_BODY_LIMIT:
                    exchange.error_body += body[:ERROR_BODY_LIMIT]
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            transport = "sse" if exchange.streaming else "http"
            self.metrics.bytes_received.labels(transport).inc(exchange.received)
            self.metrics.bytes_sent.labels(transport).inc(exchange.sent)
            _access_line(scope, exchange, time.perf_counter() - started)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = _Exchange()
        started = time.perf_counter()
        received, sent = self.metrics.bytes_received.labels("websocket"), self.metrics.bytes_sent.labels("websocket")

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                size = _ws_size(message)
                exchange.received += size
                received.inc(size)
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "websocket.accept":
                exchange.status = 101
                self.metrics.connections.inc()
            elif message["type"] == "websocket.send":
                size = _ws_size(message)
                exchange.sent += size
                sent.inc(size)
                text = message.get("text")
                if text is not None and text.startswith('{"type":"error"'):
                    _log_ws_error(scope, text)
            elif message["type"] == "websocket.http.response.start":
                exchange.status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            if exchange.status == 101:
                self.metrics.connections.dec()
            _access_line(scope, exchange, time.perf_counter() - started)


def _ws_size(message: Message) -> int:
    text = message.get("text")
    if text is not None:  # an ASCII string's length is its size in UTF-8 (the check is O(1); encoding is not)
        return len(text) if text.isascii() else len(text.encode())
    return len(message.get("bytes") or b"")


def _error_code(body: bytes) -> str | None:
    """The ``error.code`` of an error body tether wrote (the protocol's envelope), if it parses."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _log_ws_error(scope: Scope, text: str) -> None:
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    error = event.get("error") if isinstance(event, dict) else None
    if isinstance(error, dict):
        _log.warning("ws.error", path=scope.get("path", ""), status=event.get("status"), code=error.get("code"))


def _access_line(scope: Scope, exchange: _Exchange, seconds: float) -> None:
    method = scope.get("method", "WEBSOCKET") if scope["type"] == "http" else "WEBSOCKET"
    fields = {
        "method": method,
        "path": scope.get("path", ""),
        "status": exchange.status,
        "duration_s": round(seconds, 4),
        "bytes_in": exchange.received,
        "bytes_out": exchange.sent,
    }
    if exchange.error_body:
        fields["code"] = _error_code(exchange.error_body)
    if exchange.status >= 500:
        _log.error("http.access", **fields)
    elif exchange.status >= 400:
        _log.warning("http.access", **fields)
    elif fields["path"] in QUIET_PATHS:
        _log.debug("http.access", **fields)  # scrapers and health checks poll; their lines would drown the rest
    else:
        _log.info("http.access", **fields)
