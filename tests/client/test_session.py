"""AsyncSession against real tether servers: tool loops, delta-only turns, the journal across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tether.client import (
    APIError,
    AsyncSession,
    FunctionCall,
    PendingTurnError,
    SentRequest,
    Session,
    TextDelta,
    TransportKind,
)
from tether.netem.proxy import ShapingProxy
from tether.server.runner import RunningServer

from .support import (
    MODEL,
    TEST_TIMEOUT_S,
    TOOL_SUMMARY,
    WEATHER_TOOL,
    Recorder,
    ServerFactory,
    long_message,
    proxy_url,
)


@pytest.mark.parametrize("transport", ["websocket", "http"])
async def test_tool_loop_sends_only_new_items(make_server: ServerFactory, transport: str) -> None:
    server = make_server()
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            server.base_url,
            model=MODEL,
            tools=[WEATHER_TOOL],
            transport="websocket" if transport == "websocket" else "http",
            on_event=recorder.on_event,
            on_request=recorder.on_request,
        ) as session,
    ):
        first = await session.send("What's the weather in Paris?")
        [call] = first.function_calls
        assert call.name == "get_weather"
        assert call.parsed_arguments() == {"location": "Paris"}

        deltas = [delta async for delta in session.stream([call.output("18C clear")])]
        second = session.last_response_id
        assert "".join(delta.text for delta in deltas if isinstance(delta, TextDelta)) == TOOL_SUMMARY

        third = await session.send("Thanks! And in Rome?")
        assert [c.name for c in third.function_calls] == ["get_weather"]

    bodies = recorder.creates()
    assert [body.get("previous_response_id") for body in bodies] == [None, first.response_id, second]
    assert [len(body["input"]) for body in bodies] == [1, 1, 1]  # only the new items after turn 1
    assert bodies[1]["input"] == [{"type": "function_call_output", "call_id": call.call_id, "output": "18C clear"}]
    assert all(body["tether:idempotency_key"] for body in bodies)
    assert len({body["tether:idempotency_key"] for body in bodies}) == 3
    assert session.stats.turns == 3
    assert session.stats.bytes_sent == sum(request.size for request in recorder.requests)
    assert session.stats.bytes_received > session.stats.bytes_sent
    assert session.transport is TransportKind(transport)
    assert {request.transport for request in recorder.requests} == {TransportKind(transport)}


async def test_requests_stay_small_as_the_conversation_grows(make_server: ServerFactory) -> None:
    server = make_server()
    sizes: list[int] = []

    def record(request: SentRequest) -> None:
        sizes.append(request.size)

    async with asyncio.timeout(TEST_TIMEOUT_S), AsyncSession(server.base_url, model="echo", on_request=record) as s:
        for turn in range(8):
            result = await s.send(f"message {turn} " + "x" * 200)
            assert result.text.startswith(f"message {turn} ")
        assert len(await s.context()) == 16
    assert max(sizes) - min(sizes) < 100  # turn 8 costs what turn 1 did


async def test_the_journal_continues_a_conversation_after_a_restart(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server()
    journal = tmp_path / "agent.journal"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with AsyncSession(
            server.base_url, model=MODEL, tools=[WEATHER_TOOL], journal=journal, session_id="task-7"
        ) as first:
            call = (await first.send("What's the weather in Oslo?")).function_calls[0]
            head = first.last_response_id

        recorder = Recorder()  # a new process: nothing but the journal file and the session id
        async with AsyncSession(
            server.base_url, journal=journal, session_id="task-7", on_request=recorder.on_request
        ) as second:
            assert second.last_response_id == head
            assert second.pending is None
            result = await second.send([call.output("18C clear")])
            assert result.text == TOOL_SUMMARY
            history = await second.history()

    [body] = recorder.creates()
    assert body["previous_response_id"] == head
    assert body["model"] == MODEL
    assert body["tools"] == [WEATHER_TOOL]  # the configuration came from the journal
    assert len(body["input"]) == 1
    assert [(item.turn, item.role) for item in history] == [(1, "input"), (1, "output"), (2, "input"), (2, "output")]
    assert history[1].item["call_id"] == call.call_id
    assert {item.response_id for item in history if item.turn == 2} == {result.response_id}


async def test_a_refused_turn_is_marked_failed_and_leaves_the_context(make_server: ServerFactory) -> None:
    server = make_server()
    async with asyncio.timeout(TEST_TIMEOUT_S), AsyncSession(server.base_url, model=MODEL) as session:
        await session.send("hello")
        with pytest.raises(APIError) as refused:
            await session.send([{"type": "function_call_output", "call_id": "call_nope", "output": "x"}])
        assert refused.value.code == "function_call_not_found"
        assert refused.value.param == "input[0].call_id"
        assert session.pending is None
        context = await session.context()
        assert [item["type"] for item in context] == ["message", "message"]
        assert (await session.send("still here?")).status == "completed"


async def test_an_abandoned_stream_stays_pending_until_recovered(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(scripted={"ttft_s": 0.0, "tokens_per_second": 2000.0})
    message = long_message(150)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with AsyncSession(server.base_url, model="echo", journal=tmp_path / "j.db") as session:
            async with session.stream(message) as turn:
                async for delta in turn:
                    if isinstance(delta, TextDelta):
                        break  # the agent stops reading midway
            pending = session.pending
            assert pending is not None
            assert pending.response_id is not None
            with pytest.raises(PendingTurnError):
                await session.send("next")
            with pytest.raises(RuntimeError):
                _ = turn.result
            # The socket still carries the abandoned response's tail: the next request reads past it.
            recovered = await session.recover()
            assert recovered is not None
            assert recovered.response_id == pending.response_id
            assert recovered.text == message
            assert session.pending is None
            assert (await session.send("next")).text == "next"
            assert await session.recover() is None


async def test_discarding_a_pending_turn_forks_from_the_last_finished_one(make_server: ServerFactory) -> None:
    server = make_server(scripted={"ttft_s": 0.0, "tokens_per_second": 2000.0})
    async with asyncio.timeout(TEST_TIMEOUT_S), AsyncSession(server.base_url, model="echo") as session:
        first = await session.send("one")
        async with session.stream(long_message(100)) as turn:
            await anext(turn)
        await session.discard_pending()
        assert session.pending is None
        assert session.last_response_id == first.response_id
        second = await session.send("two")
        assert second.response.get("previous_response_id") == first.response_id
        assert [item["content"] for item in await session.context() if item.get("role") == "user"] == ["one", "two"]


async def test_function_calls_are_delivered_once_as_whole_items(make_server: ServerFactory) -> None:
    server = make_server()
    async with asyncio.timeout(TEST_TIMEOUT_S), AsyncSession(server.base_url, model=MODEL, tools=[WEATHER_TOOL]) as s:
        deltas = [delta async for delta in s.stream("Weather in Lima?")]
    calls = [delta for delta in deltas if isinstance(delta, FunctionCall)]
    assert len(calls) == 1
    assert calls[0].item["type"] == "function_call"
    assert calls[0].parsed_arguments() == {"location": "Lima"}


def test_sync_session_runs_turns_without_an_event_loop(server: RunningServer, tmp_path: Path) -> None:
    with Session(server.base_url, model="echo", journal=tmp_path / "sync.db") as session:
        assert session.send("hello sync").text == "hello sync"
        turn = session.stream("streamed sync")
        text = "".join(delta.text for delta in turn if isinstance(delta, TextDelta))
        assert text == "streamed sync"
        assert turn.result.text == text
        assert session.stats.turns == 2
        assert session.pending is None
        assert len(session.history()) == 4
        assert session.last_response_id == turn.result.response_id
    session.close()  # closing twice is harmless


async def test_a_session_needs_a_model(server: RunningServer) -> None:
    with pytest.raises(ValueError, match="no model"):
        async with AsyncSession(server.base_url):
            pass
    with pytest.raises(ValueError, match="transport"):
        AsyncSession(server.base_url, model=MODEL, transport="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        AsyncSession(server.base_url, model=MODEL).stream([{"type": "message", "role": "robot", "content": "x"}])


@pytest.mark.parametrize("transport", ["websocket", "http"])
async def test_turns_share_one_connection(proxy: ShapingProxy, transport: str) -> None:
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            proxy_url(proxy), model="echo", transport="websocket" if transport == "websocket" else "http"
        ) as session,
    ):
        for text in ("one", "two", "three"):
            assert (await session.send(text)).text == text
    assert proxy.stats.connections_opened == 1  # no handshake per turn on a slow link


async def test_instructions_and_tools_cross_the_link_once_per_chain(make_server: ServerFactory) -> None:
    server = make_server()
    recorder = Recorder()
    instructions = "You are a careful agent. " * 200
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(server.base_url, model=MODEL, tools=[WEATHER_TOOL], instructions=instructions,
                     on_request=recorder.on_request) as session,
    ):  # fmt: skip
        first = await session.send("What's the weather in Paris?")
        second = await session.send([first.function_calls[0].output("18C clear")])
        third = await session.send("And in Rome?")
    bodies = recorder.creates()
    assert bodies[0]["instructions"] == instructions
    assert bodies[0]["tools"] == [WEATHER_TOOL]
    for body in bodies[1:]:
        assert "instructions" not in body
        assert "tools" not in body
        assert body["tether:inherit_params"] is True
    # the server still applies them: the model kept calling the tool, and the responses echo the instructions
    assert [c.name for c in third.function_calls] == ["get_weather"]
    assert second.response["instructions"] == instructions


async def test_without_extensions_every_turn_sends_its_parameters(make_server: ServerFactory) -> None:
    server = make_server()
    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(server.base_url, model=MODEL, tools=[WEATHER_TOOL], instructions="Be brief.",
                     extensions=False, on_request=recorder.on_request) as session,
    ):  # fmt: skip
        first = await session.send("What's the weather in Paris?")
        await session.send([first.function_calls[0].output("18C clear")])
    bodies = recorder.creates()
    assert all(body["instructions"] == "Be brief." and body["tools"] == [WEATHER_TOOL] for body in bodies)
    assert not any(key.startswith("tether:") for body in bodies for key in body)
