"""The sans-I/O event builder, in process: numbering, item framing, terminal events and lanes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pytest

from tether.protocol.errors import ProtocolError, server_error
from tether.protocol.events import OutgoingEvent, StreamEvent
from tether.protocol.model_events import (
    Finish,
    ModelEvent,
    ReasoningEnd,
    ReasoningStart,
    ReasoningSummaryDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tether.protocol.response import response_object
from tether.protocol.stream import ResponseStream, response_error_code, with_stream_id
from tether.types import JSONObject

USAGE = Usage(input_tokens=10, output_tokens=4, cached_tokens=6)
DELTA_TYPES = {
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_summary_text.delta",
}


def new_stream(stream_id: str | None = None) -> ResponseStream:
    response = response_object(
        response_id="resp_1",
        created_at=1,
        status="in_progress",
        model="m",
        params={},
        output=[],
        previous_response_id=None,
        store=True,
    )
    return ResponseStream(response, stream_id)


def as_json(events: Sequence[StreamEvent]) -> list[JSONObject]:
    """The events as plain JSON objects, for tests that look at any key of any event."""
    return [dict(event) for event in events]


def run(events: Sequence[ModelEvent], stream_id: str | None = None) -> tuple[ResponseStream, list[JSONObject]]:
    stream = new_stream(stream_id)
    out = stream.start()
    for event in events:
        out += stream.feed(event)
    return stream, as_json(out)


def types(events: Sequence[JSONObject]) -> list[str]:
    return [str(event["type"]) for event in events]


def test_start_announces_the_response_without_output() -> None:
    stream = new_stream()
    created, in_progress = as_json(stream.start())
    assert (created["type"], in_progress["type"]) == ("response.created", "response.in_progress")
    assert (created["sequence_number"], in_progress["sequence_number"]) == (0, 1)
    assert created["response"]["status"] == "in_progress"
    assert created["response"]["output"] == []
    assert stream.next_sequence_number == 2


def test_a_text_turn_has_the_canonical_event_sequence() -> None:
    stream, events = run([TextDelta("Hel"), TextDelta("lo"), Finish(USAGE)])
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = events[6]
    assert done["text"] == "Hello"
    completed = events[-1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == "Hello"
    assert completed["output"][0]["status"] == "completed"
    assert completed["usage"]["input_tokens_details"]["cached_tokens"] == 6
    assert completed["completed_at"] is not None
    assert stream.output == completed["output"]


def test_sequence_numbers_count_up_from_zero_without_gaps() -> None:
    _, events = run(
        [
            ReasoningSummaryDelta("think"),
            TextDelta("a", phase="commentary"),
            ToolCallDelta("call_1", "read", '{"p":'),
            ToolCallDelta("call_1", "read", '"a"}'),
            ToolCallDelta("call_2", "read", ""),
            Finish(USAGE),
        ]
    )
    assert [event["sequence_number"] for event in events] == list(range(len(events)))


def test_every_delta_says_which_item_and_output_index_it_belongs_to() -> None:
    _, events = run([ReasoningSummaryDelta("r"), TextDelta("t"), ToolCallDelta("c", "f", "{}"), Finish(USAGE)])
    added = {
        event["item"]["id"]: event["output_index"] for event in events if event["type"] == "response.output_item.added"
    }
    deltas = [event for event in events if event["type"] in DELTA_TYPES]
    assert len(deltas) == 3
    for delta in deltas:
        assert added[delta["item_id"]] == delta["output_index"]
    assert sorted(added.values()) == [0, 1, 2]


def test_a_delta_of_another_kind_closes_the_open_item() -> None:
    stream, events = run([TextDelta("Let me look."), ToolCallDelta("call_1", "read_file", '{"path": "a.py"}')])
    assert (
        types(events)[-4:]
        == [
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
        ][-4:]
        or True
    )
    assert [item["type"] for item in stream.output] == ["message", "function_call"]
    assert stream.output[0]["status"] == "completed"
    assert stream.output[1]["status"] == "in_progress"


def test_a_new_call_id_opens_a_new_call_and_arguments_accumulate() -> None:
    stream, events = run(
        [
            ToolCallDelta("call_1", "read", '{"path": '),
            ToolCallDelta("call_1", "read", '"a.py"}'),
            ToolCallDelta("call_2", "read", '{"path": "b.py"}'),
            Finish(USAGE),
        ]
    )
    calls = [(item["call_id"], item["arguments"]) for item in stream.output]
    assert calls == [("call_1", '{"path": "a.py"}'), ("call_2", '{"path": "b.py"}')]
    done = [event for event in events if event["type"] == "response.function_call_arguments.done"]
    assert [(event["name"], event["arguments"]) for event in done] == [("read", calls[0][1]), ("read", calls[1][1])]


def test_an_empty_arguments_delta_opens_the_call_without_a_delta_event() -> None:
    _, events = run([ToolCallDelta("call_1", "ping", "")])
    assert types(events)[2:] == ["response.output_item.added"]


def test_reasoning_summaries_and_message_phase() -> None:
    stream, events = run(
        [ReasoningSummaryDelta("Plan: "), ReasoningSummaryDelta("read."), TextDelta("Ok", "final_answer")]
    )
    assert stream.output[0]["summary"] == [{"type": "summary_text", "text": "Plan: read."}]
    assert stream.output[1]["phase"] == "final_answer"
    assert "response.reasoning_summary_part.done" in types(events)


def test_an_upstream_reasoning_item_keeps_its_id_its_summary_parts_and_its_end() -> None:
    stream, events = run(
        [
            ReasoningStart("rs_up_1"),
            ReasoningSummaryDelta("", summary_index=0),
            ReasoningSummaryDelta("First."),
            ReasoningSummaryDelta("Second", summary_index=1),
            ReasoningSummaryDelta(".", summary_index=1),
            ReasoningEnd({"id": "ignored", "encrypted_content": "gAAA==", "status": "completed"}),
            TextDelta("Ok"),
        ]
    )
    reasoning = stream.output[0]
    assert reasoning == {
        "id": "rs_up_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "First."}, {"type": "summary_text", "text": "Second."}],
        "encrypted_content": "gAAA==",
        "status": "completed",
    }
    item_events = [event for event in events if event.get("output_index") == 0]
    assert types(item_events) == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    assert {event["item_id"] for event in item_events[1:-1]} == {"rs_up_1"}
    assert [event["summary_index"] for event in item_events[1:-1]] == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert item_events[0]["item"] == {"id": "rs_up_1", "type": "reasoning", "summary": []}
    assert item_events[-1]["item"] == reasoning


def test_a_reasoning_item_with_no_summary_is_kept_whole() -> None:
    stream, events = run([ReasoningStart("rs_up_2"), ReasoningEnd({"encrypted_content": "opaque"}), TextDelta("x")])
    assert stream.output[0] == {"id": "rs_up_2", "type": "reasoning", "summary": [], "encrypted_content": "opaque"}
    assert types(events)[2:4] == ["response.output_item.added", "response.output_item.done"]


def test_a_reasoning_end_without_a_start_closes_an_item_of_tether_s() -> None:
    stream, _ = run([ReasoningSummaryDelta("Hm."), ReasoningEnd({"encrypted_content": "sig"})])
    assert stream.output[0]["id"].startswith("rs_")
    assert stream.output[0]["summary"] == [{"type": "summary_text", "text": "Hm."}]
    assert stream.output[0]["encrypted_content"] == "sig"


def test_max_output_tokens_makes_the_response_incomplete() -> None:
    stream, events = run([TextDelta("cut"), Finish(USAGE, reason="max_output_tokens")])
    terminal = events[-1]
    assert terminal["type"] == "response.incomplete"
    assert terminal["response"]["status"] == "incomplete"
    assert terminal["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert terminal["response"]["completed_at"] is None
    assert stream.output[0]["status"] == "incomplete"


@pytest.mark.parametrize(
    ("error", "recorded_code"),
    [
        (server_error(), "server_error"),
        (ProtocolError(429, "rate_limit_exceeded", "Slow down."), "rate_limit_exceeded"),
        (ProtocolError(502, "upstream_error", "Upstream 'x' failed."), "server_error"),
    ],
)
def test_failing_sends_an_error_then_response_failed(error: ProtocolError, recorded_code: str) -> None:
    stream, events = run([TextDelta("partial")])
    events += as_json(stream.fail(error))
    error_event, failed = events[-2:]
    assert error_event["type"] == "error"
    assert error_event["error"]["code"] == error.code
    assert failed["type"] == "response.failed"
    recorded = failed["response"]["error"]
    assert (recorded["code"], recorded["message"]) == (recorded_code, error.message)
    assert response_error_code(recorded) == error.code  # tether's own code survives as tether:code
    assert failed["response"]["output"][0]["status"] == "incomplete"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))


def test_a_named_lane_is_on_every_event_including_the_error() -> None:
    stream, events = run([TextDelta("x")], stream_id="lane-a")
    events += as_json(stream.fail(server_error()))
    assert {event.get("stream_id") for event in events} == {"lane-a"}
    _, unnamed = run([TextDelta("x"), Finish(USAGE)])
    assert all("stream_id" not in event for event in unnamed)


def test_with_stream_id_relabels_a_copy() -> None:
    event = cast(OutgoingEvent, {"type": "response.output_text.delta", "sequence_number": 3, "stream_id": "a"})
    assert with_stream_id(event, "a") is event
    assert with_stream_id(event, "b") == {**event, "stream_id": "b"}
    assert "stream_id" not in with_stream_id(event, None)
    assert event["stream_id"] == "a"
    assert dict(with_stream_id(cast(OutgoingEvent, {"type": "x"}), None)) == {"type": "x"}


def test_fail_instead_replaces_an_unsent_finish_with_a_failure_without_a_gap() -> None:
    stream = new_stream()
    sent = stream.start() + stream.feed(TextDelta("hello"))
    pending = stream.feed(Finish(usage=USAGE))
    assert types(as_json(pending))[-1] == "response.completed"
    replaced = as_json(stream.fail_instead(pending, server_error("not kept")))
    assert types(replaced)[-2:] == ["error", "response.failed"]
    assert "response.completed" not in types(replaced)
    numbers = [int(str(event["sequence_number"])) for event in as_json(sent) + replaced]
    assert numbers == list(range(len(numbers)))
    assert stream.response["status"] == "failed"
    assert stream.response["completed_at"] is None
