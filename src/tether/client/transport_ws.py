"""WebSocket mode transport: one socket for many turns, one JSON text message per event.

Turns run one at a time on the default lane, so the events that follow a request belong to it until it ends (a
terminal event or an ``error``). If the caller abandons a turn midway, the rest of its events still arrive: the
next request first reads past them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus
from websockets.protocol import State

from tether.client.errors import (
    APIError,
    ConnectionLostError,
    ServerUnreachableError,
    WebSocketRefusedError,
    api_error_from_http,
)
from tether.client.events import (
    ClientStats,
    Connected,
    Connecting,
    Disconnected,
    Emitter,
    Offline,
    SentRequest,
    TransportKind,
)
from tether.client.transport import ConnectionPolicy
from tether.protocol.vocabulary import ANSWER_END_EVENTS, RESUME_EVENT
from tether.types import JSONObject

CLOSE_MESSAGE_TOO_BIG = 1009
CONNECTION_LIMIT_CODE = "websocket_connection_limit_reached"
_TRANSIENT_HANDSHAKE = frozenset({408, 429, 500, 502, 503, 504})
_CLOSE_TIMEOUT_S = 2.0


def ends_exchange(event: JSONObject) -> bool:
    """Whether ``event`` is the last one the server sends for a request (WebSocket mode sends exactly one of a
    terminal event or an ``error`` per request)."""
    return event.get("type") in ANSWER_END_EVENTS


class WebSocketTransport:
    """Turns over WebSocket mode.

    Args:
        url: the WebSocket URL (``ws://host/v1/responses``).
        headers: sent on the upgrade request (``Authorization`` among them).
        policy: timeouts and the largest message accepted.
        emitter: where connection events go.
        stats: counters to update.
    """

    def __init__(
        self, url: str, headers: Mapping[str, str], policy: ConnectionPolicy, emitter: Emitter, stats: ClientStats
    ) -> None:
        self.url = url
        self._headers = dict(headers)
        self._policy = policy
        self._emitter = emitter
        self._stats = stats
        self._ws: ClientConnection | None = None
        self._ever_connected = False
        self._offline = False
        self._stale = 0  # abandoned requests whose last event has not been read yet

    @property
    def kind(self) -> TransportKind:
        return TransportKind.WEBSOCKET

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self._ws.state is State.OPEN

    async def connect(self) -> None:
        if self.is_open:
            return
        if self._ws is not None:
            await self._discard("the connection closed while idle")
        self._emitter.event(Connecting(TransportKind.WEBSOCKET, self.url))
        try:
            self._ws = await connect(
                self.url,
                additional_headers=self._headers,
                open_timeout=self._policy.connect_timeout_s,
                close_timeout=_CLOSE_TIMEOUT_S,
                max_size=self._policy.max_message_bytes,
            )
        except InvalidStatus as error:
            raise self._refused(error) from error
        except InvalidMessage as error:
            # No HTTP answer at all (the connection closed mid-handshake): more often a server or proxy restarting
            # than a block, so it counts as a drop; drops that keep happening lead to the fallback anyway.
            raise ConnectionLostError(f"WebSocket handshake got no answer: {error}") from error
        except InvalidHandshake as error:
            raise WebSocketRefusedError(f"WebSocket handshake failed: {error}") from error
        except TimeoutError as error:
            raise WebSocketRefusedError("WebSocket handshake timed out") from error
        except OSError as error:
            if not self._offline:
                self._emitter.event(Offline(f"cannot connect: {error}"))
            self._offline = True
            raise ServerUnreachableError(f"cannot connect: {error}") from error
        reconnect = self._ever_connected or self._offline
        if reconnect:
            self._stats.reconnects += 1
        self._ever_connected, self._offline, self._stale = True, False, 0
        self._emitter.event(Connected(TransportKind.WEBSOCKET, reconnect))

    def create(self, body: JSONObject, idempotency_key: str | None) -> AsyncGenerator[JSONObject, None]:
        return self._exchange({"type": "response.create", **body})

    def resume(self, response_id: str, after: int, resume_token: str | None) -> AsyncGenerator[JSONObject, None]:
        event: JSONObject = {"type": RESUME_EVENT, "response_id": response_id, "starting_after": after}
        if resume_token is not None:
            event["resume_token"] = resume_token
        return self._exchange(event)

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def _exchange(self, payload: JSONObject) -> AsyncGenerator[JSONObject, None]:
        await self.connect()
        ws = self._ws
        assert ws is not None
        await self._skip_stale(ws)
        message = orjson.dumps(payload)
        try:
            async with asyncio.timeout(self._policy.connect_timeout_s):
                await ws.send(message.decode())
        except (ConnectionClosed, TimeoutError) as error:
            raise await self._dropped(ws, error) from error
        self._stats.bytes_sent += len(message)
        self._emitter.request(SentRequest(TransportKind.WEBSOCKET, "WS", self.url, payload, len(message)))
        finished = False
        try:
            while not finished:
                event = await self._receive(ws)
                finished = ends_exchange(event)
                if event.get("type") == "error" and (event.get("error") or {}).get("code") == CONNECTION_LIMIT_CODE:
                    raise await self._dropped(ws, "the connection reached its maximum age")
                yield event
        finally:
            if not finished and self._ws is ws:
                self._stale += 1

    async def _skip_stale(self, ws: ClientConnection) -> None:
        while self._stale > 0:
            if ends_exchange(await self._receive(ws)):
                self._stale -= 1

    async def _receive(self, ws: ClientConnection) -> JSONObject:
        try:
            async with asyncio.timeout(self._policy.read_timeout_s):
                message = await ws.recv(decode=False)
        except TimeoutError as error:
            raise await self._dropped(ws, f"no message for {self._policy.read_timeout_s:g}s") from error
        except ConnectionClosed as error:
            too_big = (error.rcvd is not None and error.rcvd.code == CLOSE_MESSAGE_TOO_BIG) or (
                error.sent is not None and error.sent.code == CLOSE_MESSAGE_TOO_BIG
            )
            if too_big:
                await self._discard("message too big")
                raise APIError(400, "message_too_large", "a WebSocket message exceeded the size limit") from error
            raise await self._dropped(ws, error) from error
        self._stats.bytes_received += len(message)
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError as error:
            raise await self._dropped(ws, f"a message is not JSON: {error}") from error
        if not isinstance(event, dict):
            raise await self._dropped(ws, "a message is not a JSON object")
        return event

    async def _dropped(self, ws: ClientConnection, cause: BaseException | str) -> ConnectionLostError:
        if isinstance(cause, ConnectionClosed):
            code = cause.rcvd.code if cause.rcvd is not None else None
            reason = f"connection closed ({code if code is not None else 'no close frame'})"
        else:
            code, reason = None, str(cause)
        if self._ws is ws:
            await self._discard(reason)
        return ConnectionLostError(reason, code)

    async def _discard(self, reason: str) -> None:
        ws, self._ws = self._ws, None
        self._stale = 0
        if ws is None:
            return
        self._emitter.event(Disconnected(TransportKind.WEBSOCKET, reason))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await ws.close()
        # A peer that never answers the close (a dead link) leaves the socket open once the timeout above cancels
        # the close; it would stay open until the event loop ends.
        ws.transport.abort()

    def _refused(self, error: InvalidStatus) -> Exception:
        response = error.response
        status = response.status_code
        if status == 401:
            return api_error_from_http(status, response.body or b"", response.headers)
        if status in _TRANSIENT_HANDSHAKE:
            return ConnectionLostError(f"WebSocket handshake answered {status}")
        return WebSocketRefusedError(f"WebSocket handshake refused with {status}", status)
