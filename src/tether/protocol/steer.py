"""``response.steer``: a WebSocket client's input for a response in flight, and the ``response.steer.*`` events that
answer it (sans-I/O).

The event (protocol.md, "Additions as of 2026-12") is ``{"type": "response.steer", "previous_response_id", "input"}``
and nothing else: no ``stream_id`` (the target response decides the lane). ``input`` is a non-empty string, or a
non-empty array of user messages whose fields are only ``type`` (``"message"``), ``role`` and ``content`` (a string,
or ``input_text`` / ``input_image`` / ``input_file`` parts).

``response.steer.accepted`` says tether (and the upstream behind it) owns the input, with the steer's id;
``response.steer.pending`` says it waits for the client's tool output (it is prepended to the explicit continuation);
``response.steer.failed`` returns the input as sent, so the client can carry it into its next ``response.create``
(with the steer's id when it had been accepted). Steering acknowledgements are not events of any response's stream:
they are not in a stream log, are not resumable, and carry ``sequence_number: 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict, get_args

from tether.protocol import ids
from tether.types import Item, JSONObject

STEER_EVENT = "response.steer"
STEER_ACCEPTED_EVENT = "response.steer.accepted"
STEER_PENDING_EVENT = "response.steer.pending"
STEER_FAILED_EVENT = "response.steer.failed"
STEER_ANSWER_EVENTS = frozenset({STEER_ACCEPTED_EVENT, STEER_PENDING_EVENT, STEER_FAILED_EVENT})

SteerErrorCode = Literal[
    "response_not_found",
    "invalid_input",
    "steering_not_supported",
    "too_many_pending_steers",
    "response_already_completed",
    "response_not_active",
    "successor_creation_failed",
]

_KNOWN_CODES: tuple[SteerErrorCode, ...] = get_args(SteerErrorCode)
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


class SteerRef(TypedDict):
    id: str
    previous_response_id: str


class SteerAcceptedEvent(TypedDict):
    type: Literal["response.steer.accepted"]
    sequence_number: int
    steer: SteerRef
    stream_id: NotRequired[str]


class SteerPendingEvent(TypedDict):
    type: Literal["response.steer.pending"]
    sequence_number: int
    reason: str
    required_input: list[JSONObject]
    steer: SteerRef
    stream_id: NotRequired[str]


SteerAnswer = SteerAcceptedEvent | SteerPendingEvent | SteerFailedEvent


@dataclass(frozen=True, slots=True)
class SteerRequest:
    """A ``response.steer`` event as read: ``problem`` says why it is invalid (``None`` when it is valid)."""

    previous_response_id: str
    input: object
    problem: str | None = None


@dataclass(eq=False, slots=True)
class Steer:
    """One steering submission tether holds for a response in flight (its identity is the handle engine and provider
    share): the event as read, and tether's id for it once the upstream accepted it."""

    request: SteerRequest
    id: str | None = None

    @property
    def input(self) -> object:
        return self.request.input

    @property
    def items(self) -> list[Item]:
        return steer_items(self.request.input)


def steer_id() -> str:
    """A new steering submission id (tether's: an upstream's steer ids never reach the client)."""
    return ids.new_id("steer")


def steer_items(steering_input: object) -> list[Item]:
    """A valid steer's input as the items it adds to the context: a string is one user message, and a message
    without ``type`` gets ``"type": "message"`` (as ``response.create`` reads its ``input``)."""
    if isinstance(steering_input, str):
        return [{"type": "message", "role": "user", "content": steering_input}]
    items = steering_input if isinstance(steering_input, list) else []
    return [{"type": "message", **item} for item in items if isinstance(item, dict)]


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


def steer_failed(
    request: SteerRequest, code: SteerErrorCode, message: str, *, lane: str | None, steer: str | None = None
) -> SteerFailedEvent:
    """The ``response.steer.failed`` event refusing ``request`` (with its id ``steer`` once it had been accepted),
    labelled with the target's lane if it has one."""
    submission = SteerSubmission(input=request.input, previous_response_id=request.previous_response_id)
    if steer is not None:
        submission["id"] = steer
    event = SteerFailedEvent(
        type="response.steer.failed",
        sequence_number=0,
        error=SteerError(code=code, message=message, type="invalid_request_error"),
        steer=submission,
    )
    if lane is not None:
        event["stream_id"] = lane
    return event


def steer_accepted(steer: str, previous_response_id: str, *, lane: str | None) -> SteerAcceptedEvent:
    """The ``response.steer.accepted`` event: the input of steer ``steer`` is queued for ``previous_response_id``."""
    event = SteerAcceptedEvent(
        type="response.steer.accepted",
        sequence_number=0,
        steer=SteerRef(id=steer, previous_response_id=previous_response_id),
    )
    if lane is not None:
        event["stream_id"] = lane
    return event


def steer_pending(
    steer: str, previous_response_id: str, reason: str, required_input: list[JSONObject], *, lane: str | None
) -> SteerPendingEvent:
    """The ``response.steer.pending`` event: the steer stays queued until the client sends ``required_input``."""
    event = SteerPendingEvent(
        type="response.steer.pending",
        sequence_number=0,
        reason=reason,
        required_input=required_input,
        steer=SteerRef(id=steer, previous_response_id=previous_response_id),
    )
    if lane is not None:
        event["stream_id"] = lane
    return event


def known_error_code(code: object) -> SteerErrorCode:
    """An upstream's steering error code as one of the protocol's (an unknown or missing one is
    ``steering_not_supported``: clients must handle unknown codes, but tether passes on the ones it knows)."""
    for known in _KNOWN_CODES:
        if code == known:
            return known
    return "steering_not_supported"
