"""What every HTTP upstream shares: the client, retries before the first byte, SSE reading, and error mapping.

A request is retried (exponential backoff with jitter, honouring ``retry-after``) only while nothing of the answer
has arrived: on a connection error, a timeout, a 429 or a 5xx. Once the upstream has answered 2xx, a failure is
final, so the client never sees a turn generated twice. Upstream errors become :class:`ProtocolError`\\ s whose
messages never carry the upstream key.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx2 as httpx
import orjson
import structlog

from tether.protocol.errors import ErrorType, ProtocolError
from tether.protocol.sse import ServerSentEvent, SSEDecodeError, SSEDecoder
from tether.types import JSONObject

_log = structlog.get_logger("tether.providers")

_MAX_MESSAGE_CHARS = 500
_REDACTED = "[redacted]"
# Things that look like credentials even when they are not the configured key (another key, a masked echo of it).
_SECRET_LIKE = re.compile(
    r"(?i)\bbearer\s+\S+"
    r"|\b(?:sk|pk|rk)[-_][\w\-*.]{12,}"
    r"|\S*\*{3,}\S*"
    r"|\b[A-Za-z0-9_\-]{40,}\b"
)


class UpstreamFields(Protocol):
    """The fields of a provider's config that :func:`upstream_options` reads (``ProviderSettings`` has them)."""

    @property
    def base_url(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def connect_timeout_s(self) -> float: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def backoff_s(self) -> float: ...
    @property
    def headers(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class UpstreamOptions:
    """How to reach one upstream.

    Attributes:
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        api_key: the credential (never logged, never shown in ``repr``).
        timeout_s: the whole turn, from sending the request to the last byte; also the longest silence tolerated.
        connect_timeout_s: establishing the connection.
        max_retries: retries on 429/5xx/connection errors/timeouts before the first byte.
        backoff_s: the first retry delay; it doubles on each retry, with jitter.
        max_retry_delay_s: the longest wait before a retry; a ``retry-after`` asking for more fails the turn now.
        headers: extra headers sent with every request.
    """

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    max_retries: int = 2
    backoff_s: float = 0.5
    max_retry_delay_s: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)


def upstream_options(config: UpstreamFields, api_key: str | None, *, default_base_url: str = "") -> UpstreamOptions:
    """Options from a provider's config and its key (read from the environment by the caller)."""
    base_url = config.base_url or default_base_url
    if not base_url:
        raise ValueError("base_url is required for this provider kind")
    return UpstreamOptions(
        base_url=base_url,
        api_key=api_key,
        timeout_s=config.timeout_s,
        connect_timeout_s=config.connect_timeout_s,
        max_retries=config.max_retries,
        backoff_s=config.backoff_s,
        headers=dict(config.headers),
    )


Sleep = Callable[[float], Awaitable[None]]


class UpstreamClient:
    """One upstream's HTTP client: POSTs a JSON body, retries before the first byte, reads SSE.

    Args:
        provider: the provider's name, used in messages and logs.
        options: where and how to connect.
        auth_headers: the headers that carry ``options.api_key`` (their values are redacted from every message).
        headers: other headers the upstream's API requires (``options.headers`` override them).
        transport: an httpx transport, for tests.
        sleep: the retry sleep, for tests.
    """

    def __init__(
        self,
        provider: str,
        options: UpstreamOptions,
        auth_headers: Mapping[str, str],
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.provider = provider
        self.options = options
        self.secrets = tuple(s for s in (options.api_key, *auth_headers.values()) if s)
        self._sleep = sleep or asyncio.sleep
        self._random = random.Random()
        self._client = httpx.AsyncClient(
            base_url=options.base_url,
            headers={**(headers or {}), **options.headers, **auth_headers, "accept": "text/event-stream"},
            timeout=httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s),
            transport=transport,
        )

    @contextlib.asynccontextmanager
    async def stream_events(self, path: str, body: JSONObject) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """POST ``body`` and yield the answer's Server-Sent Events; the response is closed on exit.

        Raises:
            ProtocolError: the upstream failed (after the retries allowed), or the stream broke.
        """
        deadline = time.monotonic() + self.options.timeout_s
        response = await self._send(path, orjson.dumps(body), deadline)
        events = self._events(response, deadline)
        try:
            yield events
        finally:
            await events.aclose()
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(self, path: str, content: bytes, deadline: float) -> httpx.Response:
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                request = self._client.build_request(
                    "POST", path, content=content, headers={"content-type": "application/json"}
                )
                response = await self._client.send(request, stream=True)
            except httpx.TimeoutException:
                error = self._timeout_error()
            except httpx.TransportError as exc:
                error = self._connection_error(exc)
            else:
                if response.status_code < 300:
                    return response
                try:
                    raw = await response.aread()
                except httpx.HTTPError:
                    raw = b""
                finally:
                    await response.aclose()
                error = map_status_error(self.provider, response.status_code, raw, response.headers, self.secrets)
                if not _retryable_status(response.status_code):
                    raise error
                retry_after = parse_retry_after(response.headers)
            delay = self._delay(attempt, retry_after)
            if attempt >= self.options.max_retries or delay is None or time.monotonic() + delay > deadline:
                raise error
            attempt += 1
            _log.warning("upstream.retry", provider=self.provider, code=error.code, attempt=attempt, delay_s=delay)
            await self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """The wait before the next try, or ``None`` when the upstream asks for more than we are willing to wait."""
        base = self.options.backoff_s * (1 << attempt)
        jittered = base / 2 + self._random.uniform(0, base / 2)
        if retry_after is not None:
            if retry_after > self.options.max_retry_delay_s:
                return None
            return max(retry_after, jittered)
        return min(jittered, self.options.max_retry_delay_s)

    async def _events(self, response: httpx.Response, deadline: float) -> AsyncGenerator[ServerSentEvent, None]:
        decoder = SSEDecoder()
        try:
            async for chunk in response.aiter_bytes():
                for event in decoder.decode(chunk):
                    yield event
                if time.monotonic() > deadline:
                    raise self._timeout_error()
        except httpx.TimeoutException:
            raise self._timeout_error() from None
        except httpx.TransportError as exc:
            reason = f"the connection broke mid-stream ({type(exc).__name__})"
            raise upstream_failure(self.provider, 502, reason) from None
        except SSEDecodeError as exc:
            raise upstream_failure(self.provider, 502, f"the stream could not be read: {exc}") from None
        decoder.flush()

    def _timeout_error(self) -> ProtocolError:
        return upstream_failure(self.provider, 504, f"no answer within {self.options.timeout_s:g} s")

    def _connection_error(self, exc: httpx.TransportError) -> ProtocolError:
        reason = sanitise(str(exc), self.secrets) or type(exc).__name__
        return upstream_failure(self.provider, 502, f"the request did not get through ({reason})")


def event_json(provider: str, event: ServerSentEvent) -> JSONObject:
    """An SSE event's data as a JSON object.

    Raises:
        ProtocolError: 502 if it is not one.
    """
    try:
        value = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        raise upstream_failure(provider, 502, "the stream carried an event that is not JSON") from None
    if not isinstance(value, dict):
        raise upstream_failure(provider, 502, "the stream carried an event that is not a JSON object")
    return value


def upstream_failure(provider: str, status: int, reason: str) -> ProtocolError:
    """A 502/504 ``upstream_error`` naming the provider."""
    message = f"Upstream '{provider}' failed: {reason}"
    if not message.endswith((".", "!", "?", "…")):
        message += "."
    return ProtocolError(status, "upstream_error", message, error_type=ErrorType.UPSTREAM)


def map_status_error(
    provider: str, status: int, body: bytes, headers: Mapping[str, str], secrets: Iterable[str] = ()
) -> ProtocolError:
    """The protocol error for an upstream's HTTP error answer.

    429 stays a 429 (``rate_limit_exceeded``, with its ``retry-after``); 401/403 become 502 ``upstream_auth_error``
    (the client's own credentials are fine, tether's are not); other 4xx become 400 ``upstream_error`` with the
    upstream's message; 5xx become 502.
    """
    message = sanitise(error_message(body), secrets)
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


def stream_error(provider: str, payload: object, secrets: Iterable[str] = ()) -> ProtocolError:
    """The protocol error for an error an upstream reports inside a 200 stream (``{"error": ...}`` or an ``error``
    event): rate limits stay 429, the rest is a 502."""
    message = sanitise(error_message(orjson.dumps(payload)), secrets) or "unknown error"
    inner = payload.get("error") if isinstance(payload, dict) else None
    kind = str(inner.get("type") or inner.get("code") or "") if isinstance(inner, dict) else ""
    if kind in ("rate_limit_error", "rate_limit_exceeded", "429"):
        return ProtocolError(
            429,
            "rate_limit_exceeded",
            f"Upstream '{provider}' is rate limiting requests: {message}",
            error_type=ErrorType.RATE_LIMIT,
        )
    return upstream_failure(provider, 502, f"error in stream: {message}")


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


def sanitise(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove the given secrets, and anything shaped like a credential, from a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return _SECRET_LIKE.sub(_REDACTED, text)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if present and sane."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(raw_ms) / 1000)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(raw))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(raw)
        return max(0.0, when.timestamp() - time.time())
    return None


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 1] + "…"
