"""``response.steer``: a WebSocket client's input for a response in flight, and the ``response.steer.failed`` that
answers it when the response cannot be steered (sans-I/O).

The event (protocol.md, "Additions as of 2026-12") is ``{"type": "response.steer", "previous_response_id", "input"}``
and nothing else: no ``stream_id`` (the target response decides the lane). ``input`` is a non-empty string, or a
non-empty array of user messages whose fields are only ``type`` (``"message"``), ``role`` and ``content`` (a string,
or ``input_text`` / ``input_image`` / ``input_file`` parts).

The failure returns the input as sent, so the client can carry it into its next ``response.create``. Steering
acknowledgements are not events of any response's stream: they are not in a stream log, are not resumable, and
carry ``sequence_number: 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

from tether.types import JSONObject

STEER_EVENT = "response.steer"
STEER_FAILED_EVENT = "response.steer.failed"

SteerErrorCode = Literal[
    "response_not_found",
    "invalid_input",
    "steering_not_supported",
    "too_many_pending_steers",
    "response_already_completed",
    "response_not_active",
    "successor_creation_failed",
]

_FIELDS = frozenset({"type", "previous_response_id", "input"})
_MESSAGE_FIELDS = frozenset({"type", "role", "content"})
_PART_TYPES = frozenset({"input_text", "input_image", "input_file"})


class SteerError(TypedDict):
    code: SteerErrorCode
    message: str
    type: Literal["invalid_request_error"]


class SteerSubmission(TypedDict):
    input: object
    previous_response_id: str
    id: NotRequired[str]


class SteerFailedEvent(TypedDict):
    type: Literal["response.steer.failed"]
    sequence_number: int
    error: SteerError
    steer: SteerSubmission
    stream_id: NotRequired[str]


@dataclass(frozen=True, slots=True)
class SteerRequest:
    """A ``response.steer`` event as read: ``problem`` says why it is invalid (``None`` when it is valid)."""

    previous_response_id: str
    input: object
    problem: str | None = None


def read_steer(body: JSONObject) -> SteerRequest:
    """Read a ``response.steer`` event; never raises (an invalid one is answered with ``invalid_input``)."""
    target = body.get("previous_response_id")
    request_input = body.get("input")
    previous_response_id = target if isinstance(target, str) else ""
    problem = _problem(body, target, request_input)
    return SteerRequest(previous_response_id, request_input, problem)


def _problem(body: JSONObject, target: object, request_input: object) -> str | None:
    if "stream_id" in body:
        return "'response.steer' takes no 'stream_id': the steered response's lane is used."
    extra = sorted(set(body) - _FIELDS)
    if extra:
        return f"'response.steer' accepts only 'type', 'previous_response_id' and 'input', not {extra[0]!r}."
    if not isinstance(target, str) or not target:
        return "'previous_response_id' must name the response to steer."
    if isinstance(request_input, str):
        return None if request_input else "'input' must not be empty."
    if not isinstance(request_input, list) or not request_input:
        return "'input' must be a non-empty string or a non-empty array of user messages."
    for index, item in enumerate(request_input):
        problem = _message_problem(item)
        if problem is not None:
            return f"'input[{index}]': {problem}"
    return None


def _message_problem(item: object) -> str | None:
    if not isinstance(item, dict):
        return "steering input items must be messages."
    if set(item) - _MESSAGE_FIELDS or item.get("type", "message") != "message":
        return "steering accepts only messages with 'type', 'role' and 'content'."
    if item.get("role") != "user":
        return "steering accepts only messages with the 'user' role."
    content = item.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list) or not all(
        isinstance(part, dict) and part.get("type") in _PART_TYPES for part in content
    ):
        return "'content' must be a string or an array of input_text, input_image and input_file parts."
    return None


def steer_failed(request: SteerRequest, code: SteerErrorCode, message: str, *, lane: str | None) -> SteerFailedEvent:
    """The ``response.steer.failed`` event refusing ``request``, labelled with the target's lane if it has one."""
    event = SteerFailedEvent(
        type="response.steer.failed",
        sequence_number=0,
        error=SteerError(code=code, message=message, type="invalid_request_error"),
        steer=SteerSubmission(input=request.input, previous_response_id=request.previous_response_id),
    )
    if lane is not None:
        event["stream_id"] = lane
    return event
