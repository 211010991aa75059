"""Reading ``response.steer`` and building ``response.steer.failed``, in process."""

from __future__ import annotations

import pytest

from tether.protocol.steer import known_error_code, read_steer, steer_accepted, steer_failed, steer_items, steer_pending
from tether.types import JSONObject


@pytest.mark.parametrize(
    "steering_input",
    [
        "go on",
        [{"role": "user", "content": "go on"}],
        [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go on"}]}],
        [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}, {"type": "input_file"}]}],
    ],
)
def test_the_shapes_the_api_accepts_are_valid(steering_input: object) -> None:
    request = read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": steering_input})
    assert request.problem is None
    assert request.previous_response_id == "resp_a"
    assert request.input == steering_input


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"input": "x"}, "previous_response_id"),
        ({"previous_response_id": "resp_a", "input": "x", "stream_id": "a"}, "stream_id"),
        ({"previous_response_id": "resp_a", "input": "x", "model": "m"}, "'model'"),
        ({"previous_response_id": "resp_a", "input": [{"role": "developer", "content": "x"}]}, "input[0]"),
        ({"previous_response_id": "resp_a", "input": {"role": "user"}}, "non-empty"),
    ],
)
def test_an_invalid_event_says_what_is_wrong(body: JSONObject, says: str) -> None:
    request = read_steer({"type": "response.steer", **body})
    assert request.problem is not None
    assert says in request.problem


def test_the_failure_returns_the_input_and_names_the_lane_only_when_given() -> None:
    request = read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": "x"})
    failed = steer_failed(request, "response_not_found", "gone", lane=None)
    assert failed == {
        "type": "response.steer.failed",
        "sequence_number": 0,
        "error": {"code": "response_not_found", "message": "gone", "type": "invalid_request_error"},
        "steer": {"input": "x", "previous_response_id": "resp_a"},
    }
    assert steer_failed(request, "steering_not_supported", "no", lane="side")["stream_id"] == "side"


def test_the_answers_carry_the_steer_id_and_the_lane() -> None:
    request = read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": "x"})
    assert steer_accepted("steer_1", "resp_a", lane="side") == {
        "type": "response.steer.accepted",
        "sequence_number": 0,
        "steer": {"id": "steer_1", "previous_response_id": "resp_a"},
        "stream_id": "side",
    }
    stub = {"type": "function_call_output", "call_id": "call_1", "name": "lookup"}
    pending = steer_pending("steer_1", "resp_a", "waiting_for_required_input", [stub], lane=None)
    assert pending == {
        "type": "response.steer.pending",
        "sequence_number": 0,
        "reason": "waiting_for_required_input",
        "required_input": [stub],
        "steer": {"id": "steer_1", "previous_response_id": "resp_a"},
    }
    failed = steer_failed(request, "successor_creation_failed", "no", lane=None, steer="steer_1")
    assert failed["steer"] == {"id": "steer_1", "input": "x", "previous_response_id": "resp_a"}


def test_steering_input_becomes_the_items_a_response_create_would_read() -> None:
    assert steer_items("go on") == [{"type": "message", "role": "user", "content": "go on"}]
    parts = [{"type": "input_text", "text": "go on"}]
    assert steer_items([{"role": "user", "content": parts}]) == [{"type": "message", "role": "user", "content": parts}]


def test_an_upstream_code_tether_does_not_know_becomes_steering_not_supported() -> None:
    assert known_error_code("too_many_pending_steers") == "too_many_pending_steers"
    assert known_error_code("brand_new_code") == "steering_not_supported"
    assert known_error_code(None) == "steering_not_supported"
