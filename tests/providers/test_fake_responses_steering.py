"""The fake Responses upstream steers as the real API does, over a real WebSocket (``websockets`` as the client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tether.providers.fakes.openai_responses import FakeResponsesUpstream
from tether.types import JSONObject

LONG = " ".join(f"word{n}" for n in range(60))  # echoed 2 characters a delta, 20 ms apart: about 4 s of stream
TOOL_LOOP: list[dict[str, Any]] = [  # the call's arguments stream for about 4 s
    {"tool_calls": [{"name": "lookup", "arguments": {"q": "x" * 400}}]},
    {"text": "Looked it up."},
]


@pytest.fixture
def fake() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream(chunk_size=2, event_delay_s=0.02) as upstream:
        yield upstream


@pytest.fixture
async def ws(fake: FakeResponsesUpstream) -> AsyncIterator[ClientConnection]:
    async with connect(fake.ws_url) as socket:
        yield socket


async def send(ws: ClientConnection, event: JSONObject) -> None:
    await ws.send(orjson.dumps(event).decode())


async def receive(ws: ClientConnection) -> JSONObject:
    event: JSONObject = orjson.loads(await ws.recv())
    return event


async def until(ws: ClientConnection, kind: str) -> tuple[list[JSONObject], JSONObject]:
    """The events before the first of type ``kind``, and that one."""
    seen: list[JSONObject] = []
    while True:
        event = await receive(ws)
        if event["type"] == kind:
            return seen, event
        seen.append(event)


async def create(ws: ClientConnection, **fields: Any) -> str:
    await send(ws, {"type": "response.create", "model": "gpt-6", **fields})
    _, created = await until(ws, "response.created")
    response_id: str = created["response"]["id"]
    return response_id


async def test_a_steer_ends_the_response_as_steered_and_a_successor_continues_it(
    fake: FakeResponsesUpstream, ws: ClientConnection
) -> None:
    target = await create(ws, input=LONG)
    await send(ws, {"type": "response.steer", "previous_response_id": target, "input": "stop and summarise"})
    _, accepted = await until(ws, "response.steer.accepted")
    assert accepted["steer"]["previous_response_id"] == target
    assert accepted["steer"]["id"].startswith("steer_up_")
    _, incomplete = await until(ws, "response.incomplete")
    assert incomplete["response"]["incomplete_details"] == {"reason": "steered"}
    spoken = incomplete["response"]["output"][0]["content"][0]["text"]
    assert LONG.startswith(spoken)
    assert 0 < len(spoken) < len(LONG)  # cut between two deltas
    successor = await receive(ws)
    assert successor["type"] == "response.created"
    assert successor["response"]["previous_response_id"] == target
    assert successor["response"]["model"] == "gpt-6"  # the steered response's settings
    _, completed = await until(ws, "response.completed")
    assert completed["response"]["output"][0]["content"][0]["text"] == "stop and summarise"
    context = fake.context_of(successor["response"]["id"])
    assert context is not None
    assert context[-2] == {"type": "message", "role": "user", "content": "stop and summarise"}
    assert [steer.body["previous_response_id"] for steer in fake.steers] == [target]


async def test_steering_after_the_last_delta_completes_then_starts_the_successor(ws: ClientConnection) -> None:
    with FakeResponsesUpstream(chunk_size=50, event_delay_s=2.0) as slow:  # one delta, then a pause
        async with connect(slow.ws_url) as socket:
            target = await create(socket, input="short")
            await until(socket, "response.output_text.delta")
            await send(socket, {"type": "response.steer", "previous_response_id": target, "input": "more"})
            events, completed = await until(socket, "response.completed")
            assert "response.steer.accepted" in [event["type"] for event in events]
            assert completed["response"]["id"] == target
            successor = await receive(socket)
            assert successor["type"] == "response.created"
            assert successor["response"]["previous_response_id"] == target


async def test_a_response_that_stops_for_tool_output_keeps_the_steer_pending() -> None:
    with FakeResponsesUpstream(TOOL_LOOP, chunk_size=2, event_delay_s=0.02) as fake:
        async with connect(fake.ws_url) as ws:
            target = await create(ws, input="look it up")
            await send(ws, {"type": "response.steer", "previous_response_id": target, "input": "then stop"})
            _, completed = await until(ws, "response.completed")
            call = completed["response"]["output"][-1]
            assert call["type"] == "function_call"
            pending = await receive(ws)
            assert pending["type"] == "response.steer.pending"
            assert pending["reason"] == "waiting_for_required_input"
            assert pending["required_input"] == [
                {"type": "function_call_output", "call_id": call["call_id"], "name": "lookup"}
            ]
            output = {"type": "function_call_output", "call_id": call["call_id"], "output": "42"}
            continued = await create(ws, previous_response_id=target, input=[output])
            await until(ws, "response.completed")
            context = fake.context_of(continued)
            assert context is not None
            steer = {"type": "message", "role": "user", "content": "then stop"}
            assert context[-3:-1] == [steer, output]  # prepended to the explicit continuation's input


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"previous_response_id": "resp_x", "input": "x", "stream_id": "a"}, "invalid_input"),
        ({"previous_response_id": "resp_x", "input": [{"role": "assistant", "content": "x"}]}, "invalid_input"),
        ({"previous_response_id": "resp_x", "input": ""}, "invalid_input"),
        ({"previous_response_id": "resp_unknown", "input": "x"}, "response_not_found"),
    ],
)
async def test_what_the_api_refuses_is_failed_without_an_id(ws: ClientConnection, event: JSONObject, code: str) -> None:
    await send(ws, {"type": "response.steer", **event})
    failed = await receive(ws)
    assert failed["type"] == "response.steer.failed"
    assert failed["error"]["code"] == code
    assert failed["error"]["type"] == "invalid_request_error"
    assert "id" not in failed["steer"]
    assert failed["steer"]["input"] == event["input"]


async def test_a_completed_response_no_longer_takes_steering(ws: ClientConnection) -> None:
    target = await create(ws, input="hi")
    await until(ws, "response.completed")
    await send(ws, {"type": "response.steer", "previous_response_id": target, "input": "x"})
    failed = await receive(ws)
    assert failed["error"]["code"] == "response_already_completed"


async def test_a_model_without_steering_refuses_it_and_the_response_goes_on() -> None:
    with FakeResponsesUpstream(chunk_size=2, event_delay_s=0.01, steering="unsupported") as fake:
        async with connect(fake.ws_url) as ws:
            target = await create(ws, input=LONG)
            await send(ws, {"type": "response.steer", "previous_response_id": target, "input": "x"})
            events, completed = await until(ws, "response.completed")
            failed = [event for event in events if event["type"] == "response.steer.failed"]
            assert [event["error"]["code"] for event in failed] == ["steering_not_supported"]
            assert completed["response"]["output"][0]["content"][0]["text"] == LONG


async def test_an_upstream_that_does_not_know_the_event_answers_an_error() -> None:
    with FakeResponsesUpstream(chunk_size=2, event_delay_s=0.01, steering="unknown_event") as fake:
        async with connect(fake.ws_url) as ws:
            target = await create(ws, input=LONG)
            await send(ws, {"type": "response.steer", "previous_response_id": target, "input": "x"})
            events, completed = await until(ws, "response.completed")
            errors = [event for event in events if event["type"] == "error"]
            assert [error["error"]["code"] for error in errors] == ["invalid_event_type"]
            assert "sequence_number" not in errors[0]  # an answer to the event, not part of the response's stream
            assert completed["response"]["status"] == "completed"


async def test_a_successor_that_cannot_be_created_returns_the_input_with_its_id() -> None:
    with FakeResponsesUpstream(chunk_size=2, event_delay_s=0.02, fail_successors=True) as fake:
        async with connect(fake.ws_url) as ws:
            target = await create(ws, input=LONG)
            await send(ws, {"type": "response.steer", "previous_response_id": target, "input": "x"})
            _, accepted = await until(ws, "response.steer.accepted")
            _, incomplete = await until(ws, "response.incomplete")
            assert incomplete["response"]["incomplete_details"] == {"reason": "steered"}
            failed = await receive(ws)
            assert failed["type"] == "response.steer.failed"
            assert failed["error"]["code"] == "successor_creation_failed"
            assert failed["steer"] == {"id": accepted["steer"]["id"], "input": "x", "previous_response_id": target}
