"""Connection life on the server side: a restart mid-response (close code 1012), connection-age rotation."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

from tether.client import (
    AsyncSession,
    Delta,
    Disconnected,
    Resumed,
    RetryPolicy,
    TextDelta,
    TransportKind,
    TurnReset,
)
from tether.netem.proxy import ShapingProxy
from tether.server.runner import serve_in_thread
from tether.settings import ScriptedSettings, Settings

from .support import SLOW, TEST_TIMEOUT_S, Recorder, ServerFactory, long_message, stored_response_count


async def test_a_server_restart_mid_response_loses_nothing(tmp_path: Path) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'tether.db'}",
        log_level="warning",
        scripted=ScriptedSettings(ttft_s=SLOW["ttft_s"], tokens_per_second=SLOW["tokens_per_second"]),
    )
    message = long_message()
    recorder = Recorder()
    deltas: list[Delta] = []
    retry = RetryPolicy(initial_delay_s=0.05, max_delay_s=0.2, max_attempts=100, max_elapsed_s=15.0)
    with ExitStack() as first_server:
        first = first_server.enter_context(serve_in_thread(settings))
        proxy = ShapingProxy(first.host, first.port)
        await proxy.start()
        port = proxy.port
        async with asyncio.timeout(TEST_TIMEOUT_S):
            session = AsyncSession(f"http://127.0.0.1:{port}/v1", model="echo", retry=retry, on_event=recorder.on_event)
            async with session, session.stream(message) as turn:
                async for delta in turn:
                    deltas.append(delta)
                    if len(deltas) == 30:
                        # Graceful shutdown: sockets closed with 1012, the in-flight response finishes and is
                        # stored; then the same database serves again behind the same address.
                        await asyncio.to_thread(first_server.close)
                        await proxy.aclose()
                        second = first_server.enter_context(serve_in_thread(settings))
                        proxy = ShapingProxy(second.host, second.port, port=port)
                        await proxy.start()
        await proxy.aclose()

    assert "".join(delta.text for delta in deltas if isinstance(delta, TextDelta)) == message
    assert not any(isinstance(delta, TurnReset) for delta in deltas)
    assert turn.result.text == message
    assert any("1012" in event.reason for event in recorder.of(Disconnected))
    assert [event.response_id for event in recorder.of(Resumed)] == [turn.result.response_id]
    assert stored_response_count(tmp_path / "tether.db") == 1


async def test_connection_age_rotation_is_transparent(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW, websocket={"max_connection_age_s": 0.3})
    message = long_message(100)
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(server.base_url, model="echo", on_event=recorder.on_event, on_request=recorder.on_request) as s,
    ):
        first = await s.send(message)  # outlives the age limit: the server lets it finish
        await asyncio.sleep(0.5)  # then says websocket_connection_limit_reached and closes
        second = await s.send("after rotation")
    assert first.text == message
    assert second.text == "after rotation"
    assert s.stats.reconnects == 1
    assert s.stats.heals == 0  # store=true: the new connection finds the previous response
    assert s.transport is TransportKind.WEBSOCKET
    assert recorder.creates()[-1]["previous_response_id"] == first.response_id
