"""ResponseTracker: exactly-once delivery across resumes and replays (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from tether.client import APIError, FunctionCall, TextDelta, TurnReset
from tether.client.tracker import ResponseTracker
from tether.protocol.interrupted import interrupted_events
from tether.types import JSONObject


def created(response_id: str, sequence: int = 0, token: str | None = "tok") -> JSONObject:
    response: dict[str, Any] = {"id": response_id, "status": "in_progress", "output": []}
    if token is not None:
        response["tether:resume_token"] = token
    return {"type": "response.created", "sequence_number": sequence, "response": response}


def text(sequence: int, delta: str) -> JSONObject:
    return {
        "type": "response.output_text.delta",
        "sequence_number": sequence,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": delta,
    }


def completed(sequence: int, response_id: str = "resp_1") -> JSONObject:
    response = {"id": response_id, "status": "completed", "output": []}
    return {"type": "response.completed", "sequence_number": sequence, "response": response}


def feed_all(tracker: ResponseTracker, events: list[JSONObject]) -> list[Any]:
    return [delta for event in events for delta in tracker.feed(event)]


def test_a_replay_from_zero_delivers_only_what_was_not_seen() -> None:
    tracker = ResponseTracker()
    first = feed_all(tracker, [created("resp_1"), text(1, "Hel"), text(2, "lo")])
    assert tracker.response_id == "resp_1"
    assert tracker.resume_token == "tok"
    assert tracker.delivered == 2
    again = feed_all(tracker, [created("resp_1"), text(1, "Hel"), text(2, "lo"), text(3, "!"), completed(4)])
    assert [delta.text for delta in first + again if isinstance(delta, TextDelta)] == ["Hel", "lo", "!"]
    assert tracker.done
    assert tracker.terminal_type == "response.completed"


def test_a_resume_after_n_continues_seamlessly() -> None:
    tracker = ResponseTracker("resp_1", "tok")
    feed_all(tracker, [created("resp_1"), text(1, "a")])
    deltas = feed_all(tracker, [text(2, "b"), completed(3)])
    assert [delta.sequence_number for delta in deltas if isinstance(delta, TextDelta)] == [2]


def test_another_response_id_resets_the_turn() -> None:
    tracker = ResponseTracker()
    feed_all(tracker, [created("resp_1"), text(1, "first try")])
    deltas = feed_all(tracker, [created("resp_2", token=None), text(1, "second")])
    assert isinstance(deltas[0], TurnReset)
    assert deltas[0].response_id == "resp_2"
    assert [delta.text for delta in deltas if isinstance(delta, TextDelta)] == ["second"]
    assert tracker.response_id == "resp_2"
    assert tracker.resume_token is None


def test_a_request_error_raises_and_an_in_stream_error_is_kept() -> None:
    tracker = ResponseTracker()
    refusal = {"type": "error", "status": 400, "error": {"code": "previous_response_not_found", "message": "gone"}}
    with pytest.raises(APIError) as refused:
        tracker.feed(refusal)
    assert refused.value.code == "previous_response_not_found"
    assert not refused.value.retryable

    flat = {"type": "error", "code": "server_error", "message": "boom", "param": None, "sequence_number": 3}
    feed_all(tracker, [created("resp_1"), flat])
    assert tracker.stream_error is not None
    assert tracker.stream_error.code == "server_error"
    tracker.begin_attempt()
    assert tracker.stream_error is None


def test_function_calls_come_whole_when_their_item_is_done() -> None:
    tracker = ResponseTracker()
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": '{"a": 1}'}
    events = [
        created("resp_1"),
        {
            "type": "response.output_item.added",
            "sequence_number": 1,
            "output_index": 0,
            "item": {**item, "arguments": ""},
        },
        {"type": "response.function_call_arguments.delta", "sequence_number": 2, "delta": '{"a": 1}'},
        {"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": item},
        {"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": item},
    ]
    [call] = feed_all(tracker, events)
    assert isinstance(call, FunctionCall)
    assert call.parsed_arguments() == {"a": 1}
    assert call.output("ok") == {"type": "function_call_output", "call_id": "call_1", "output": "ok"}


def test_an_interrupted_generation_is_restarted_as_a_new_response() -> None:
    tracker = ResponseTracker()
    feed_all(tracker, [created("resp_1"), text(1, "Hel")])
    feed_all(tracker, interrupted_events("resp_1", {"id": "resp_1", "status": "in_progress"}, 2))
    assert tracker.done
    assert tracker.interrupted

    tracker.restart()
    assert not tracker.done
    again = feed_all(tracker, [created("resp_2"), text(1, "Hello"), completed(2, "resp_2")])
    assert isinstance(again[0], TurnReset)
    assert [delta.text for delta in again if isinstance(delta, TextDelta)] == ["Hello"]
    assert tracker.done
    assert not tracker.interrupted
