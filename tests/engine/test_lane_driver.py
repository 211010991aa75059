"""The lane driver in process: client messages in, each lane's events in order into the outbox, no socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import pytest

from tether.engine.engine import Engine
from tether.engine.lane_driver import CLOSE_NORMAL, MAX_WAITING_ANSWERS, OUTBOX_SIZE, Close, LaneDriver
from tether.engine.stream_log import StreamLog
from tether.protocol.events import OutgoingEvent, StreamEvent
from tether.protocol.lanes import LaneLimits
from tether.protocol.steer import SteerAnswer, SteerFailedEvent

from .support import TENANT, GatedProvider

BOUND_S = 10.0


def create(lane: str | None = None, **fields: object) -> str:
    event: dict[str, object] = {"type": "response.create", "model": "gated", "input": "hi", **fields}
    if lane is not None:
        event["stream_id"] = lane
    return orjson.dumps(event).decode()


@pytest.fixture
async def driver(engine: Engine) -> AsyncIterator[LaneDriver]:
    driver = LaneDriver(engine, TENANT, LaneLimits(max_in_flight=4, max_named_lanes=4, max_queued=4), 3600.0)
    driver.start()
    yield driver
    await driver.aclose()


async def next_out(driver: LaneDriver) -> OutgoingEvent | SteerAnswer | Close:
    return await asyncio.wait_for(driver.outbox.get(), BOUND_S)


async def until_closed(log: StreamLog) -> list[StreamEvent]:
    return [event async for event in log.follow(-1)]


async def until_ends(driver: LaneDriver, count: int) -> list[OutgoingEvent]:
    """Everything the driver writes until ``count`` answers have ended (a terminal event or a bare error)."""
    out: list[OutgoingEvent] = []
    ended = 0
    while ended < count:
        item = await next_out(driver)
        assert not isinstance(item, Close)
        assert item["type"] != "response.steer.failed"
        assert item["type"] != "response.steer.accepted"
        assert item["type"] != "response.steer.pending"
        out.append(item)
        if item["type"] in ("response.completed", "response.failed", "response.incomplete") or (
            item["type"] == "error" and "sequence_number" not in item
        ):
            ended += 1
    return out


async def test_turns_on_one_lane_run_one_after_the_other(driver: LaneDriver, gated: GatedProvider) -> None:
    driver.receive(create("a", input="first"))
    driver.receive(create("a", input="second"))
    await gated.arrived(1)
    assert driver.lanes.queued == 1  # the second waits for the first
    gated.gate.set()
    out = await until_ends(driver, 2)
    created = [event for event in out if event["type"] == "response.created"]
    assert len(created) == 2
    first_end = next(i for i, event in enumerate(out) if event["type"] == "response.completed")
    assert out.index(created[1]) > first_end  # nothing of the second before the first ended
    assert all(event.get("stream_id") == "a" for event in out)
    assert [request.new_items[-1]["content"] for request in gated.requests] == ["first", "second"]


async def test_turns_on_different_lanes_run_at_once(driver: LaneDriver, gated: GatedProvider) -> None:
    driver.receive(create("a"))
    driver.receive(create("b"))
    await asyncio.wait_for(gated.arrived(2), BOUND_S)  # both reached the model before either finished
    gated.gate.set()
    out = await until_ends(driver, 2)
    for lane in ("a", "b"):
        numbers = [event.get("sequence_number") for event in out if event.get("stream_id") == lane]
        assert numbers == list(range(len(numbers)))  # each lane's events in its own order


@pytest.mark.parametrize(
    ("message", "code", "lane"),
    [
        ("not json", "invalid_json", None),
        ('{"type": "response.inject", "stream_id": "a"}', "unsupported_event", "a"),
        ('{"type": ["response.create"]}', "invalid_event_type", None),
        ('{"stream_id": "b"}', "missing_required_parameter", "b"),
        ('{"type": "response.create", "stream_id": "c"}', "missing_required_parameter", "c"),
    ],
)
async def test_a_bad_message_gets_one_error_labelled_with_its_lane(
    driver: LaneDriver, message: str, code: str, lane: str | None
) -> None:
    driver.receive(message)
    error = await next_out(driver)
    assert not isinstance(error, Close)
    assert error["type"] == "error"
    assert error["error"]["code"] == code
    assert error.get("stream_id") == lane
    assert driver.outbox.empty()


async def test_a_resume_past_the_end_is_refused(driver: LaneDriver, gated: GatedProvider) -> None:
    gated.gate.set()
    driver.receive(create())
    out = await until_ends(driver, 1)
    last = out[-1]
    assert last["type"] == "response.completed"
    resume = {"type": "tether:response.resume", "response_id": last["response"]["id"],
              "starting_after": last["sequence_number"]}  # fmt: skip
    driver.receive(orjson.dumps(resume).decode())
    error = await next_out(driver)
    assert not isinstance(error, Close)
    assert error["type"] == "error"
    assert error["error"]["code"] == "nothing_to_resume"


async def test_the_age_limit_refuses_new_turns_lets_running_ones_finish_then_closes(
    engine: Engine, gated: GatedProvider
) -> None:
    driver = LaneDriver(engine, TENANT, LaneLimits(), max_age_s=0.0)
    driver.receive(create("a"))
    await gated.arrived(1)
    driver.start()
    try:
        await asyncio.wait_for(driver.aged_out.wait(), BOUND_S)
        driver.receive(create("b"))
        gated.gate.set()
        out: list[OutgoingEvent | SteerAnswer | Close] = []
        while not out or not isinstance(out[-1], Close):
            out.append(await next_out(driver))
    finally:
        await driver.aclose()
    close = out[-1]
    assert close == Close(CLOSE_NORMAL, "connection age limit reached")
    events = [item for item in out if not isinstance(item, Close)]
    errors = [event for event in events if event["type"] == "error"]
    assert [(error["error"]["code"], error.get("stream_id")) for error in errors] == [
        ("websocket_connection_limit_reached", "b"),  # the new turn, refused
        ("websocket_connection_limit_reached", None),  # the connection's own notice, after the running turn
    ]
    assert events[-2]["type"] == "response.completed"
    assert events[-1] is errors[-1]
    assert len(gated.requests) == 1


async def test_closing_stops_following_but_the_engine_owned_turn_goes_on(engine: Engine, gated: GatedProvider) -> None:
    driver = LaneDriver(engine, TENANT, LaneLimits(), 3600.0)
    driver.start()
    driver.receive(create("a", store=False))
    driver.receive(create("a"))  # queued behind the first: dropped with the connection
    await gated.arrived(1)
    running = next(iter(engine.live.running()))
    await driver.aclose()
    assert driver.tasks == set()
    assert driver.lanes.queued == 0
    gated.gate.set()
    events = await asyncio.wait_for(until_closed(running.log), BOUND_S)
    assert events[-1]["type"] == "response.completed"
    assert len(gated.requests) == 1


async def steer_answer(driver: LaneDriver, event: dict[str, object]) -> SteerFailedEvent:
    driver.receive(orjson.dumps({"type": "response.steer", **event}).decode())
    answer = await next_out(driver)
    assert not isinstance(answer, Close)
    assert answer["type"] == "response.steer.failed", answer
    return answer


async def test_steering_a_response_in_flight_is_not_supported_and_the_turn_goes_on(
    driver: LaneDriver, gated: GatedProvider
) -> None:
    driver.receive(create("side"))
    created = await next_out(driver)
    assert not isinstance(created, Close)
    assert created["type"] == "response.created"
    target = created["response"]["id"]
    in_progress = await next_out(driver)
    assert not isinstance(in_progress, Close)
    assert in_progress["type"] == "response.in_progress"
    await gated.arrived(1)
    failed = await steer_answer(driver, {"previous_response_id": target, "input": "go faster"})
    assert failed["error"] == {
        "code": "steering_not_supported",
        "message": f"Response '{target}' cannot be steered: tether relays steering input only to openai-responses "
        "upstreams in WebSocket mode, for responses generated on this node for this connection.",
        "type": "invalid_request_error",
    }
    assert failed["steer"] == {"input": "go faster", "previous_response_id": target}
    assert failed["stream_id"] == "side"  # the steered response's lane
    gated.gate.set()
    assert (await until_ends(driver, 1))[-1]["type"] == "response.completed"
    after = await steer_answer(driver, {"previous_response_id": target, "input": "go faster"})
    assert after["error"]["code"] == "response_already_completed"
    assert after["stream_id"] == "side"


@pytest.mark.parametrize(
    "event",
    [
        {"previous_response_id": "resp_unknown", "input": "x"},
        {"previous_response_id": "resp_unknown", "input": [{"role": "user", "content": "x"}]},
    ],
)
async def test_steering_a_response_this_connection_does_not_run_is_not_found(
    driver: LaneDriver, event: dict[str, object]
) -> None:
    failed = await steer_answer(driver, event)
    assert failed["error"]["code"] == "response_not_found"
    assert "stream_id" not in failed
    assert failed["sequence_number"] == 0


@pytest.mark.parametrize(
    "event",
    [
        {"input": "x"},
        {"previous_response_id": 5, "input": "x"},
        {"previous_response_id": "resp_x"},
        {"previous_response_id": "resp_x", "input": ""},
        {"previous_response_id": "resp_x", "input": []},
        {"previous_response_id": "resp_x", "input": [{"role": "assistant", "content": "x"}]},
        {"previous_response_id": "resp_x", "input": [{"type": "function_call_output", "call_id": "c", "output": ""}]},
        {"previous_response_id": "resp_x", "input": [{"role": "user", "content": [{"type": "output_text"}]}]},
        {"previous_response_id": "resp_x", "input": "x", "stream_id": "a"},
        {"previous_response_id": "resp_x", "input": "x", "model": "m"},
    ],
)
async def test_an_invalid_steer_is_invalid_input(driver: LaneDriver, event: dict[str, object]) -> None:
    failed = await steer_answer(driver, event)
    assert failed["error"]["code"] == "invalid_input"
    assert failed["steer"]["input"] == event.get("input")
    assert driver.outbox.empty()


async def test_a_steer_answer_is_not_lost_to_a_full_outbox(driver: LaneDriver) -> None:
    """A client on a slow link has the outbox full while a response streams: its steer still gets its one answer,
    after what was queued before it."""
    filler = cast(OutgoingEvent, {"type": "response.output_text.delta", "delta": "x"})
    for _ in range(OUTBOX_SIZE):
        driver.outbox.put_nowait(filler)
    driver.receive(orjson.dumps({"type": "response.steer", "previous_response_id": "resp_x", "input": "x"}).decode())
    for _ in range(OUTBOX_SIZE):
        assert await next_out(driver) == filler
    answer = await next_out(driver)
    assert not isinstance(answer, Close)
    assert answer["type"] == "response.steer.failed"
    assert answer["error"]["code"] == "response_not_found"


async def test_steer_answers_waiting_for_room_keep_their_order_and_go_with_the_connection(driver: LaneDriver) -> None:
    filler = cast(OutgoingEvent, {"type": "response.output_text.delta", "delta": "x"})
    for _ in range(OUTBOX_SIZE):
        driver.outbox.put_nowait(filler)
    for n in range(3):
        steer = {"type": "response.steer", "previous_response_id": f"resp_{n}", "input": "x"}
        driver.receive(orjson.dumps(steer).decode())
    await next_out(driver)  # room for one: the first answer waiting, not a later one, takes it
    driver.receive(orjson.dumps({"type": "response.steer", "previous_response_id": "resp_3", "input": "x"}).decode())
    for _ in range(OUTBOX_SIZE - 1):
        assert await next_out(driver) == filler
    answers: list[Any] = [await next_out(driver) for _ in range(4)]
    assert [answer["steer"]["previous_response_id"] for answer in answers if not isinstance(answer, Close)] == [
        "resp_0",
        "resp_1",
        "resp_2",
        "resp_3",
    ]
    for _ in range(OUTBOX_SIZE):
        driver.outbox.put_nowait(filler)
    driver.receive(orjson.dumps({"type": "response.steer", "previous_response_id": "resp_4", "input": "x"}).decode())
    await driver.aclose()  # the answer waiting for room is given up with the connection, not left as a task
    assert not driver._answering


async def test_a_refused_create_is_answered_also_when_the_outbox_is_full(driver: LaneDriver) -> None:
    """A create refused while the outbox is full (a response streams faster than the client reads) still gets its
    one error, after what was queued before it and in order with the other answers waiting."""
    filler = cast(OutgoingEvent, {"type": "response.output_text.delta", "delta": "x"})
    for _ in range(OUTBOX_SIZE):
        driver.outbox.put_nowait(filler)
    for n in range(3):
        driver.receive(orjson.dumps({"type": "response.create", "model": 5, "stream_id": f"lane_{n}"}).decode())
    driver.receive(orjson.dumps({"type": "response.steer", "previous_response_id": "resp_x", "input": "x"}).decode())
    for _ in range(OUTBOX_SIZE):
        assert await next_out(driver) == filler
    answers: list[Any] = [await next_out(driver) for _ in range(4)]
    assert [answer["type"] for answer in answers] == ["error", "error", "error", "response.steer.failed"]
    assert [answer.get("stream_id") for answer in answers[:3]] == ["lane_0", "lane_1", "lane_2"]
    assert all(answer["error"]["code"] == "invalid_type" for answer in answers[:3])
    assert driver.outbox.empty()
    assert not driver.overflowed.is_set()


async def test_past_the_bound_of_waiting_answers_the_connection_is_to_close(driver: LaneDriver) -> None:
    filler = cast(OutgoingEvent, {"type": "response.output_text.delta", "delta": "x"})
    for _ in range(OUTBOX_SIZE):
        driver.outbox.put_nowait(filler)
    for n in range(MAX_WAITING_ANSWERS):
        driver.receive(orjson.dumps({"type": "response.create", "model": 5, "stream_id": f"lane_{n}"}).decode())
    assert not driver.overflowed.is_set()
    driver.receive(orjson.dumps({"type": "response.create", "model": 5, "stream_id": "one_too_many"}).decode())
    assert driver.overflowed.is_set()
    await driver.aclose()
    assert not driver._answering
