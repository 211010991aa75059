"""Offline periods: bounded, visible retries, then the turn completes, or gives up clearly and stays recoverable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tether.client import (
    AsyncSession,
    Connected,
    ConnectionPolicy,
    GaveUp,
    Offline,
    RetryExhaustedError,
    Retrying,
    RetryPolicy,
)
from tether.netem.proxy import ShapingProxy
from tether.server.runner import RunningServer

from .support import TEST_TIMEOUT_S, Recorder, stored_response_count


@pytest.mark.parametrize("transport", ["auto", "http"])
async def test_the_session_waits_through_an_offline_period(
    server: RunningServer, tmp_path: Path, transport: str
) -> None:
    recorder = Recorder()
    retry = RetryPolicy(initial_delay_s=0.05, max_delay_s=0.2, max_attempts=50, max_elapsed_s=10.0)
    proxy = ShapingProxy(server.host, server.port)
    await proxy.start()
    port = proxy.port
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with AsyncSession(
            f"http://127.0.0.1:{port}/v1",
            model="echo",
            transport="auto" if transport == "auto" else "http",
            retry=retry,
            seed=3,
            on_event=recorder.on_event,
        ) as session:
            assert (await session.send("before")).text == "before"
            await proxy.aclose()  # the link goes down: connections refused

            async def come_back() -> ShapingProxy:
                await asyncio.sleep(1.0)
                back = ShapingProxy(server.host, server.port, port=port)
                await back.start()
                return back

            returning = asyncio.create_task(come_back())
            result = await session.send("while offline")
            proxy = await returning
            assert result.text == "while offline"
        await proxy.aclose()

    offline = recorder.of(Offline)
    retrying = recorder.of(Retrying)
    assert len(offline) == 1  # shown once per offline period, with retries below it
    assert len(retrying) >= 3
    assert [event.attempt for event in retrying] == list(range(1, len(retrying) + 1))
    assert all(0 < event.delay_s <= retry.max_delay_s for event in retrying)
    assert recorder.events.index(offline[0]) < recorder.events.index(retrying[0])
    assert recorder.of(Connected)[-1].reconnect
    assert session.stats.reconnects >= 1
    assert session.stats.retries == len(retrying)
    assert stored_response_count(tmp_path / "tether.db") == 2


async def test_a_turn_gives_up_after_the_bound_and_can_be_recovered(server: RunningServer, tmp_path: Path) -> None:
    recorder = Recorder()
    retry = RetryPolicy(initial_delay_s=0.02, max_delay_s=0.05, max_attempts=4, max_elapsed_s=5.0)
    proxy = ShapingProxy(server.host, server.port)
    await proxy.start()
    port = proxy.port
    await proxy.aclose()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            f"http://127.0.0.1:{port}/v1",
            model="echo",
            retry=retry,
            journal=tmp_path / "journal.db",
            on_event=recorder.on_event,
        ) as session,
    ):
        with pytest.raises(RetryExhaustedError) as exhausted:
            await session.send("are you there?")
        assert exhausted.value.attempts == 4
        assert "cannot connect" in exhausted.value.reason
        [gave_up] = recorder.of(GaveUp)
        assert gave_up.attempts == 4
        assert len(recorder.of(Retrying)) == 4
        assert session.pending is not None

        async with ShapingProxy(server.host, server.port, port=port):
            result = await session.recover()
        assert result is not None
        assert result.text == "are you there?"
        assert session.pending is None


async def test_the_elapsed_bound_stops_retrying(server: RunningServer) -> None:
    retry = RetryPolicy(initial_delay_s=0.1, max_delay_s=0.1, jitter=0.0, max_attempts=100, max_elapsed_s=0.35)
    proxy = ShapingProxy(server.host, server.port)
    await proxy.start()
    port = proxy.port
    await proxy.aclose()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(f"http://127.0.0.1:{port}/v1", model="echo", transport="http", retry=retry) as session,
    ):
        with pytest.raises(RetryExhaustedError) as exhausted:
            await session.send("hello?")
    # It stopped because the next 0.1 s wait would have passed the 0.35 s bound, not at max_attempts (100). How many
    # attempts fit depends on how long each refused connect takes on a loaded machine (3 when they are instant).
    assert 1 <= exhausted.value.attempts <= 3
    assert exhausted.value.elapsed_s + 0.1 > 0.35


async def test_a_websocket_only_session_waits_through_a_silent_outage(server: RunningServer) -> None:
    # A dead route gives no HTTP answer, only handshake timeouts: with no HTTP to fall back to, they are retried.
    async with ShapingProxy(server.host, server.port, "loopback", seed=3) as proxy:
        recorder = Recorder()
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            AsyncSession(
                f"http://127.0.0.1:{proxy.port}/v1",
                model="echo",
                transport="websocket",
                connection=ConnectionPolicy(connect_timeout_s=0.5, read_timeout_s=0.5),
                retry=RetryPolicy(max_attempts=30, max_elapsed_s=30.0),
                on_event=recorder.on_event,
            ) as session,
        ):
            assert (await session.send("before")).text == "before"
            proxy.cut("blackhole")
            asyncio.get_running_loop().call_later(3.0, proxy.restore)
            assert (await session.send("after")).text == "after"
    assert session.stats.retries >= 2
    assert recorder.of(Retrying)
