"""Sans-I/O protocol core: parsing, events, errors, SSE, lanes. Never awaits, never touches a socket."""

from tether.protocol.errors import ErrorType, ProtocolError
from tether.protocol.lanes import Lane, LaneLimits, LaneScheduler
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
from tether.protocol.request import CreateRequest, Transport, decode_json_object, parse_create
from tether.protocol.response import response_object
from tether.protocol.sse import ServerSentEvent, SSEDecoder, encode_done, encode_event
from tether.protocol.stream import ResponseStream

__all__ = [
    "CreateRequest",
    "ErrorType",
    "Finish",
    "Lane",
    "LaneLimits",
    "LaneScheduler",
    "ModelEvent",
    "ProtocolError",
    "ReasoningEnd",
    "ReasoningStart",
    "ReasoningSummaryDelta",
    "ResponseStream",
    "SSEDecoder",
    "ServerSentEvent",
    "TextDelta",
    "ToolCallDelta",
    "Transport",
    "Usage",
    "decode_json_object",
    "encode_done",
    "encode_event",
    "parse_create",
    "response_object",
]
