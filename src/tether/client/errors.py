"""The exceptions the client SDK raises, and the transport-level failures its retry loop handles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tether.types import JSONObject

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class ClientError(Exception):
    """Base class of every error the client SDK raises."""


class APIError(ClientError):
    """The server refused a request (an HTTP error body, or a request-scoped WebSocket ``error`` event).

    Attributes:
        status: the HTTP status (on WebSocket, the event's ``status``; 400 when absent).
        code: the machine-readable code, e.g. ``previous_response_not_found``.
        message: the server's message.
        param: the request field at fault, if any.
        retry_after_s: the server's ``retry-after`` hint, if any.
    """

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again later may succeed (rate limits, server errors, shutdowns)."""
        return self.status in RETRYABLE_STATUSES


class ResponseFailedError(ClientError):
    """The response started but ended with ``response.failed`` (the model or an upstream failed).

    Attributes:
        response_id: the failed response.
        code: ``response.error.code``.
        message: ``response.error.message``.
        response: the whole response object.
    """

    def __init__(self, response: JSONObject) -> None:
        error = response.get("error") or {}
        self.response_id: str = str(response.get("id"))
        self.code: str | None = error.get("code")
        self.message: str = error.get("message") or "the response failed"
        self.response = response
        super().__init__(f"response {self.response_id} failed: {self.code}: {self.message}")


class RetryExhaustedError(ClientError):
    """The turn could not reach the server within the retry bounds; it stays pending (see ``AsyncSession.recover``).

    Attributes:
        attempts: how many times the turn was tried.
        elapsed_s: seconds spent retrying.
        reason: the last failure.
    """

    def __init__(self, attempts: int, elapsed_s: float, reason: str) -> None:
        super().__init__(f"gave up after {attempts} attempts in {elapsed_s:.1f}s: {reason}")
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.reason = reason


class PendingTurnError(ClientError):
    """A previous turn of this session did not finish; ``recover()`` or ``discard_pending()`` it first."""


class WebSocketRefusedError(ClientError):
    """The WebSocket handshake was refused or timed out, and the session may not fall back to HTTP.

    Attributes:
        status: the HTTP status of the refusal, or ``None`` for a timeout or a broken handshake.
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ConnectionLostError(ClientError):
    """The connection dropped, or the server could not be reached; the turn is retried.

    Attributes:
        reason: what happened, for events and logs.
        code: the WebSocket close code, if any.
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class ServerUnreachableError(ConnectionLostError):
    """No connection could be opened at all (refused, unreachable, DNS): the client is offline."""


def api_error_from_ws(event: JSONObject) -> APIError:
    """The :class:`APIError` a WebSocket ``error`` event carries (``{"type": "error", "status", "error": {...}}``)."""
    inner = event.get("error")
    if not isinstance(inner, dict):
        inner = event  # a flat shape, as SSE has it
    raw_headers = inner.get("headers")
    headers: Mapping[str, Any] = raw_headers if isinstance(raw_headers, dict) else {}
    status = event.get("status")
    return APIError(
        status if isinstance(status, int) else 400,
        inner.get("code"),
        str(inner.get("message") or "error"),
        param=inner.get("param"),
        retry_after_s=_retry_after(headers),
    )


def api_error_from_http(status: int, body: bytes | bytearray, headers: Mapping[str, str]) -> APIError:
    """The :class:`APIError` of a non-2xx HTTP answer (``{"error": {...}}`` when the body is the protocol's)."""
    error: dict[str, Any] = {}
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
        error = decoded["error"]
    message = error.get("message") or bytes(body[:200]).decode("utf-8", "replace") or f"HTTP {status}"
    return APIError(
        status, error.get("code"), str(message), param=error.get("param"), retry_after_s=_retry_after(headers)
    )


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    raw = headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None
