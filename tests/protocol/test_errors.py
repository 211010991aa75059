"""The protocol's errors in their three wire shapes, in process."""

from __future__ import annotations

from typing import cast

import pytest

from tether.protocol.errors import (
    ErrorType,
    ProtocolError,
    invalid,
    nothing_to_resume,
    previous_response_not_found,
    response_not_found,
    server_error,
    sse_error_shape,
)
from tether.protocol.events import ErrorEvent

LIMITED = ProtocolError(
    429, "rate_limit_exceeded", "Slow down.", error_type=ErrorType.RATE_LIMIT, headers={"retry-after": "2"}
)
BODY = {"message": "Slow down.", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}


def test_the_http_shape_is_an_envelope() -> None:
    error = invalid("invalid_value", "Invalid value for 'temperature'.", "temperature")
    assert error.status == 400
    assert error.http_body() == {
        "error": {
            "message": "Invalid value for 'temperature'.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }
    assert LIMITED.http_body() == {"error": BODY}


def test_the_sse_shape_is_a_flat_error_event() -> None:
    assert LIMITED.sse_event(7) == {
        "type": "error",
        "code": "rate_limit_exceeded",
        "message": "Slow down.",
        "param": None,
        "sequence_number": 7,
    }


def test_the_websocket_shape_nests_the_error_with_its_status_and_headers() -> None:
    assert LIMITED.ws_event("lane-1", 3) == {
        "type": "error",
        "status": 429,
        "error": {**BODY, "headers": {"retry-after": "2"}},
        "stream_id": "lane-1",
        "sequence_number": 3,
    }
    assert server_error().ws_event() == {"type": "error", "status": 500, "error": server_error().body()}


def test_a_logged_websocket_error_replays_over_sse_in_the_flat_shape() -> None:
    assert sse_error_shape(LIMITED.ws_event("lane-1", 4)) == LIMITED.sse_event(4)
    assert sse_error_shape(cast(ErrorEvent, {"type": "error"})) == {
        "type": "error",
        "code": None,
        "message": None,
        "param": None,
        "sequence_number": None,
    }


@pytest.mark.parametrize(
    ("error", "status", "code", "param", "error_type"),
    [
        (
            previous_response_not_found("resp_x"),
            400,
            "previous_response_not_found",
            "previous_response_id",
            "invalid_request_error",
        ),
        (response_not_found("resp_x"), 404, "response_not_found", "response_id", "invalid_request_error"),
        (nothing_to_resume("resp_x", 9, 9), 400, "nothing_to_resume", "starting_after", "invalid_request_error"),
        (server_error(), 500, "server_error", None, "server_error"),
    ],
)
def test_the_named_errors(error: ProtocolError, status: int, code: str, param: str | None, error_type: str) -> None:
    assert (error.status, error.code, error.param, str(error.error_type)) == (status, code, param, error_type)
    assert error.message.endswith(".")
    assert str(error) == error.message


def test_the_id_is_in_the_message_and_the_repr_is_short() -> None:
    assert "'resp_x'" in previous_response_not_found("resp_x").message
    assert "ended at sequence number 9; there is nothing after 9" in nothing_to_resume("resp_x", 9, 9).message
    assert repr(LIMITED) == "ProtocolError(429, 'rate_limit_exceeded', 'Slow down.', param=None)"


def test_headers_default_to_none_and_are_not_shared() -> None:
    first, second = invalid("a", "A."), invalid("b", "B.")
    first.headers["x"] = "1"
    assert second.headers == {}
    assert "headers" not in second.ws_event()["error"]
