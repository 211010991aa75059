"""A response as far as its events have gone (what GET answers while it is in flight), in process."""

from __future__ import annotations

from typing import cast

from tether.protocol.events import StreamEvent
from tether.protocol.model_events import Finish, TextDelta, ToolCallDelta, Usage
from tether.protocol.progress import response_so_far
from tether.protocol.response import response_object
from tether.protocol.stream import ResponseStream
from tether.types import JSONObject


def background_stream() -> ResponseStream:
    response = response_object(
        response_id="resp_1",
        created_at=1,
        status="queued",
        model="m",
        params={"background": True},
        output=[],
        previous_response_id=None,
        store=True,
    )
    response["tether:resume_token"] = "secret"
    return ResponseStream(response)


def test_nothing_before_the_response_is_created() -> None:
    assert response_so_far([]) is None


def test_a_background_response_is_created_queued_then_runs() -> None:
    stream = background_stream()
    created, started = stream.start()
    queued = response_so_far([created])
    assert queued is not None
    assert (queued["status"], queued["background"], queued["output"]) == ("queued", True, [])
    assert "tether:resume_token" not in queued
    running = response_so_far([created, started])
    assert running is not None
    assert running["status"] == "in_progress"


def test_in_flight_the_output_is_the_items_finished_so_far() -> None:
    stream = background_stream()
    events: list[StreamEvent] = stream.start()
    events += stream.feed(TextDelta("hello"))
    snapshot = response_so_far(events)
    assert snapshot is not None
    assert snapshot["output"] == []
    events += stream.feed(ToolCallDelta(call_id="call_1", name="lookup", arguments="{}"))  # closes the message
    snapshot = response_so_far(events)
    assert snapshot is not None
    assert [item["type"] for item in snapshot["output"]] == ["message"]
    assert snapshot["output"][0]["content"][0]["text"] == "hello"


def test_an_ended_response_is_its_terminal_events_response() -> None:
    stream = background_stream()
    events: list[StreamEvent] = stream.start()
    events += stream.feed(TextDelta("hello"))
    events += stream.feed(Finish(usage=Usage(input_tokens=1, output_tokens=1)))
    snapshot = response_so_far(events)
    assert snapshot is not None
    final = cast(JSONObject, events[-1])["response"]
    assert snapshot == {key: value for key, value in final.items() if key != "tether:resume_token"}
    assert snapshot["status"] == "completed"


def test_a_cancelled_response_ends_in_response_failed_saying_cancelled() -> None:
    stream = background_stream()
    events: list[StreamEvent] = stream.start()
    events += stream.feed(TextDelta("hel"))
    ending = stream.cancel()
    assert [event["type"] for event in ending][-1] == "response.failed"
    events += ending
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    snapshot = response_so_far(events)
    assert snapshot is not None
    assert (snapshot["status"], snapshot["error"]) == ("cancelled", None)
    assert snapshot["output"][0]["status"] == "incomplete"  # what was produced is kept, marked unfinished
