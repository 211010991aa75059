"""The terminal events of an interrupted turn, as strict clients read them."""

from __future__ import annotations

import pytest
from openai.types.responses import ResponseFailedEvent
from pydantic import ValidationError

from tether.protocol.interrupted import GENERATION_INTERRUPTED, interrupted_events, is_interrupted
from tether.protocol.stream import response_error, response_error_code

CREATED = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "in_progress",
    "model": "m",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}


def test_the_openai_sdk_validates_an_interrupted_turns_events() -> None:
    error, failed = interrupted_events("resp_1", CREATED, 7)
    assert error["error"]["code"] == GENERATION_INTERRUPTED  # an error event's code is free-form
    parsed = ResponseFailedEvent.model_validate(failed)
    assert parsed.response.error is not None
    assert parsed.response.error.code == "server_error"
    assert is_interrupted(failed)


def test_the_sdk_refuses_a_code_outside_the_closed_set() -> None:
    """Why ``response_error`` maps: the raw code would fail a strict client's validation."""
    _, failed = interrupted_events("resp_1", CREATED, 7)
    failed["response"]["error"] = {"code": GENERATION_INTERRUPTED, "message": "x"}
    with pytest.raises(ValidationError):
        ResponseFailedEvent.model_validate(failed)


@pytest.mark.parametrize(
    ("code", "wire_code"), [("server_error", "server_error"), ("rate_limit_exceeded", "rate_limit_exceeded")]
)
def test_codes_of_the_closed_set_pass_unchanged(code: str, wire_code: str) -> None:
    error = response_error(code, "m")
    assert error == {"code": wire_code, "message": "m"}
    assert response_error_code(error) == code


def test_tethers_own_code_is_kept_beside_server_error() -> None:
    error = response_error("commit_failed", "m")
    assert error["code"] == "server_error"
    assert response_error_code(error) == "commit_failed"
