"""The client events of WebSocket mode: which a client may send, and how each is read (sans-I/O).

A WebSocket client sends one JSON object per text message. ``response.create`` carries a create request (parsed as
:func:`~tether.protocol.request.parse_create` does for HTTP bodies); ``tether:response.resume`` asks for the events
of a response after a sequence number; ``response.steer`` is read by :mod:`tether.protocol.steer` (and answered
with ``response.steer.*`` events, never ``error``). Events the hosted API knows but tether does not implement are
refused with ``unsupported_event``; anything else is ``invalid_event_type``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from tether.protocol.errors import ProtocolError, invalid
from tether.protocol.lanes import Lane
from tether.protocol.request import (
    STREAM_ID_PATTERN,
    CreateRequest,
    Transport,
    check_input_items,
    check_json_depth,
    check_stream_id,
    decode_any_json_object,
    parse_create,
    validation_error,
)
from tether.protocol.steer import STEER_EVENT, SteerRequest, read_steer
from tether.protocol.vocabulary import CREATE_EVENT, RESUME_EVENT
from tether.types import JSONObject

UNSUPPORTED_CLIENT_EVENTS = frozenset({"response.inject", "response.interrupt"})

ClientEventType = Literal["response.create", "tether:response.resume", "response.steer"]


class ResumeRequest(BaseModel):
    """``{"type": "tether:response.resume", "response_id", "starting_after", "resume_token", "stream_id"}``.

    Asks for the events of a response after sequence number ``starting_after`` (all of them when omitted), on this
    connection, labelled with ``stream_id``. ``store: false`` responses need the ``tether:resume_token`` their
    ``response.created`` carried.
    """

    model_config = ConfigDict(extra="ignore")

    response_id: StrictStr
    starting_after: StrictInt = Field(default=-1, ge=-1)
    resume_token: StrictStr | None = None
    stream_id: StrictStr | None = None


def event_lane(body: JSONObject) -> Lane:
    """The lane an event names, if it names a valid one: errors about the event are labelled with it."""
    value = body.get("stream_id")
    return value if isinstance(value, str) and STREAM_ID_PATTERN.fullmatch(value) else None


def client_event_type(body: JSONObject) -> ClientEventType:
    """The event's ``type``, if tether handles it.

    Raises:
        ProtocolError: ``unsupported_event``, ``missing_required_parameter`` or ``invalid_event_type``.
    """
    event_type = body.get("type")
    if event_type == CREATE_EVENT:
        return "response.create"
    if event_type == RESUME_EVENT:
        return "tether:response.resume"
    if event_type == STEER_EVENT:
        return "response.steer"
    raise _unsupported_event(event_type)


def parse_client_event(event_type: ClientEventType, body: JSONObject) -> ClientEvent:
    """Validate an event of a known type (see :func:`client_event_type`).

    Raises:
        ProtocolError: for any invalid field, with ``param`` naming it.
    """
    if event_type == "tether:response.resume":
        return parse_resume(body)
    if event_type == "response.steer":
        return read_steer(body)
    return parse_create(body, Transport.WEBSOCKET)


ClientEvent = CreateRequest | ResumeRequest | SteerRequest


def read_client_event(text: str, max_input_items: int) -> tuple[Lane, ClientEvent | ProtocolError]:
    """Decode and validate one client message: its lane, and the event or the error that answers it.

    Pure and synchronous, so a large message can be read on a worker thread, off the event loop.
    """
    lane: Lane = None
    try:
        body = decode_any_json_object(text)
        lane = event_lane(body)  # a message too deep is answered on its lane too
        check_json_depth(body)
        check_input_items(body, max_input_items)
        event = parse_client_event(client_event_type(body), body)
    except ProtocolError as error:
        return lane, error
    if isinstance(event, SteerRequest):  # answered on the steered response's lane, whatever the event says
        return None, event
    return event.stream_id, event


def parse_resume(body: JSONObject) -> ResumeRequest:
    """Validate a ``tether:response.resume`` client event.

    Raises:
        ProtocolError: for a missing ``response_id``, a bad ``starting_after`` or ``stream_id``.
    """
    if "stream_id" in body:
        check_stream_id(body["stream_id"])
    try:
        return ResumeRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def connection_limit_reached(max_age_s: float) -> ProtocolError:
    """The error a connection gets once it has been open ``max_age_s``: new turns need a new connection."""
    minutes = max_age_s / 60
    return invalid(
        "websocket_connection_limit_reached",
        f"Responses websocket connection limit reached ({minutes:g} minutes). Create a new websocket connection to "
        "continue.",
    )


def _unsupported_event(event_type: Any) -> ProtocolError:
    if isinstance(event_type, str) and event_type in UNSUPPORTED_CLIENT_EVENTS:
        return invalid("unsupported_event", f"'{event_type}' is not supported by this gateway.", "type")
    if event_type is None:
        return invalid("missing_required_parameter", "Missing required parameter: 'type'.", "type")
    return invalid(
        "invalid_event_type", f"Unknown client event type {event_type!r}; expected 'response.create'.", "type"
    )
