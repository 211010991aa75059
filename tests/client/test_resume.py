"""Drops mid-response, drops before ``response.created``, and heals, through a real proxy that cuts connections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import httpx2 as httpx
import pytest

from tether.client import (
    AsyncSession,
    Delta,
    Disconnected,
    Healed,
    Resumed,
    Retrying,
    RetryPolicy,
    TextDelta,
    TurnReset,
    TurnStream,
)
from tether.netem.proxy import ShapingProxy
from tether.server.runner import RunningServer

from .support import (
    MODEL,
    TEST_TIMEOUT_S,
    TOOL_SUMMARY,
    WEATHER_TOOL,
    Recorder,
    assert_no_extensions,
    long_message,
    proxy_url,
    stored_response_count,
    stored_text,
    text_of,
)

FAST_RETRY = RetryPolicy(initial_delay_s=0.02, max_delay_s=0.1, max_attempts=10, max_elapsed_s=10.0)
CUT_AT_DELTA = 40  # of about 150 text deltas: the cut lands mid-answer, with more events in flight


@pytest.mark.parametrize("transport", ["websocket", "http"])
async def test_a_cut_mid_response_resumes_without_loss_or_duplicates(
    slow_server: RunningServer, proxy: ShapingProxy, tmp_path: Path, transport: str
) -> None:
    message = long_message()
    recorder = Recorder()
    deltas: list[Delta] = []
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            proxy_url(proxy),
            model="echo",
            transport="websocket" if transport == "websocket" else "http",
            retry=FAST_RETRY,
            seed=7,
            on_event=recorder.on_event,
        ) as session,
    ):
        async with session.stream(message) as turn:
            async for delta in turn:
                deltas.append(delta)
                if len(deltas) == CUT_AT_DELTA:
                    proxy.cut("rst")
        result = turn.result

    texts = [delta for delta in deltas if isinstance(delta, TextDelta)]
    assert "".join(delta.text for delta in texts) == message  # nothing lost, nothing twice
    numbers = [delta.sequence_number for delta in texts]
    assert numbers == sorted(set(numbers))
    assert not any(isinstance(delta, TurnReset) for delta in deltas)
    assert result.text == message
    [resumed] = recorder.of(Resumed)
    assert resumed.response_id == result.response_id
    assert 0 < resumed.after < numbers[-1]
    assert recorder.of(Disconnected)
    assert recorder.of(Retrying)
    assert session.stats.resumes == 1
    assert session.stats.reconnects == 1
    # One generation: the server stored one response, with the text the caller saw.
    assert stored_response_count(tmp_path / "tether.db") == 1
    assert await stored_text(slow_server, result.response_id) == message


@pytest.mark.parametrize("transport", ["websocket", "http"])
async def test_a_cut_before_response_created_replays_by_idempotency_key(
    slow_server: RunningServer, proxy: ShapingProxy, tmp_path: Path, transport: str
) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            proxy_url(proxy),
            model="echo",
            transport="websocket" if transport == "websocket" else "http",
            retry=FAST_RETRY,
            on_event=recorder.on_event,
            on_request=recorder.on_request,
        ) as session,
    ):
        await session.send("warm up the connection")
        proxy.cut_after_bytes("down", 1, "rst")  # the request arrives; one byte of the answer does
        result = await session.send("the second turn")

    assert result.text == "the second turn"
    first, *retries = recorder.creates()[1:]
    assert retries
    assert all(body == first for body in retries)
    assert not recorder.of(Resumed)  # the response id was never seen: the retry was a create, answered from log
    assert stored_response_count(tmp_path / "tether.db") == 2  # two turns, two generations, not three


@pytest.mark.parametrize("store", [False, True])
async def test_previous_response_not_found_is_healed_from_the_journal(
    slow_server: RunningServer, proxy: ShapingProxy, store: bool
) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            proxy_url(proxy),
            model=MODEL,
            tools=[WEATHER_TOOL],
            store=store,
            transport="websocket",
            retry=FAST_RETRY,
            on_event=recorder.on_event,
            on_request=recorder.on_request,
        ) as session,
    ):
        call = (await session.send("What's the weather in Paris?")).function_calls[0]
        if store:  # a stored parent that is gone: deleted on the server
            await _delete(slow_server, session.last_response_id)
        proxy.cut("rst")  # store=false state dies with the connection
        result = await session.send([call.output("18C clear")])

    # The server checks every function_call_output against a function_call in the context: this answer proves the
    # healed request carried the whole conversation.
    assert result.text == TOOL_SUMMARY
    assert result.healed
    assert session.stats.heals == 1
    [healed] = recorder.of(Healed)
    assert healed.items_resent == 3
    # The first send may go into the dying socket and be sent again: every delta request is the same one.
    *refused, healing = recorder.creates()[1:]
    assert refused
    assert all(body == refused[0] for body in refused)
    assert refused[0]["previous_response_id"] is not None
    assert len(refused[0]["input"]) == 1
    assert "previous_response_id" not in healing
    assert [item["type"] for item in healing["input"]] == ["message", "function_call", "function_call_output"]
    assert healing["tether:idempotency_key"] == refused[0]["tether:idempotency_key"]


async def test_store_false_over_http_always_sends_the_whole_context(slow_server: RunningServer) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            slow_server.base_url, model="echo", store=False, transport="http", on_request=recorder.on_request
        ) as session,
    ):
        for text in ("one", "two", "three"):
            assert (await session.send(text)).text == text
    assert [len(body["input"]) for body in recorder.creates()] == [1, 3, 5]
    assert all("previous_response_id" not in body for body in recorder.creates())
    assert session.stats.heals == 0


async def test_without_extensions_a_dropped_turn_is_sent_again_and_reset(
    slow_server: RunningServer, proxy: ShapingProxy, tmp_path: Path
) -> None:
    # No tether fields and no resume: over WebSocket the retry is a second generation, announced by a TurnReset.
    message = long_message()
    recorder = Recorder()
    deltas, turn = await _cut_without_extensions(proxy, "websocket", message, recorder)

    resets = [delta for delta in deltas if isinstance(delta, TurnReset)]
    assert len(resets) == 1
    assert resets[0].response_id == turn.result.response_id
    assert text_of(deltas) == message == turn.result.text
    assert not recorder.of(Resumed)
    for request in recorder.requests:
        assert_no_extensions(request.body)
        assert "tether" not in request.url
    assert stored_response_count(tmp_path / "tether.db") == 2  # the documented cost of running without extensions


async def test_without_extensions_http_retries_reuse_the_idempotency_header(
    slow_server: RunningServer, proxy: ShapingProxy, tmp_path: Path
) -> None:
    message = long_message()
    recorder = Recorder()
    deltas, _ = await _cut_without_extensions(proxy, "http", message, recorder)

    # tether honours the standard Idempotency-Key header: the retry replays the original, already-seen events skipped.
    assert not any(isinstance(delta, TurnReset) for delta in deltas)
    assert "".join(delta.text for delta in deltas if isinstance(delta, TextDelta)) == message
    assert len(recorder.creates()) == 2
    for request in recorder.requests:
        assert_no_extensions(request.body)
    assert stored_response_count(tmp_path / "tether.db") == 1


async def _cut_without_extensions(
    proxy: ShapingProxy, transport: Literal["websocket", "http"], message: str, recorder: Recorder
) -> tuple[list[Delta], TurnStream]:
    """Stream one turn with tether's extensions off, resetting the connection after ``CUT_AT_DELTA`` deltas."""
    deltas: list[Delta] = []
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            proxy_url(proxy),
            model="echo",
            extensions=False,
            transport=transport,
            retry=FAST_RETRY,
            on_event=recorder.on_event,
            on_request=recorder.on_request,
        ) as session,
        session.stream(message) as turn,
    ):
        async for delta in turn:
            deltas.append(delta)
            if len(deltas) == CUT_AT_DELTA:
                proxy.cut("rst")
    return deltas, turn


async def _delete(server: RunningServer, response_id: str | None) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:
        answer = await client.delete(f"{server.base_url}/responses/{response_id}")
    assert answer.status_code == 200, answer.text


async def test_without_extensions_heals_still_work(slow_server: RunningServer, proxy: ShapingProxy) -> None:
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            proxy_url(proxy),
            model=MODEL,
            tools=[WEATHER_TOOL],
            store=False,
            extensions=False,
            transport="websocket",
            retry=FAST_RETRY,
            on_request=recorder.on_request,
        ) as session,
    ):
        call = (await session.send("What's the weather in Paris?")).function_calls[0]
        proxy.cut("rst")
        result = await session.send([call.output("18C clear")])
    assert result.text == TOOL_SUMMARY
    assert session.stats.heals == 1
    for request in recorder.requests:
        assert_no_extensions(request.body)
