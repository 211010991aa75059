"""Connector: the WebSocket/HTTP fallback state machine, with fake transports and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from tether.client import (
    BackToWebSocket,
    ClientStats,
    ConnectionLostError,
    ConnectionPolicy,
    FallbackToHTTP,
    ServerUnreachableError,
    TransportKind,
    WebSocketRefusedError,
)
from tether.client.connector import Connector
from tether.client.events import Emitter
from tether.types import JSONObject

from .support import Recorder


class FakeTransport:
    def __init__(self, kind: TransportKind) -> None:
        self._kind = kind
        self.failure: Exception | None = None
        self.connects = 0

    @property
    def kind(self) -> TransportKind:
        return self._kind

    async def connect(self) -> None:
        self.connects += 1
        if self.failure is not None:
            raise self.failure

    async def create(self, body: JSONObject, idempotency_key: str | None) -> AsyncGenerator[JSONObject, None]:
        yield {}

    async def resume(self, response_id: str, after: int, resume_token: str | None) -> AsyncGenerator[JSONObject, None]:
        yield {}

    async def aclose(self) -> None:
        pass


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def make(mode: str = "auto") -> tuple[Connector, FakeTransport, FakeTransport, Recorder, ClientStats, Clock]:
    ws, http = FakeTransport(TransportKind.WEBSOCKET), FakeTransport(TransportKind.HTTP)
    recorder, stats, clock = Recorder(), ClientStats(), Clock()
    policy = ConnectionPolicy(websocket_drop_limit=2, websocket_retry_after_s=60.0)
    connector = Connector(mode, ws, http, policy, Emitter(recorder.on_event), stats, clock)  # type: ignore[arg-type]
    return connector, ws, http, recorder, stats, clock


async def test_a_refusal_falls_back_and_a_later_probe_returns() -> None:
    connector, ws, http, recorder, stats, clock = make()
    ws.failure = WebSocketRefusedError("refused with 426", 426)
    assert await connector.open() is http
    assert recorder.of(FallbackToHTTP) == [FallbackToHTTP("refused with 426")]
    assert stats.fallbacks == 1

    clock.now = 59.0
    assert await connector.open() is http
    assert ws.connects == 1  # not tried again before the interval

    clock.now = 61.0  # still refused: stay on HTTP without a second fallback event
    assert await connector.open() is http
    assert ws.connects == 2
    assert stats.fallbacks == 1

    clock.now = 130.0
    ws.failure = None
    assert await connector.open() is ws
    assert connector.using is TransportKind.WEBSOCKET
    assert recorder.of(BackToWebSocket) == [BackToWebSocket()]


async def test_a_probe_that_cannot_connect_stays_on_http() -> None:
    connector, ws, http, _, _, clock = make()
    ws.failure = WebSocketRefusedError("blocked")
    await connector.open()
    clock.now = 100.0
    ws.failure = ConnectionLostError("reset")
    assert await connector.open() is http


async def test_repeated_drops_fall_back_and_success_resets_the_count() -> None:
    connector, ws, http, recorder, _, _ = make()
    assert await connector.open() is ws
    connector.dropped(ConnectionLostError("one"))
    connector.succeeded()
    connector.dropped(ConnectionLostError("two"))
    assert connector.using is TransportKind.WEBSOCKET
    connector.dropped(ServerUnreachableError("offline is not the WebSocket's fault"))
    assert connector.using is TransportKind.WEBSOCKET
    connector.dropped(ConnectionLostError("three"))
    assert str(connector.using) == "http"
    assert "dropped 2 times" in recorder.of(FallbackToHTTP)[0].reason
    assert await connector.open() is http


async def test_fixed_modes_never_switch() -> None:
    connector, ws, http, _, _, _ = make("websocket")
    ws.failure = WebSocketRefusedError("refused", 403)
    with pytest.raises(WebSocketRefusedError):
        await connector.open()
    for _ in range(5):
        connector.dropped(ConnectionLostError("drop"))
    assert connector.using is TransportKind.WEBSOCKET

    connector, ws, http, _, _, _ = make("http")
    assert await connector.open() is http
    assert ws.connects == 0
