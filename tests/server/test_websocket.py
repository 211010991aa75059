"""WebSocket mode on /v1/responses, over real sockets, frame by frame."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import time
from typing import Any

import httpx2 as httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tether.server.runner import RunningServer
from tether.testing import settled
from tether.types import JSONObject

from .wire import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    RECEIVE_TIMEOUT_S,
    RESPONSE_KEYS,
    WEATHER_TOOL,
    RawFrame,
    ServerFactory,
    collect,
    completed,
    completed_turn,
    count_ends,
    create_event,
    ends_turn,
    error_turn,
    expect_http_error,
    expect_ws_error,
    function_calls,
    http_client,
    masked_frame,
    output_text,
    raw_upgrade,
    read_frame,
    receive,
    receive_turn,
    send_create,
    send_json,
    sse_events,
    turn,
    user,
)

TEXT_TURN_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
FUNCTION_TURN_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]


def collapse_deltas(types: list[str]) -> list[str]:
    """The event types with each run of one delta type collapsed to one entry."""
    collapsed: list[str] = []
    for event_type in types:
        if not (event_type.endswith(".delta") and collapsed and collapsed[-1] == event_type):
            collapsed.append(event_type)
    return collapsed


def lane_of(event: JSONObject) -> str | None:
    lane = event.get("stream_id")
    assert lane is None or isinstance(lane, str)
    return lane


def by_lane(events: list[JSONObject]) -> dict[str | None, list[JSONObject]]:
    lanes: dict[str | None, list[JSONObject]] = {}
    for event in events:
        lanes.setdefault(lane_of(event), []).append(event)
    return lanes


def assert_numbered(events: list[JSONObject]) -> None:
    assert [event["sequence_number"] for event in events] == list(range(len(events)))


def assert_increasing(events: list[JSONObject]) -> None:
    numbers = [event["sequence_number"] for event in events]
    assert numbers[0] == 0
    assert all(earlier < later for earlier, later in itertools.pairwise(numbers))


# -- one turn -----------------------------------------------------------------------------------------------------


async def test_text_turn_emits_the_canonical_event_sequence(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        events = await turn(ws, input="Say hello in exactly three words.")

    types = [event["type"] for event in events]
    assert collapse_deltas(types) == TEXT_TURN_TYPES
    assert types.count("response.output_text.delta") >= 2
    assert_numbered(events)
    assert all("stream_id" not in event for event in events)

    created, in_progress = events[0]["response"], events[1]["response"]
    for snapshot in (created, in_progress):
        assert set(snapshot) >= RESPONSE_KEYS
        assert snapshot["status"] == "in_progress"
        assert snapshot["output"] == []
    item = events[2]["item"]
    assert item["type"] == "message"
    assert item["role"] == "assistant"
    assert item["status"] == "in_progress"
    part = events[3]["part"]
    assert (part["type"], part["text"], part["annotations"]) == ("output_text", "", [])

    deltas = [event for event in events if event["type"] == "response.output_text.delta"]
    for event in deltas:
        assert (event["item_id"], event["output_index"], event["content_index"]) == (item["id"], 0, 0)
        assert isinstance(event["delta"], str)
    text = "".join(event["delta"] for event in deltas)
    done = next(event for event in events if event["type"] == "response.output_text.done")
    assert (done["item_id"], done["output_index"], done["content_index"], done["text"]) == (item["id"], 0, 0, text)

    response = completed(events)
    assert set(response) >= RESPONSE_KEYS
    assert response["id"] == created["id"]
    assert response["id"].startswith("resp_")
    assert response["object"] == "response"
    assert response["model"] == "gpt-test"
    assert response["previous_response_id"] is None
    assert response["store"] is True
    assert response["background"] is False
    assert isinstance(response["completed_at"], int)
    assert response["completed_at"] >= response["created_at"]
    assert output_text(response) == text
    assert response["output"][0]["status"] == "completed"
    usage = response["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
    assert set(usage["input_tokens_details"]) >= {"cached_tokens"}
    assert set(usage["output_tokens_details"]) >= {"reasoning_tokens"}


async def test_function_call_turn_then_tool_output_turn(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        events = await turn(ws, input="What is the weather in Paris?", tools=[WEATHER_TOOL])
        assert collapse_deltas([event["type"] for event in events]) == FUNCTION_TURN_TYPES
        assert_numbered(events)

        added = events[2]["item"]
        assert added["type"] == "function_call"
        assert added["name"] == "get_weather"
        assert added["arguments"] == ""
        assert added["status"] == "in_progress"
        assert added["call_id"].startswith("call_")
        deltas = [event for event in events if event["type"] == "response.function_call_arguments.delta"]
        for event in deltas:
            assert (event["item_id"], event["output_index"]) == (added["id"], 0)
        arguments = "".join(event["delta"] for event in deltas)
        done = next(event for event in events if event["type"] == "response.function_call_arguments.done")
        assert (done["item_id"], done["output_index"], done["arguments"]) == (added["id"], 0, arguments)
        assert "location" in json.loads(arguments)

        response = completed(events)
        [call] = function_calls(response)
        assert (call["call_id"], call["arguments"], call["status"]) == (added["call_id"], arguments, "completed")

        answer = await completed_turn(
            ws,
            previous_response_id=response["id"],
            input=[{"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp_c": 21}'}],
            tools=[WEATHER_TOOL],
        )
    assert answer["previous_response_id"] == response["id"]
    assert output_text(answer)
    assert not function_calls(answer)


async def test_stream_and_stream_options_are_tolerated(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        response = await completed_turn(ws, input="hi", stream=True, stream_options={"include_obfuscation": False})
    assert output_text(response)


# -- lanes --------------------------------------------------------------------------------------------------------


async def test_named_lanes_run_concurrently_and_tag_their_events(make_server: ServerFactory) -> None:
    server = make_server(scripted={"ttft_s": 0.3})
    async with connect(server.ws_url) as ws:
        await send_create(ws, input="on lane a", stream_id="lane-a")
        await send_create(ws, input="on lane b", stream_id="lane.b_2")
        await send_create(ws, input="on the default lane")
        events = await collect(ws, count_ends(3))

    first_end = next(index for index, event in enumerate(events) if ends_turn(event))
    created = [index for index, event in enumerate(events) if event["type"] == "response.created"]
    assert len(created) == 3
    assert max(created) < first_end, "all three responses must be in flight before any completes"

    lanes = by_lane(events)
    assert set(lanes) == {"lane-a", "lane.b_2", None}
    for lane, lane_events in lanes.items():
        assert collapse_deltas([event["type"] for event in lane_events]) == TEXT_TURN_TYPES
        assert_numbered(lane_events)
        if lane is None:
            assert all("stream_id" not in event for event in lane_events)
        else:
            assert all(event["stream_id"] == lane for event in lane_events)
    ids = {completed(lane_events)["id"] for lane_events in lanes.values()}
    assert len(ids) == 3


@pytest.mark.parametrize("lane", [None, "fifo"])
async def test_one_lane_runs_its_responses_in_order_without_overlap(
    make_server: ServerFactory, lane: str | None
) -> None:
    server = make_server(scripted={"ttft_s": 0.2})
    words = ["first", "second", "third"]
    lane_fields: dict[str, Any] = {} if lane is None else {"stream_id": lane}
    async with connect(server.ws_url) as ws:
        for word in words:
            await send_create(ws, model="echo", input=word, **lane_fields)
        events = await collect(ws, count_ends(3))

    lifecycle = [event["type"] for event in events if event["type"] in ("response.created", "response.completed")]
    assert lifecycle == ["response.created", "response.completed"] * 3
    responses = [event["response"] for event in events if event["type"] == "response.completed"]
    assert [output_text(response) for response in responses] == words
    assert all(lane_of(event) == lane for event in events)
    starts = [index for index, event in enumerate(events) if event["sequence_number"] == 0]
    assert len(starts) == 3
    for start, end in zip(starts, [*starts[1:], len(events)], strict=True):
        assert_numbered(events[start:end])


async def test_the_33rd_named_lane_is_refused(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        for index in range(32):
            await send_create(ws, input="warm", generate=False, stream_id=f"s{index}")
        events = await collect(ws, count_ends(32))
        assert sum(event["type"] == "response.completed" for event in events) == 32

        for _ in range(2):  # a refusal changes nothing: the same lane is refused again
            error = await error_turn(ws, input="one too many", stream_id="s32")
            expect_ws_error(error, "websocket_stream_limit_reached", 400)
            assert error["stream_id"] == "s32"
            assert "32" in error["error"]["message"]

        reused = await turn(ws, input="an existing lane still works", stream_id="s0")
        assert completed(reused)
        assert all(event["stream_id"] == "s0" for event in reused)
        assert await completed_turn(ws, input="the default lane is not counted")


@pytest.mark.parametrize(
    "stream_id",
    ["", "x" * 257, "has space", "slash/lane", "colon:lane", "ümlaut", "tab\t", 5, ["a"]],
    ids=["empty", "257-chars", "space", "slash", "colon", "non-ascii", "tab", "number", "array"],
)
async def test_invalid_stream_id_is_refused_and_the_socket_stays_open(
    shared_server: RunningServer, stream_id: object
) -> None:
    async with connect(shared_server.ws_url) as ws:
        error = await error_turn(ws, input="hi", stream_id=stream_id)
        expect_ws_error(error, "invalid_stream_id", 400)
        assert error["error"]["param"] == "stream_id"
        assert "stream_id" not in error
        assert await completed_turn(ws, input="still open")


async def test_longest_stream_id_and_null_stream_id_are_valid(shared_server: RunningServer) -> None:
    longest = "A-z.0_" * 42 + "abcd"
    assert len(longest) == 256
    async with connect(shared_server.ws_url) as ws:
        events = await turn(ws, input="hi", stream_id=longest)
        assert completed(events)
        assert all(event["stream_id"] == longest for event in events)
        events = await turn(ws, input="hi", stream_id=None)
        assert completed(events)
        assert all("stream_id" not in event for event in events)


async def test_full_queue_is_refused_with_429_and_later_turns_work(make_server: ServerFactory) -> None:
    server = make_server(websocket={"max_queued": 1, "max_in_flight": 1}, scripted={"ttft_s": 0.5})
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input="running")
        await send_create(ws, model="echo", input="queued", stream_id="other")
        await send_create(ws, model="echo", input="refused", stream_id="third")
        events = await collect(ws, count_ends(3))

        errors = [event for event in events if event["type"] == "error"]
        assert len(errors) == 1
        error = expect_ws_error(errors[0], "websocket_queue_full", 429)
        assert error["stream_id"] == "third"
        assert error["error"]["type"] == "rate_limit_error"
        assert error["error"]["headers"]["retry-after"] == "1"
        assert events.index(error) < next(i for i, e in enumerate(events) if e["type"] == "response.completed")
        done = [event["response"] for event in events if event["type"] == "response.completed"]
        assert [output_text(response) for response in done] == ["running", "queued"]

        later = await completed_turn(ws, model="echo", input="later", stream_id="third")
        assert output_text(later) == "later"


async def test_max_in_flight_caps_concurrent_responses(make_server: ServerFactory) -> None:
    server = make_server(websocket={"max_in_flight": 2}, scripted={"ttft_s": 0.3})
    lanes = [f"l{index}" for index in range(5)]
    async with connect(server.ws_url) as ws:
        for lane in lanes:
            await send_create(ws, input="hi", stream_id=lane)
        events = await collect(ws, count_ends(len(lanes)))

    running: set[str | None] = set()
    peak = 0
    for event in events:
        if event["type"] == "response.created":
            running.add(lane_of(event))
            peak = max(peak, len(running))
        elif ends_turn(event):
            running.discard(lane_of(event))
    assert peak == 2
    assert sum(event["type"] == "response.completed" for event in events) == len(lanes)
    started = [lane_of(event) for event in events if event["type"] == "response.created"]
    assert started == lanes, "queued responses start in arrival order"


# -- continuation -------------------------------------------------------------------------------------------------


async def test_stored_response_continues_on_another_socket(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        first = await completed_turn(ws, input="The code word is cobalt.")
    async with connect(shared_server.ws_url) as ws:
        second = await completed_turn(ws, model="echo", previous_response_id=first["id"], input=[])
    assert second["previous_response_id"] == first["id"]
    assert output_text(second) == "The code word is cobalt."
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]


async def test_unstored_response_continues_on_its_socket_only(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        first = await completed_turn(ws, store=False, input="The code word is cobalt.")
        assert first["store"] is False
        second = await completed_turn(ws, model="echo", store=False, previous_response_id=first["id"], input=[])
        assert output_text(second) == "The code word is cobalt."

    async with connect(shared_server.ws_url) as ws:
        error = await error_turn(ws, store=False, previous_response_id=second["id"], input=[user("again")])
        expect_ws_error(error, "previous_response_not_found", 400)
        assert error["error"]["param"] == "previous_response_id"
        assert second["id"] in error["error"]["message"]
        # Recovery: a new chain with the full context.
        assert await completed_turn(ws, store=False, input=[user("The code word is cobalt."), user("again")])

    async with http_client(shared_server) as client:
        expect_http_error(await client.get(f"/responses/{second['id']}"), 404, "response_not_found")
        reply = await client.post(
            "/responses", json={"model": "x", "previous_response_id": second["id"], "input": "again"}
        )
        expect_http_error(reply, 400, "previous_response_not_found")


async def test_failed_continuation_evicts_its_parent(shared_server: RunningServer) -> None:
    orphan = {"type": "function_call_output", "call_id": "call_missing", "output": "x"}
    async with connect(shared_server.ws_url) as ws:
        first = await completed_turn(ws, store=False, input="remember cobalt")
        error = await error_turn(ws, store=False, previous_response_id=first["id"], input=[orphan])
        expect_ws_error(error, "function_call_not_found", 400)
        assert error["error"]["param"] == "input[0].call_id"

        evicted = await error_turn(ws, store=False, previous_response_id=first["id"], input=[user("next")])
        expect_ws_error(evicted, "previous_response_not_found", 400)


async def test_failed_cross_lane_fork_keeps_the_other_lanes_parent(shared_server: RunningServer) -> None:
    orphan = {"type": "function_call_output", "call_id": "call_missing", "output": "x"}
    async with connect(shared_server.ws_url) as ws:
        parent = completed(await turn(ws, store=False, input="remember cobalt", stream_id="main"))

        error = await error_turn(ws, store=False, previous_response_id=parent["id"], input=[orphan], stream_id="fork")
        expect_ws_error(error, "function_call_not_found", 400)
        assert error["stream_id"] == "fork"

        fork = await turn(ws, model="echo", store=False, previous_response_id=parent["id"], input=[], stream_id="fork2")
        assert output_text(completed(fork)) == "remember cobalt"
        same_lane = await turn(ws, store=False, previous_response_id=parent["id"], input=[user("go")], stream_id="main")
        assert completed(same_lane)["previous_response_id"] == parent["id"]


async def test_failed_turn_on_a_lane_evicts_the_parent_it_continued(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        parent = await completed_turn(ws, store=False, input="remember cobalt")
        events = await turn(ws, model="fail", store=False, previous_response_id=parent["id"], input=[])
        assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
        # The failure is carried by response.failed; an error event before it is optional on WebSocket.
        assert {event["type"] for event in events[2:-1]} <= {"error"}
        for event in events[2:-1]:
            expect_ws_error(event, "server_error", 500)
        assert_increasing(events)
        failed = events[-1]
        assert failed["type"] == "response.failed"
        assert failed["response"]["status"] == "failed"
        assert failed["response"]["error"]["code"]
        assert "fail" in failed["response"]["error"]["message"]

        error = await error_turn(ws, store=False, previous_response_id=parent["id"], input=[user("next")])
        expect_ws_error(error, "previous_response_not_found", 400)


async def test_generate_false_warms_up_a_chainable_response(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        events = await turn(
            ws,
            store=False,
            generate=False,
            instructions="You are a weather bot.",
            input="The code word is cobalt.",
            tools=[WEATHER_TOOL],
        )
        assert events[0]["type"] == "response.created"
        assert {event["type"] for event in events} <= {"response.created", "response.in_progress", "response.completed"}
        assert_numbered(events)
        warm = completed(events)
        assert warm["output"] == []
        assert warm["usage"]["output_tokens"] == 0
        assert warm["usage"]["input_tokens"] > 0

        echoed = await completed_turn(ws, model="echo", store=False, previous_response_id=warm["id"], input=[])
        assert output_text(echoed) == "The code word is cobalt."
        assert echoed["usage"]["input_tokens"] >= warm["usage"]["input_tokens"]

        # A warm-up later in a chain is chainable too.
        again = completed(
            await turn(ws, store=False, generate=False, previous_response_id=echoed["id"], input=[user("and now?")])
        )
        assert again["output"] == []
        assert again["usage"]["input_tokens"] > echoed["usage"]["input_tokens"]
        final = await completed_turn(ws, model="echo", store=False, previous_response_id=again["id"], input=[])
        assert output_text(final) == "and now?"


# -- bad input: an error event, and the socket stays open ---------------------------------------------------------

BAD_FRAMES: list[tuple[str, Any, str | None, str | None]] = [
    ("malformed-json", '{"type": "response.create",', "invalid_json", None),
    ("json-array", "[1, 2]", "invalid_json", None),
    ("json-number", "42", "invalid_json", None),
    ("json-string", '"response.create"', "invalid_json", None),
    ("json-null", "null", "invalid_json", None),
    ("empty", "", "invalid_json", None),
    ("unknown-type", {"type": "response.cancel"}, "invalid_event_type", "type"),
    ("missing-type", {"model": "x", "input": "hi"}, "missing_required_parameter", "type"),
    ("inject", {"type": "response.inject", "input": "faster"}, "unsupported_event", "type"),
    ("missing-model", {"type": "response.create", "input": "hi"}, "missing_required_parameter", "model"),
    ("null-model", create_event(model=None), "missing_required_parameter", "model"),
    ("model-number", create_event(model=5), "invalid_type", "model"),
    ("input-number", create_event(input=5), "invalid_type", "input"),
    ("input-item-string", create_event(input=["hi"]), "invalid_type", "input[0]"),
    ("bad-role", create_event(input=[{"type": "message", "role": "robot", "content": "x"}]), None, "input[0].role"),
    ("store-string", create_event(store="yes"), "invalid_type", "store"),
    ("tools-object", create_event(tools={}), "invalid_type", "tools"),
    ("generate-string", create_event(generate="no"), "invalid_type", "generate"),
    ("background", create_event(input="hi", background=True), "unsupported_parameter", "background"),
    ("unknown-previous", create_event(previous_response_id="resp_missing"), "previous_response_not_found", None),
]


@pytest.mark.parametrize(("frame", "code", "param"), [case[1:] for case in BAD_FRAMES], ids=[c[0] for c in BAD_FRAMES])
async def test_bad_client_event_gets_an_error_and_the_socket_stays_open(
    shared_server: RunningServer, frame: Any, code: str | None, param: str | None
) -> None:
    async with connect(shared_server.ws_url) as ws:
        await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        error = expect_ws_error(await receive(ws), code, 400)
        if code == "previous_response_not_found":
            param = "previous_response_id"
        assert error["error"]["param"] == param
        assert error["error"]["type"] == "invalid_request_error"
        assert await completed_turn(ws, input="still open")


@pytest.mark.parametrize(("field", "value"), [("tool_choice", 5), ("temperature", "hot"), ("top_p", [])])
async def test_wrong_type_of_union_field_names_the_field(
    shared_server: RunningServer, field: str, value: object
) -> None:
    async with connect(shared_server.ws_url) as ws:
        error = await error_turn(ws, input="hi", **{field: value})
    expect_ws_error(error, "invalid_type", 400)
    assert error["error"]["param"] == field


async def test_binary_frame_is_refused_and_the_socket_stays_open(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        await ws.send(json.dumps(create_event(input="hi")).encode())
        error = expect_ws_error(await receive(ws), "invalid_frame", 400)
        assert error["error"]["type"] == "invalid_request_error"
        assert await completed_turn(ws, input="still open")


async def test_bad_events_on_a_named_lane_echo_it(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        error = await error_turn(ws, model=5, stream_id="side")
        expect_ws_error(error, "invalid_type", 400)
        assert error["stream_id"] == "side"
        await send_json(ws, {"type": "response.inject", "stream_id": "side"})
        error = expect_ws_error(await receive(ws), "unsupported_event", 400)
        assert error["stream_id"] == "side"


# -- response.steer: answered with response.steer.failed and the protocol's code; the socket stays open -----------


async def steer(ws: Any, **fields: Any) -> JSONObject:
    await send_json(ws, {"type": "response.steer", **fields})
    answer = await receive(ws)
    assert answer["type"] == "response.steer.failed", answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["sequence_number"] == 0
    return answer


async def test_steering_is_refused_with_the_reason_and_the_turns_go_on(make_server: ServerFactory) -> None:
    server = make_server(scripted={"ttft_s": 3.0})  # the turn is in flight while the steer is answered
    async with connect(server.ws_url) as ws:
        await send_create(ws, input="a long task", stream_id="side")
        created, in_progress = await receive(ws), await receive(ws)
        assert [created["type"], in_progress["type"]] == ["response.created", "response.in_progress"]
        target = created["response"]["id"]
        failed = await steer(ws, previous_response_id=target, input="focus on the tests")
        assert failed["error"]["code"] == "steering_not_supported", failed
        assert failed["stream_id"] == "side"
        assert failed["steer"] == {"input": "focus on the tests", "previous_response_id": target}
        rest = await receive_turn(ws)
        assert rest[-1]["type"] == "response.completed"
        assert rest[-1]["response"]["id"] == target
        done = await steer(ws, previous_response_id=target, input=[{"role": "user", "content": "and now?"}])
        assert done["error"]["code"] == "response_already_completed"
        missing = await steer(ws, previous_response_id="resp_elsewhere", input="x")
        assert missing["error"]["code"] == "response_not_found"
        assert "stream_id" not in missing
        invalid = await steer(ws, previous_response_id=target, input="x", stream_id="side")
        assert invalid["error"]["code"] == "invalid_input"
        assert output_text(await completed_turn(ws, model="echo", input="still open")) == "still open"


async def test_steering_a_response_of_another_connection_is_not_found(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as first:
        response = await completed_turn(first, input="mine")
    async with connect(shared_server.ws_url) as second:
        failed = await steer(second, previous_response_id=response["id"], input="x")
        assert failed["error"]["code"] == "response_not_found"
        assert await completed_turn(second, input="still open")


# -- size limit ---------------------------------------------------------------------------------------------------


def padded_create(size: int) -> str:
    """A valid ``response.create`` message of exactly ``size`` bytes."""
    skeleton = json.dumps(create_event(input=""))
    return json.dumps(create_event(input="x" * (size - len(skeleton))))


async def expect_close(ws: Any, code: int) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        await receive(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code


async def test_message_at_the_limit_is_accepted(make_server: ServerFactory) -> None:
    server = make_server(max_body_bytes=4096)
    message = padded_create(4096)
    assert len(message.encode()) == 4096
    async with connect(server.ws_url) as ws:
        await ws.send(message)
        assert completed(await receive_turn(ws))


@pytest.mark.parametrize(
    "text",
    ["x" * 6000, "é" * 2100, "€" * 1400],
    ids=["6KB-ascii", "2-byte-chars", "3-byte-chars"],
)
async def test_oversized_message_gets_an_error_then_close_1009(make_server: ServerFactory, text: str) -> None:
    server = make_server(max_body_bytes=4096)
    message = json.dumps(create_event(input=text), ensure_ascii=False)
    assert 4096 < len(message.encode()) < 2 * 4096
    async with connect(server.ws_url) as ws:
        await ws.send(message)
        error = expect_ws_error(await receive(ws), "message_too_large", 400)
        assert "4096" in error["error"]["message"]
        await expect_close(ws, 1009)
    async with connect(server.ws_url) as ws:
        assert await completed_turn(ws, input="a new socket works")


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_message_over_twice_the_limit_is_closed_1009(make_server: ServerFactory, compression: Any) -> None:
    server = make_server(max_body_bytes=4096)
    async with connect(server.ws_url, compression=compression) as ws:
        await ws.send(padded_create(10 * 1024))
        await expect_close(ws, 1009)
    async with connect(server.ws_url) as ws:
        assert await completed_turn(ws, input="a new socket works")


# -- connection age -----------------------------------------------------------------------------------------------


async def test_connection_age_limit_sends_an_error_then_closes(make_server: ServerFactory) -> None:
    server = make_server(websocket={"max_connection_age_s": 1.0})
    async with connect(server.ws_url) as ws:
        opened = time.monotonic()
        error = expect_ws_error(await receive(ws, within_s=5.0), "websocket_connection_limit_reached", 400)
        assert time.monotonic() - opened >= 0.8
        assert "stream_id" not in error
        assert "new websocket connection" in error["error"]["message"].lower()
        await expect_close(ws, 1000)


async def test_turn_in_flight_at_the_age_limit_completes_before_the_close(make_server: ServerFactory) -> None:
    server = make_server(websocket={"max_connection_age_s": 1.0}, scripted={"ttft_s": 1.5})
    async with connect(server.ws_url) as ws:
        opened = time.monotonic()
        await asyncio.sleep(0.5)
        await send_create(ws, model="echo", input="finish me")  # in flight from ~0.5 s to ~2 s
        await asyncio.sleep(max(0.0, opened + 1.25 - time.monotonic()))
        await send_create(ws, model="echo", input="too late", stream_id="late")  # after the limit: refused
        events = await collect(ws, lambda events: sum(event["type"] == "error" for event in events) >= 2)

        types = [event["type"] for event in events]
        refused, final = (event for event in events if event["type"] == "error")
        expect_ws_error(refused, "websocket_connection_limit_reached", 400)
        assert refused["stream_id"] == "late"
        assert types.index("response.completed") < events.index(final) == len(events) - 1
        expect_ws_error(final, "websocket_connection_limit_reached", 400)
        assert output_text(completed(events[: types.index("response.completed") + 1])) == "finish me"
        await expect_close(ws, 1000)


# -- auth ---------------------------------------------------------------------------------------------------------

KEYS = {"key-a": "alice", "key-b": "bob"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic a2V5LWE="}, {"x-api-key": "nope"}],
    ids=["none", "wrong-bearer", "basic", "wrong-x-api-key"],
)
async def test_upgrade_without_a_valid_key_is_refused_with_401(
    make_server: ServerFactory, headers: dict[str, str]
) -> None:
    server = make_server(api_keys=KEYS)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws_url, additional_headers=headers, open_timeout=RECEIVE_TIMEOUT_S):
            pass  # pragma: no cover - the upgrade must fail
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    error = json.loads(response.body)["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "authentication_error"
    assert "wrong" not in error["message"]
    assert "nope" not in error["message"]


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer key-a"}, {"Authorization": "bearer key-a"}, {"x-api-key": "key-a"}],
    ids=["bearer", "lowercase-scheme", "x-api-key"],
)
async def test_upgrade_with_a_valid_key_works(make_server: ServerFactory, headers: dict[str, str]) -> None:
    server = make_server(api_keys=KEYS)
    async with connect(server.ws_url, additional_headers=headers) as ws:
        assert await completed_turn(ws, input="hi")


async def test_tenants_cannot_see_each_others_responses(make_server: ServerFactory) -> None:
    server = make_server(api_keys=KEYS)
    alice, bob = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    async with connect(server.ws_url, additional_headers=alice) as ws:
        stored = await completed_turn(ws, input="alice's secret")
    response_id = stored["id"]

    async with connect(server.ws_url, additional_headers=bob) as ws:
        error = await error_turn(ws, previous_response_id=response_id, input=[user("show me")])
        expect_ws_error(error, "previous_response_not_found", 400)
        fork = await error_turn(ws, previous_response_id=response_id, input=[], stream_id="fork")
        expect_ws_error(fork, "previous_response_not_found", 400)

    async with http_client(server, **bob) as client:
        reply = await client.post("/responses", json={"model": "x", "previous_response_id": response_id, "input": "x"})
        expect_http_error(reply, 400, "previous_response_not_found")
        for path in (f"/responses/{response_id}", f"/responses/{response_id}/input_items"):
            expect_http_error(await client.get(path), 404, "response_not_found")
        expect_http_error(await client.get(f"/responses/{response_id}?stream=true"), 404, "response_not_found")
        expect_http_error(await client.delete(f"/responses/{response_id}"), 404, "response_not_found")
        counted = await client.post("/responses/input_tokens", json={"previous_response_id": response_id, "input": "x"})
        expect_http_error(counted, 400, "previous_response_not_found")

    async with http_client(server, **alice) as client:
        assert (await client.get(f"/responses/{response_id}")).json()["id"] == response_id
        reply = await client.post("/responses", json={"model": "x", "previous_response_id": response_id, "input": "x"})
        assert reply.status_code == 200, reply.text
    async with connect(server.ws_url, additional_headers=alice) as ws:
        assert await completed_turn(ws, previous_response_id=response_id, input=[user("mine")])


# -- transport details --------------------------------------------------------------------------------------------


async def test_server_pings_and_drops_a_client_that_never_pongs(make_server: ServerFactory) -> None:
    server = make_server(websocket={"ping_interval_s": 0.2, "ping_timeout_s": 0.5})
    reader, writer = await raw_upgrade(server)
    frames = []
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):  # a bound so that nothing hangs, not a measurement
            while True:
                try:
                    frames.append(await read_frame(reader))
                except asyncio.IncompleteReadError:
                    break
    finally:
        writer.close()
    opcodes = [frame.opcode for frame in frames]
    assert OP_PING in opcodes
    if OP_CLOSE in opcodes:
        close = frames[opcodes.index(OP_CLOSE)]
        assert int.from_bytes(close.payload[:2], "big") == 1011


async def test_a_client_that_answers_pings_stays_connected(make_server: ServerFactory) -> None:
    server = make_server(websocket={"ping_interval_s": 0.2, "ping_timeout_s": 0.5})
    async with connect(server.ws_url, ping_interval=None) as ws:
        await asyncio.sleep(1.5)
        assert await completed_turn(ws, input="still here")


async def test_openai_beta_and_content_type_headers_are_accepted(shared_server: RunningServer) -> None:
    # Codex sends the beta header; the Open Responses compliance runner sends a Content-Type on the upgrade.
    headers = {"OpenAI-Beta": "responses_websockets=2026-02-06", "Content-Type": "application/json"}
    async with connect(shared_server.ws_url, additional_headers=headers) as ws:
        assert await completed_turn(ws, input="hi")


async def test_permessage_deflate_is_negotiated_when_offered(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url, compression="deflate") as ws:
        assert [extension.name for extension in ws.protocol.extensions] == ["permessage-deflate"]
        assert await completed_turn(ws, input="compressed")
    async with connect(shared_server.ws_url, compression=None) as ws:
        assert ws.protocol.extensions == []
        assert await completed_turn(ws, input="plain")


async def test_permessage_deflate_can_be_disabled(make_server: ServerFactory) -> None:
    server = make_server(websocket={"per_message_deflate": False})
    async with connect(server.ws_url, compression="deflate") as ws:
        assert ws.protocol.extensions == []
        assert await completed_turn(ws, input="plain")


@pytest.mark.parametrize("path", ["/v1/models", "/v1/responses/", "/v1/responses/resp_x", "/responses", "/nope"])
async def test_an_upgrade_on_a_route_without_websocket_mode_is_404_not_found(
    shared_server: RunningServer, path: str
) -> None:
    """Starlette refused it with 403 and an empty body: the protocol's 404, in its error shape, says where to go."""
    url = f"ws://{shared_server.host}:{shared_server.port}{path}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=RECEIVE_TIMEOUT_S):
            pass  # pragma: no cover - the upgrade must fail
    response = refused.value.response
    assert response.status_code == 404
    error = json.loads(response.body)["error"]
    assert (error["code"], error["type"], error["param"]) == ("not_found", "invalid_request_error", None)
    assert path in error["message"]
    assert "/v1/responses" in error["message"]


async def test_plain_get_without_upgrade_is_426(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        reply = await client.get("/responses")
    error = expect_http_error(reply, 426, "websocket_upgrade_required")
    assert "upgrade" in error["message"].lower()


# -- disconnects --------------------------------------------------------------------------------------------------


async def test_client_closing_mid_turn_does_not_break_the_server(make_server: ServerFactory) -> None:
    server = make_server(scripted={"ttft_s": 0.4})
    async with connect(server.ws_url) as ws:
        await send_create(ws, input="abandoned", stream_id="a")
        await send_create(ws, input="abandoned too")
        assert (await receive(ws))["type"] == "response.created"
    # Same, without a closing handshake: the TCP connection just goes away.
    reader, writer = await raw_upgrade(server)
    writer.write(masked_frame(OP_TEXT, json.dumps(create_event(input="abandoned")).encode()))
    await writer.drain()
    assert (await asyncio.wait_for(read_frame(reader), RECEIVE_TIMEOUT_S)).opcode == OP_TEXT
    writer.transport.abort()

    await settled(server)  # the abandoned turns have run to their end
    async with connect(server.ws_url) as ws:
        assert await completed_turn(ws, input="a new connection works")
    async with httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}", timeout=RECEIVE_TIMEOUT_S) as client:
        health = await client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}


async def test_sequential_turns_on_one_socket(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        first = await completed_turn(ws, store=False, input="one")
        second = await completed_turn(ws, store=False, input="two")
        assert first["id"] != second["id"]
        chained = await completed_turn(ws, store=False, previous_response_id=second["id"], input=[user("three")])
    assert chained["previous_response_id"] == second["id"]


async def test_continuation_queued_behind_its_in_flight_parent_on_the_same_lane(make_server: ServerFactory) -> None:
    server = make_server(scripted={"ttft_s": 0.3})
    async with connect(server.ws_url) as ws:
        await send_create(ws, store=False, input="The code word is cobalt.", stream_id="pipe")
        created = await receive(ws)
        assert created["type"] == "response.created"
        parent_id = created["response"]["id"]
        # Sent while the parent is still generating: it waits in the lane and starts once the parent is committed.
        await send_create(ws, model="echo", store=False, previous_response_id=parent_id, input=[], stream_id="pipe")
        events = await collect(ws, count_ends(2))
    finished = [event["response"] for event in events if ends_turn(event)]
    assert [response["status"] for response in finished] == ["completed", "completed"]
    assert finished[0]["id"] == parent_id
    assert finished[1]["previous_response_id"] == parent_id
    assert output_text(finished[1]) == "The code word is cobalt."


async def test_http_replay_of_a_named_lane_response_carries_no_stream_id(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        events = await turn(ws, input="hi", stream_id="lane-x")
    response_id = completed(events)["id"]
    async with http_client(shared_server) as client:
        reply = await client.get(f"/responses/{response_id}", params={"stream": "true"})
    assert reply.status_code == 200
    replayed = sse_events(reply.content)
    assert [event["type"] for event in replayed] == [event["type"] for event in events]
    assert all("stream_id" not in event for event in replayed)


async def test_unstored_lane_cache_keeps_only_the_latest_response(shared_server: RunningServer) -> None:
    async with connect(shared_server.ws_url) as ws:
        first = await completed_turn(ws, store=False, input="one")
        second = await completed_turn(ws, store=False, previous_response_id=first["id"], input=[user("two")])
        stale = await error_turn(ws, store=False, previous_response_id=first["id"], input=[user("again")])
        expect_ws_error(stale, "previous_response_not_found", 400)
        assert await completed_turn(ws, store=False, previous_response_id=second["id"], input=[user("three")])

        # Stored responses are hydrated from the store instead.
        kept = await completed_turn(ws, input="one")
        await completed_turn(ws, previous_response_id=kept["id"], input=[user("two")])
        older = await completed_turn(ws, model="echo", previous_response_id=kept["id"], input=[])
        assert output_text(older) == "one"


async def test_concurrent_forks_of_one_parent_keep_separate_contexts(make_server: ServerFactory) -> None:
    server = make_server(scripted={"ttft_s": 0.2})
    async with connect(server.ws_url) as ws:
        parent = completed(await turn(ws, store=False, input="parent says hi", stream_id="main"))
        for lane in ("f1", "f2", "f3"):
            await send_create(
                ws, model="echo", store=False, previous_response_id=parent["id"], input=[user(lane)], stream_id=lane
            )
        events = await collect(ws, count_ends(3))
        forks = {lane: completed(lane_events) for lane, lane_events in by_lane(events).items()}
        assert {lane: output_text(response) for lane, response in forks.items()} == {"f1": "f1", "f2": "f2", "f3": "f3"}
        assert len({response["usage"]["input_tokens"] for response in forks.values()}) == 1

        # Each fork continues its own branch, and the parent's lane still continues the parent.
        for lane in ("f1", "f2"):
            branch = completed(
                await turn(
                    ws, model="echo", store=False, previous_response_id=forks[lane]["id"], input=[], stream_id=lane
                )
            )
            assert output_text(branch) == lane
        main = completed(
            await turn(ws, model="echo", store=False, previous_response_id=parent["id"], input=[], stream_id="main")
        )
        assert output_text(main) == "parent says hi"


# -- a client that sends and does not read --------------------------------------------------------------------------


async def test_a_client_flooding_refused_events_unread_gets_every_answer_or_a_close_1008(
    shared_server: RunningServer,
) -> None:
    """Each refused create gets its one error, in order, also once the connection's outbox is full (the client is
    not reading); past the bound of answers waiting for room the connection is closed with 1008 after the answers
    already queued, never left open with a create unanswered (docs/resilience.md)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader: little room on its side
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (shared_server.host, shared_server.port))
    reader, writer = await raw_upgrade(shared_server, sock=sock)
    count = 6000
    lanes = [f"s{n}" for n in range(count)]
    events = [
        {"type": "response.create", "model": "m", "input": 5, "stream_id": lane}
        if n % 2
        else {"type": "x" * 3000, "stream_id": lane}  # a large error each: the buffers fill with few of them
        for n, lane in enumerate(lanes)
    ]

    async def flood() -> None:
        for event in events:
            writer.write(masked_frame(OP_TEXT, json.dumps(event).encode()))
            await writer.drain()

    flooding = asyncio.create_task(flood())
    # Not reading while the flood goes out: it ends, or stalls once the server stops reading (the close).
    await asyncio.wait({flooding}, timeout=RECEIVE_TIMEOUT_S)
    answered: list[str] = []
    close: RawFrame | None = None
    try:
        while len(answered) < count:
            try:
                async with asyncio.timeout(RECEIVE_TIMEOUT_S):
                    frame = await read_frame(reader)
            except TimeoutError:
                pytest.fail(f"{count - len(answered)} events left unanswered on a connection left open")
            if frame.opcode == OP_CLOSE:
                close = frame
                break
            assert frame.opcode == OP_TEXT
            answer = json.loads(frame.payload)
            assert answer["type"] == "error", answer
            answered.append(answer["stream_id"])
    finally:
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)
        writer.close()
    assert answered == lanes[: len(answered)]  # each once, in order, none skipped
    if close is not None:
        assert struct.unpack("!H", close.payload[:2])[0] == 1008
        assert b"not reading" in close.payload[2:]
    else:
        assert len(answered) == count
