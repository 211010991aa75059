"""What went wrong upstream, and the protocol error a client sees for it: one mapping for every provider.

Transports raise :class:`UpstreamReportedError` (the upstream answered with an error) or
:class:`UpstreamConnectionError` (it could not be reached, or the connection broke); their messages are already free
of secrets (:mod:`tether.providers.redaction`). :func:`protocol_error` turns either into the
:class:`ProtocolError` the client gets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson

from tether.protocol.errors import ErrorType, ProtocolError
from tether.providers.redaction import sanitise

_MAX_MESSAGE_CHARS = 500
_RATE_LIMIT_CODES = frozenset({"rate_limit_error", "rate_limit_exceeded", "429"})
_KEPT_HEADERS = ("retry-after", "retry-after-ms")


class UpstreamReportedError(Exception):
    """An error the upstream answered with: an HTTP error status, an ``error`` event or a failed response.

    Attributes:
        status: the HTTP status it carries, if any.
        code: the upstream's error code or type (e.g. ``previous_response_not_found``), if any.
        message: the upstream's message, already stripped of secrets.
        headers: headers worth keeping (``retry-after``).
    """

    def __init__(
        self, status: int | None, code: str | None, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = kept_headers(headers or {})

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed (rate limits and server-side failures)."""
        if self.status is not None:
            return self.status == 429 or self.status >= 500
        return self.code in ("rate_limit_exceeded", "server_error")


class UpstreamConnectionError(Exception):
    """The upstream could not be reached, or its connection broke before the response finished.

    Attributes:
        mid_turn: the request had been sent when the connection broke (the upstream may have lost its state).
        timeout: the upstream stayed silent too long (a 504, not a 502).
    """

    def __init__(self, message: str, *, mid_turn: bool = False, timeout: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.mid_turn = mid_turn
        self.timeout = timeout


def protocol_error(
    provider: str, error: UpstreamReportedError | UpstreamConnectionError, secrets: Iterable[str] = ()
) -> ProtocolError:
    """The client's error for an upstream failure, with ``secrets`` (and anything shaped like one) redacted.

    An HTTP status maps as :func:`status_error` says; an in-stream rate limit stays a 429; a timeout is a 504; the
    rest is a 502 ``upstream_error`` naming the provider.
    """
    message = sanitise(error.message, secrets)
    if isinstance(error, UpstreamConnectionError):
        return upstream_failure(provider, 504 if error.timeout else 502, message)
    if error.status is not None:
        return status_error(provider, error.status, message, error.headers)
    if error.code in _RATE_LIMIT_CODES:
        return ProtocolError(
            429,
            "rate_limit_exceeded",
            f"Upstream '{provider}' is rate limiting requests: {message}",
            error_type=ErrorType.RATE_LIMIT,
        )
    code = sanitise(error.code, secrets) if error.code else None
    detail = f"{code}: {message}" if code and code not in message else message
    return upstream_failure(provider, 502, f"error in stream: {detail}")


def status_error(provider: str, status: int, message: str, headers: Mapping[str, str]) -> ProtocolError:
    """The protocol error for an upstream's HTTP error answer.

    429 stays a 429 (``rate_limit_exceeded``, with its ``retry-after``); 401/403 become 502 ``upstream_auth_error``
    (the client's own credentials are fine, tether's are not); other 4xx become 400 ``upstream_error`` with the
    upstream's message; 5xx become 502.
    """
    detail = f": {message}" if message else ""
    if status == 429:
        retry_after = headers.get("retry-after")
        return ProtocolError(
            429,
            "rate_limit_exceeded",
            f"Upstream '{provider}' is rate limiting requests (HTTP 429){detail}",
            error_type=ErrorType.RATE_LIMIT,
            headers={"retry-after": retry_after} if retry_after else None,
        )
    if status in (401, 403):
        return ProtocolError(
            502,
            "upstream_auth_error",
            f"Upstream '{provider}' rejected tether's credentials (HTTP {status}){detail}",
            error_type=ErrorType.UPSTREAM,
        )
    if 400 <= status < 500:
        return ProtocolError(
            400,
            "upstream_error",
            f"Upstream '{provider}' rejected the request (HTTP {status}){detail}",
            error_type=ErrorType.UPSTREAM,
        )
    return upstream_failure(provider, 502, f"HTTP {status}{detail}")


def upstream_failure(provider: str, status: int, reason: str) -> ProtocolError:
    """A 502/504 ``upstream_error`` naming the provider."""
    message = f"Upstream '{provider}' failed: {reason}"
    if not message.endswith((".", "!", "?", "…")):
        message += "."
    return ProtocolError(status, "upstream_error", message, error_type=ErrorType.UPSTREAM)


def error_code(payload: object) -> str | None:
    """The code (or type) of an error body or event in the common shapes: ``{"error": {"code"|"type": ...}}``."""
    outer = payload if isinstance(payload, dict) else {}
    inner = outer.get("error")
    fields = inner if isinstance(inner, dict) else outer
    for key in ("code", "type"):
        value = fields.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value) and value != "error":
            return str(value)
    return None


def error_message(body: bytes) -> str:
    """The human message of an error body in any of the common shapes, or its text, shortened."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _shorten(body.decode("utf-8", "replace"))
    for candidate in (data.get("error") if isinstance(data, dict) else None, data):
        if isinstance(candidate, str):
            return _shorten(candidate)
        if isinstance(candidate, dict):
            for key in ("message", "detail", "msg"):
                value = candidate.get(key)
                if isinstance(value, str) and value:
                    return _shorten(value)
    return _shorten(body.decode("utf-8", "replace"))


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of an error answer worth keeping: when to retry."""
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    return {name: lowered[name] for name in _KEPT_HEADERS if name in lowered}


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 1] + "…"


def stream_error(provider: str, payload: object, secrets: Iterable[str] = ()) -> ProtocolError:
    """The protocol error for an error an upstream reports inside a 200 stream (``{"error": ...}`` or an ``error``
    event): rate limits stay 429, the rest is a 502."""
    message = error_message(orjson.dumps(payload)) or "unknown error"
    return protocol_error(provider, UpstreamReportedError(None, error_code(payload), message), secrets)
