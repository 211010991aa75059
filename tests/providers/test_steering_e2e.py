"""``response.steer`` through a real tether server to the fake Responses upstream over WebSocket, with the official
``openai`` SDK (``client.responses.connect()`` → ``connection.response.steer(...)``).

A steer reaches the upstream under the upstream's response id; its acknowledgement comes back with tether's ids on
the steered response's lane; the steered response ends ``incomplete`` (``steered``) and its successor runs as a turn
of tether's own, stored and continuable (after a restart too). Where steering cannot be relayed the client gets
``response.steer.failed`` with the code that says why, and the connection goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from openai import AsyncOpenAI
from openai.resources.responses.responses import AsyncResponsesConnection
from steering_support import LONG, created, events_until, is_terminal

from tether.audit.log import AuditLog
from tether.providers.fakes.openai_responses import FakeResponsesUpstream
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings

# A call whose arguments stream for about 4 s (2 characters a delta), so the steer reaches it before it completes.
TOOL_STEP: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "lookup", "arguments": {"q": "x" * 400}}]},
    {"text": "Found."},
]
TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}, "strict": False}


def settings(fake: FakeResponsesUpstream, tmp_path: Path, **up: Any) -> Settings:
    """up-* over WebSocket (its provider's settings ``up``), http-* to the same upstream over HTTP, echo to the (slow)
    scripted model."""
    upstream = {"kind": "openai-responses", "base_url": fake.base_url}
    return Settings.model_validate(
        {
            "store_url": f"sqlite:///{tmp_path / 'tether.db'}",
            "log_level": "warning",
            "providers": {
                "up": {**upstream, "transport": "websocket", **up},
                "uphttp": {**upstream, "transport": "http"},
            },
            "routes": [
                {"model": "up-*", "provider": "up"},
                {"model": "http-*", "provider": "uphttp"},
                {"model": "echo", "provider": "scripted"},
            ],
            "scripted": {"ttft_s": 2.0},  # its turn is in flight while the steer is answered
        }
    )


@contextlib.asynccontextmanager
async def steering(
    tmp_path: Path, script: list[dict[str, Any]] | None = None, up: dict[str, Any] | None = None, **knobs: Any
) -> AsyncIterator[tuple[FakeResponsesUpstream, RunningServer, AsyncResponsesConnection]]:
    """A slow fake upstream (with ``knobs``), tether in front of it (``up``: its provider's settings), and an SDK
    WebSocket connection to tether."""
    knobs.setdefault("chunk_size", 2)
    with (
        FakeResponsesUpstream(script, event_delay_s=0.02, **knobs) as fake,
        serve_in_thread(settings(fake, tmp_path, **(up or {}))) as gateway,
    ):
        async with (
            AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
            sdk.responses.connect() as connection,
        ):
            yield fake, gateway, connection


@pytest.fixture
def fake() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream(chunk_size=2, event_delay_s=0.02) as upstream:
        yield upstream


@pytest.fixture
def gateway(fake: FakeResponsesUpstream, tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(settings(fake, tmp_path)) as server:
        yield server


async def test_a_steer_ends_the_response_and_its_successor_is_a_turn_of_its_own(
    gateway: RunningServer, fake: FakeResponsesUpstream, tmp_path: Path
) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        target = await created(connection, model="up-6", input=LONG, stream_id="main", instructions="Be brief.")
        await connection.response.steer(previous_response_id=target, input="stop and summarise")
        steered = await events_until(connection, lambda event: event.type == "response.incomplete")
        accepted = [event for event in steered if event.type == "response.steer.accepted"]
        assert len(accepted) == 1
        assert accepted[0].steer.previous_response_id == target
        assert accepted[0].steer.id.startswith("steer_")
        assert not accepted[0].steer.id.startswith("steer_up_")  # tether's ids, never the upstream's
        assert accepted[0].stream_id == "main"
        incomplete = steered[-1].response
        assert incomplete.id == target
        assert incomplete.incomplete_details is not None
        assert incomplete.incomplete_details.reason == "steered"
        assert {event.stream_id for event in steered} == {"main"}

        after = await events_until(connection, lambda event: event.type == "response.completed")
        assert after[0].type == "response.created"  # right after the steered response's end
        successor = after[-1].response
        assert successor.id != target
        assert not successor.id.startswith("resp_up_")
        assert successor.previous_response_id == target
        assert successor.instructions == "Be brief."  # the steered response's settings
        assert successor.output_text == "stop and summarise"  # the fake echoes the latest user message
        assert {event.stream_id for event in after} == {"main"}

        # The successor is continued like any turn, with a delta from the upstream's successor.
        later = await created(connection, model="up-6", previous_response_id=successor.id, input="and then?")
        ended = await events_until(connection, is_terminal)
        assert ended[-1].type == "response.completed"
        assert ended[-1].response.output_text == "and then?"

    upstream_target = fake.requests[0]
    steer = fake.steers[0]
    assert steer.body == {
        "type": "response.steer",
        "previous_response_id": fake.stored_ids[0],
        "input": "stop and summarise",
    }
    assert steer.connection == upstream_target.connection
    creates = [r for r in fake.requests if r.body.get("type") == "response.create"]
    assert len(creates) == 2  # the successor was started by the upstream, not sent again
    assert creates[1].previous_response_id is not None
    assert creates[1].previous_response_id.startswith("resp_up_")
    assert creates[1].input == [{"type": "message", "role": "user", "content": "and then?"}]

    # Stored like any turn, and continuable after a restart.
    with httpx.Client(base_url=gateway.base_url) as http:
        stored = http.get(f"/responses/{successor.id}").json()
        assert stored["status"] == "completed"
        assert stored["previous_response_id"] == target
        items = http.get(f"/responses/{successor.id}/input_items").json()["data"]
        assert [(item["role"], item["content"]) for item in items] == [
            ("user", [{"type": "input_text", "text": "stop and summarise"}])
        ]
        steered_record = http.get(f"/responses/{target}").json()
        assert steered_record["status"] == "incomplete"
        assert steered_record["incomplete_details"] == {"reason": "steered"}
    # In the audit log like any turn, in order.
    audited = [e for e in AuditLog(tmp_path / "audit").entries("tenant:default") if e["kind"] == "turn"]
    assert [entry["response_id"] for entry in audited] == [target, successor.id, later]


async def test_the_successor_continues_after_a_restart(fake: FakeResponsesUpstream, tmp_path: Path) -> None:
    with serve_in_thread(settings(fake, tmp_path)) as first:
        async with (
            AsyncOpenAI(api_key="unused", base_url=first.base_url, max_retries=0) as sdk,
            sdk.responses.connect() as connection,
        ):
            target = await created(connection, model="up-6", input=LONG)
            await connection.response.steer(previous_response_id=target, input="summarise")
            await events_until(connection, lambda event: event.type == "response.incomplete")
            successor = (await events_until(connection, is_terminal))[-1].response
            assert successor.previous_response_id == target
    fake.forget_all()  # a new upstream connection: only tether's store can rebuild the context
    with serve_in_thread(settings(fake, tmp_path)) as second:
        async with AsyncOpenAI(api_key="unused", base_url=second.base_url, max_retries=0) as sdk:
            response = await sdk.responses.create(model="up-6", previous_response_id=successor.id, input="go on")
    assert response.status == "completed"
    assert response.output_text == "go on"
    resent = fake.requests[-1]
    assert resent.previous_response_id is None  # sent whole, from tether's store
    texts = [item.get("content") for item in resent.input if item.get("type") == "message"]
    assert texts[0] == LONG
    assert "summarise" in texts
    assert texts[-1] == "go on"


async def test_steering_that_waits_for_tool_output_goes_first_in_the_continuation(tmp_path: Path) -> None:
    async with steering(tmp_path, TOOL_STEP) as (fake, gateway, connection):
        target = await created(connection, model="up-6", input="look it up", tools=[TOOL])
        await connection.response.steer(previous_response_id=target, input="then stop")
        events = await events_until(connection, lambda event: event.type == "response.steer.pending")
        types = [event.type for event in events]
        assert types.index("response.steer.accepted") < types.index("response.completed")
        assert types[-2:] == ["response.completed", "response.steer.pending"]
        pending = events[-1]
        call = events[-2].response.output[-1]
        assert pending.steer.previous_response_id == target
        assert [stub.call_id for stub in pending.required_input] == [call.call_id]
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "42"}
        continued = await created(connection, model="up-6", previous_response_id=target, input=[output], tools=[TOOL])
        done = await events_until(connection, is_terminal)
        assert done[-1].type == "response.completed"
        with httpx.Client(base_url=gateway.base_url) as http:
            items = http.get(f"/responses/{continued}/input_items", params={"order": "asc"}).json()["data"]
        sent = fake.requests[-1]
    # tether's record has the steering input first, as the upstream has it; the upstream was not sent it twice.
    assert [item["type"] for item in items] == ["message", "function_call_output"]
    assert sent.input == [output]
    context = fake.context_of(fake.stored_ids[-1])
    assert context is not None
    assert context[-3]["content"] == "then stop"


@pytest.mark.parametrize(
    ("model", "code"),
    [("http-6", "steering_not_supported"), ("echo", "steering_not_supported")],
)
async def test_where_steering_cannot_be_relayed_it_fails_and_the_turn_goes_on(
    gateway: RunningServer, model: str, code: str
) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        target = await created(connection, model=model, input=LONG, stream_id="side")
        await connection.response.steer(previous_response_id=target, input="x")
        events = await events_until(connection, is_terminal)
        failed = [event for event in events if event.type == "response.steer.failed"]
        assert [event.error.code for event in failed] == [code]
        assert failed[0].stream_id == "side"
        assert failed[0].steer.input == "x"
        assert events[-1].type == "response.completed"


@pytest.mark.parametrize(
    ("knob", "code"),
    [
        ({"steering": "unsupported"}, "steering_not_supported"),
        ({"steering": "unknown_event"}, "steering_not_supported"),
    ],
)
async def test_an_upstream_that_refuses_steering_gives_the_client_the_failure(
    tmp_path: Path, knob: dict[str, Any], code: str
) -> None:
    async with steering(tmp_path, **knob) as (_, _, connection):
        target = await created(connection, model="up-6", input=LONG)
        await connection.response.steer(previous_response_id=target, input="x")
        events = await events_until(connection, is_terminal)
        failed = [event for event in events if event.type == "response.steer.failed"]
        assert [event.error.code for event in failed] == [code]
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == LONG
        # The connection is still usable.
        await created(connection, model="up-6", previous_response_id=target, input="next")
        assert (await events_until(connection, is_terminal))[-1].type == "response.completed"


async def test_a_successor_the_upstream_cannot_create_returns_the_input(tmp_path: Path) -> None:
    async with steering(tmp_path, fail_successors=True) as (_, _, connection):
        target = await created(connection, model="up-6", input=LONG)
        await connection.response.steer(previous_response_id=target, input="x")
        events = await events_until(connection, lambda event: event.type == "response.steer.failed")
        types = [event.type for event in events]
        assert types.index("response.steer.accepted") < types.index("response.incomplete")
        accepted = events[types.index("response.steer.accepted")]
        failed = events[-1]
        assert failed.error.code == "successor_creation_failed"
        assert failed.steer.id == accepted.steer.id
        assert failed.steer.input == "x"
        # The steered response is kept (incomplete) and the connection goes on from it.
        await created(connection, model="up-6", previous_response_id=target, input="x")
        assert (await events_until(connection, is_terminal))[-1].type == "response.completed"


async def test_a_successor_the_upstream_never_starts_fails_the_steer_and_the_lane_goes_on(tmp_path: Path) -> None:
    # Nothing is coming after the steered response's end: a short wait for the upstream's word (as configured).
    async with steering(tmp_path, withhold_successors=True, up={"steer_answer_grace_s": 0.5}) as (
        fake,
        gateway,
        connection,
    ):
        target = await created(connection, model="up-6", input=LONG, stream_id="main")
        await connection.response.steer(previous_response_id=target, input="x")
        events = await events_until(connection, lambda event: event.type == "response.steer.failed")
        types = [event.type for event in events]
        assert types.count("response.steer.accepted") == 1
        assert types.index("response.steer.accepted") < types.index("response.incomplete") == len(types) - 2
        assert "response.created" not in types  # no successor
        accepted = events[types.index("response.steer.accepted")]
        incomplete = events[-2].response
        assert incomplete.id == target
        assert incomplete.incomplete_details is not None
        assert incomplete.incomplete_details.reason == "steered"
        failed = events[-1]
        assert failed.error.code == "response_not_active"
        assert failed.error.message == "The upstream did not say what became of the steering input."
        assert failed.steer.id == accepted.steer.id
        assert failed.steer.input == "x"  # returned, to go into the next response.create
        assert failed.stream_id == "main"
        # The lane takes the next create at once, continuing the steered response (kept as it ended).
        later = await created(connection, model="up-6", previous_response_id=target, input="x", stream_id="main")
        done = await events_until(connection, is_terminal)
        assert done[-1].type == "response.completed", done[-1]
        assert done[-1].response.output_text == "x"
        assert done[-1].response.previous_response_id == target
        assert {event.stream_id for event in done} == {"main"}
        with httpx.Client(base_url=gateway.base_url) as http:
            steered = http.get(f"/responses/{target}").json()
        assert steered["status"] == "incomplete"
        assert steered["incomplete_details"] == {"reason": "steered"}
    creates = [r for r in fake.requests if r.body.get("type") == "response.create"]
    assert len(creates) == 2
    assert creates[1].connection != creates[0].connection  # the silent socket was given up, not reused
    assert creates[1].previous_response_id == fake.stored_ids[0]  # a delta from the steered response all the same
    assert later != target
