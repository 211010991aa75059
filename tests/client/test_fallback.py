"""WebSocket mode refused, blocked or dropping: the session goes on over HTTP SSE, and comes back later."""

from __future__ import annotations

import asyncio

import pytest

from tether.client import (
    AsyncSession,
    BackToWebSocket,
    ConnectionPolicy,
    FallbackToHTTP,
    Retrying,
    RetryPolicy,
    TransportKind,
    WebSocketRefusedError,
)
from tether.server.runner import RunningServer

from .support import TEST_TIMEOUT_S, Recorder, UpgradeGate, long_message

RETRY_AFTER_S = 3.0
FAST_RETRY = RetryPolicy(initial_delay_s=0.02, max_delay_s=0.1, max_attempts=10, max_elapsed_s=10.0)


@pytest.mark.parametrize("refusal", [b"403 Forbidden", b"426 Upgrade Required"])
async def test_a_refused_upgrade_falls_back_to_http_then_returns_to_websocket(
    server: RunningServer, refusal: bytes
) -> None:
    recorder = Recorder()
    # The interval is long beside a turn: "still http" must come before it has passed, even when the first turn
    # is slow on a loaded machine (a 0.3 s interval failed in CI when that turn alone took 0.48 s).
    policy = ConnectionPolicy(websocket_retry_after_s=RETRY_AFTER_S)
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        UpgradeGate(server) as gate,
        AsyncSession(
            gate.base_url,
            model="echo",
            connection=policy,
            on_event=recorder.on_event,
            on_request=recorder.on_request,
        ) as session,
    ):
        gate.mode, gate.refusal = "refuse", refusal
        assert (await session.send("over http")).text == "over http"
        assert session.transport is TransportKind.HTTP
        [fallback] = recorder.of(FallbackToHTTP)
        assert refusal[:3].decode() in fallback.reason
        assert session.stats.fallbacks == 1

        gate.mode = "pass"
        assert (await session.send("still http")).text == "still http"  # too early to try again
        assert gate.upgrades == 1
        await asyncio.sleep(RETRY_AFTER_S + 0.05)
        assert (await session.send("back on websocket")).text == "back on websocket"
        assert str(session.transport) == "websocket"  # (str: mypy narrowed the property above)
        assert len(recorder.of(BackToWebSocket)) == 1

    assert [request.transport for request in recorder.requests] == [
        TransportKind.HTTP,
        TransportKind.HTTP,
        TransportKind.WEBSOCKET,
    ]
    # The chain went on across transports: each turn continued from the previous one.
    bodies = recorder.creates()
    assert bodies[1]["previous_response_id"] is not None
    assert bodies[2]["previous_response_id"] is not None


async def test_a_still_refused_probe_stays_on_http_quietly(server: RunningServer) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        UpgradeGate(server) as gate,
        AsyncSession(
            gate.base_url,
            model="echo",
            connection=ConnectionPolicy(websocket_retry_after_s=0.05),
            on_event=recorder.on_event,
        ) as session,
    ):
        gate.mode = "refuse"
        await session.send("one")
        await asyncio.sleep(0.1)
        await session.send("two")
        assert gate.upgrades == 2
        assert session.transport is TransportKind.HTTP
    assert session.stats.fallbacks == 1
    assert not recorder.of(BackToWebSocket)


async def test_a_handshake_that_never_answers_falls_back_after_the_connect_timeout(server: RunningServer) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        UpgradeGate(server) as gate,
        AsyncSession(
            gate.base_url,
            model="echo",
            connection=ConnectionPolicy(connect_timeout_s=0.3),
            on_event=recorder.on_event,
        ) as session,
    ):
        gate.mode = "ignore"
        assert (await session.send("blocked")).text == "blocked"
    [fallback] = recorder.of(FallbackToHTTP)
    assert "timed out" in fallback.reason


async def test_a_websocket_that_keeps_dropping_gives_way_to_http(slow_server: RunningServer) -> None:
    message = long_message(200)
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        UpgradeGate(slow_server) as gate,
        AsyncSession(
            gate.base_url,
            model="echo",
            retry=FAST_RETRY,
            connection=ConnectionPolicy(websocket_drop_limit=3),
            on_event=recorder.on_event,
        ) as session,
    ):
        gate.drop_upgrades_after = 600  # every WebSocket dies a few events into the answer
        result = await session.send(message)

    assert result.text == message
    [fallback] = recorder.of(FallbackToHTTP)
    assert "dropped 3 times" in fallback.reason
    assert session.transport is TransportKind.HTTP
    assert session.stats.retries >= 3


async def test_a_handshake_without_an_answer_is_a_drop_not_a_refusal(server: RunningServer) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        UpgradeGate(server) as gate,
        AsyncSession(
            gate.base_url,
            model="echo",
            retry=FAST_RETRY,
            connection=ConnectionPolicy(websocket_drop_limit=2),
            on_event=recorder.on_event,
        ) as session,
    ):
        gate.mode = "hang_up"  # a proxy whose upstream is restarting: TCP accepted, then closed
        assert (await session.send("first")).text == "first"
        [fallback] = recorder.of(FallbackToHTTP)
        assert "dropped 2 times" in fallback.reason
        assert len(recorder.of(Retrying)) == 2


async def test_websocket_only_mode_raises_instead_of_falling_back(server: RunningServer) -> None:
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        UpgradeGate(server) as gate,
        AsyncSession(gate.base_url, model="echo", transport="websocket") as session,
    ):
        gate.mode = "refuse"
        with pytest.raises(WebSocketRefusedError) as refused:
            await session.send("nope")
        assert refused.value.status == 403
        assert session.pending is not None  # nothing was sent; recover() can send it later
        gate.mode = "pass"
        recovered = await session.recover()
        assert recovered is not None
        assert recovered.text == "nope"
