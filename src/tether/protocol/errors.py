"""The protocol's errors and their three wire shapes.

One exception type, :class:`ProtocolError`, carries everything a client needs (HTTP status, error type, code,
message, param). Each transport renders it in its own shape:

* HTTP JSON: ``{"error": {"message", "type", "param", "code"}}`` with the status;
* SSE: a flat ``{"type": "error", "code", "message", "param", "sequence_number"}`` event;
* WebSocket: ``{"type": "error", "status", "error": {...}}`` plus ``stream_id`` on named lanes.
"""

from __future__ import annotations

from enum import StrEnum

from tether.protocol.events import ErrorBody, ErrorEvent, SSEErrorEvent
from tether.types import JSONObject


class ErrorType(StrEnum):
    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    NOT_FOUND = "not_found_error"
    RATE_LIMIT = "rate_limit_error"
    SERVER = "server_error"
    UPSTREAM = "upstream_error"


class ProtocolError(Exception):
    """A request-scoped error with everything needed to render it on any transport.

    Args:
        status: the HTTP status the error maps to (also sent as ``status`` on WebSocket).
        code: machine-readable code, e.g. ``previous_response_not_found``.
        message: a sentence a human can act on.
        param: the request field at fault, if any.
        error_type: the error family.
        headers: optional headers (e.g. ``retry-after``), surfaced in ``error.headers`` on WebSocket.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        error_type: ErrorType = ErrorType.INVALID_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type
        self.headers = headers or {}

    def body(self) -> JSONObject:
        """The inner error object shared by every shape."""
        return {"message": self.message, "type": str(self.error_type), "param": self.param, "code": self.code}

    def http_body(self) -> JSONObject:
        return {"error": self.body()}

    def sse_event(self, sequence_number: int) -> SSEErrorEvent:
        """The flat SSE ``error`` event (the error's family is not in it: ``type`` is the event's)."""
        return sse_error_shape(self.ws_event(sequence_number=sequence_number))

    def ws_event(self, stream_id: str | None = None, sequence_number: int | None = None) -> ErrorEvent:
        body = ErrorBody(message=self.message, type=str(self.error_type), param=self.param, code=self.code)
        if self.headers:
            body["headers"] = dict(self.headers)
        event = ErrorEvent(type="error", status=self.status, error=body)
        if sequence_number is not None:
            event["sequence_number"] = sequence_number
        if stream_id is not None:
            event["stream_id"] = stream_id
        return event

    def __repr__(self) -> str:
        return f"ProtocolError({self.status}, {self.code!r}, {self.message!r}, param={self.param!r})"


def invalid(code: str, message: str, param: str | None = None) -> ProtocolError:
    return ProtocolError(400, code, message, param=param)


def previous_response_not_found(response_id: str) -> ProtocolError:
    return ProtocolError(
        400,
        "previous_response_not_found",
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
    )


def response_not_found(response_id: str) -> ProtocolError:
    return ProtocolError(
        404,
        "response_not_found",
        f"Response with id '{response_id}' not found.",
        param="response_id",
        error_type=ErrorType.INVALID_REQUEST,
    )


def response_in_progress(response_id: str) -> ProtocolError:
    return ProtocolError(
        409,
        "response_in_progress",
        f"Response '{response_id}' is still in progress: cancel it (POST /v1/responses/{response_id}/cancel) or "
        "wait for it to end, then delete it.",
        param="response_id",
        error_type=ErrorType.INVALID_REQUEST,
    )


def nothing_to_resume(response_id: str, last: int, after: int) -> ProtocolError:
    return invalid(
        "nothing_to_resume",
        f"Response '{response_id}' ended at sequence number {last}; there is nothing after {after}.",
        "starting_after",
    )


def not_cancellable(status: str | None) -> ProtocolError:
    """The answer to cancelling a response that was not created in background mode (``status=None``) or that has
    already ended with ``status`` (OpenAI's messages)."""
    message = "Cannot cancel a synchronous response." if status is None else f"Cannot cancel a {status} response."
    return invalid("response_not_cancellable", message)


def server_error(message: str = "The server had an error while processing your request.") -> ProtocolError:
    return ProtocolError(500, "server_error", message, error_type=ErrorType.SERVER)


def sse_error_shape(event: ErrorEvent) -> SSEErrorEvent:
    """Render a stream-log ``error`` event (WebSocket shape) in the flat shape SSE clients expect."""
    inner = event.get("error")  # read leniently: a malformed log entry still renders as an error
    return SSEErrorEvent(
        type="error",
        code=inner.get("code") if inner else None,
        message=inner.get("message") if inner else None,
        param=inner.get("param") if inner else None,
        sequence_number=event.get("sequence_number"),
    )
