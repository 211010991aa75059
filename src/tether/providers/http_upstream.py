"""One HTTP stack for every upstream: the client, one attempt at a time, retries before the first byte, SSE reading.

:class:`UpstreamHTTP` sends one POST and raises :class:`UpstreamReportedError` or :class:`UpstreamConnectionError`
(messages already free of secrets); :class:`UpstreamClient` adds the retry loop for stateless upstreams (Chat
Completions, Anthropic Messages). The OpenAI Responses provider uses :class:`UpstreamHTTP` too, and runs its own loop
(it may resend a turn with the full context) with the same :class:`~tether.providers.retry.Backoff`.

A request is retried (exponential backoff with jitter, honouring ``retry-after``) only while nothing of the answer
has arrived: on a connection error, a timeout, a 429 or a 5xx. Once the upstream has answered 2xx, a failure is
final, so the client never sees a turn generated twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpcore2
import httpx2 as httpx
import orjson

from tether.protocol.sse import ServerSentEvent, SSEDecodeError, SSEDecoder
from tether.providers.asyncio_network import AsyncioBackend
from tether.providers.redaction import sanitise, secrets_of
from tether.providers.retry import Backoff, Sleep
from tether.providers.upstream_errors import (
    UpstreamConnectionError,
    UpstreamReportedError,
    error_code,
    error_message,
    protocol_error,
    upstream_failure,
)
from tether.types import JSONObject

DRAIN_BYTES = 65_536
"""The most read after an answer's end so that its connection can be reused."""
DRAIN_S = 1.0
"""The longest wait for an answer's body to end after its last event."""


def _asyncio_transport(tls: ssl.SSLContext | bool, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport on :class:`~tether.providers.asyncio_network.AsyncioBackend`: 0.88–0.95× the gateway CPU
    per turn of anyio's backend in interleaved runs of the peer bench's chains. httpx takes no network backend, so
    its pool is replaced by an identical one on this backend."""
    transport = httpx.AsyncHTTPTransport(verify=tls, limits=limits)
    transport._pool = httpcore2.AsyncConnectionPool(  # a private attribute: httpx2 is pinned
        ssl_context=tls if isinstance(tls, ssl.SSLContext) else None,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport


def _is_done(event: ServerSentEvent) -> bool:
    return event.is_done


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
    @property
    def max_connections(self) -> int: ...
    @property
    def max_idle_connections(self) -> int: ...


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
        headers: extra headers sent with every request (their values are redacted like the key).
        max_connections: connections open to the upstream at once; a turn past them waits for one.
        max_idle_connections: connections kept open between turns (each turn on a new one costs a TCP handshake).
        pool_shards: the connections are split over this many pools (the limits are shared out between them).
    """

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    max_retries: int = 2
    backoff_s: float = 0.5
    max_retry_delay_s: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    max_connections: int = 1024
    max_idle_connections: int = 256
    pool_shards: int = 16

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in a message or a log: the key and the extra headers' values."""
        return secrets_of(self.api_key, self.headers)

    def backoff(self, provider: str, sleep: Sleep | None = None) -> Backoff:
        """The retry budget these options allow."""
        backoff = Backoff(provider, self.max_retries, self.backoff_s, self.max_retry_delay_s)
        if sleep is not None:
            backoff.sleep = sleep
        return backoff


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
        max_connections=config.max_connections,
        max_idle_connections=config.max_idle_connections,
    )


class UpstreamHTTP:
    """One upstream's HTTP connection pool: one POST at a time, its answer read as SSE.

    Args:
        options: where and how to connect.
        auth_headers: the headers that carry ``options.api_key``.
        headers: other headers the upstream's API requires (``options.headers`` override them).
        transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        options: UpstreamOptions,
        auth_headers: Mapping[str, str],
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options
        self.secrets = options.secrets
        shards = max(1, min(options.pool_shards, options.max_connections))
        idle = min(options.max_idle_connections, options.max_connections)
        limits = httpx.Limits(
            max_connections=-(-options.max_connections // shards), max_keepalive_connections=-(-idle // shards)
        )
        # One TLS context for every pool: each loads the CA bundle, about a tenth of a second and a megabyte.
        tls = httpx.create_ssl_context() if transport is None else True
        self._clients = tuple(
            httpx.AsyncClient(
                base_url=options.base_url,
                headers={**(headers or {}), **options.headers, **auth_headers, "accept": "text/event-stream"},
                timeout=httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s),
                limits=limits,
                transport=transport or _asyncio_transport(tls, limits),
                verify=tls,
            )
            for _ in range(shards)
        )
        self._turn = itertools.count()
        self._urls: dict[str, httpx.URL] = {}

    @property
    def _client(self) -> httpx.AsyncClient:
        """The next pool, round-robin: httpx scans every connection of a pool on each request and each close, so
        many small pools cost less than one large one under concurrency."""
        return self._clients[next(self._turn) % len(self._clients)]

    async def post(self, path: str, body: JSONObject, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """Send ``body``; the answer, 2xx, with its body not read yet (the caller closes it).

        Raises:
            UpstreamReportedError: the upstream answered with an error status.
            UpstreamConnectionError: the request did not get through, or no answer came in time.
        """
        client = self._client
        request = client.build_request(
            "POST",
            self._url(path),
            content=orjson.dumps(body),
            headers={**(headers or {}), "content-type": "application/json"},
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            raise self._timeout() from None
        except httpx.TransportError as exc:
            reason = sanitise(str(exc), self.secrets) or type(exc).__name__
            raise UpstreamConnectionError(f"the request did not get through ({reason})") from None
        if response.status_code < 300:
            return response
        try:
            raw = await response.aread()
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
        raise self.reported(response.status_code, raw, response.headers)

    def _url(self, path: str) -> httpx.URL:
        """``path`` below the base URL, as the client would merge it, parsed once: an absolute ``URL`` passes
        through ``build_request`` as it is, where a path string is parsed three times per request."""
        url = self._urls.get(path)
        if url is None:
            base = self._clients[0].base_url  # every pool has the same base, ending in "/"
            url = self._urls[path] = base.copy_with(raw_path=base.raw_path + path.lstrip("/").encode("ascii"))
        return url

    async def send_raw(
        self, method: str, path: str, content: bytes, headers: Mapping[str, str], query: str = ""
    ) -> httpx.Response:
        """Send one request as given, for same-API forwarding; the answer comes back whatever its status, its body
        not read yet (the caller closes it).

        ``headers`` override the pool's defaults; the default ``accept`` is left out unless ``headers`` has one.

        Raises:
            UpstreamConnectionError: the request did not get through, or no answer came in time.
        """
        url = f"{path}?{query}" if query else path
        client = self._client
        request = client.build_request(method, url, content=content or None, headers=headers)
        if not any(name.lower() == "accept" for name in headers):
            del request.headers["accept"]
        try:
            return await client.send(request, stream=True)
        except httpx.TimeoutException:
            raise self._timeout() from None
        except httpx.TransportError as exc:
            secrets = (*self.secrets, *(value for value in headers.values() if len(value) >= 8))
            reason = sanitise(str(exc), secrets) or type(exc).__name__
            raise UpstreamConnectionError(f"the request did not get through ({reason})") from None

    def reported(self, status: int | None, body: bytes, headers: Mapping[str, str]) -> UpstreamReportedError:
        """The error an upstream's error body (or event) reports, its message stripped of secrets."""
        try:
            payload: object = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        message = sanitise(error_message(body), self.secrets)
        return UpstreamReportedError(status, error_code(payload), message, headers)

    async def sse(
        self, response: httpx.Response, deadline: float, last: Callable[[ServerSentEvent], bool] = _is_done
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """The answer's Server-Sent Events (split on CR/LF only).

        Before the event ``last`` recognises as the answer's end is yielded, the rest of the body is read, so that
        a consumer that stops there leaves the connection to the pool (see :func:`_drain`).

        Raises:
            UpstreamConnectionError: (``mid_turn``) the stream broke, could not be read, or outlived ``deadline``.
        """
        decoder = SSEDecoder()
        chunks = response.aiter_bytes()
        try:
            async for chunk in chunks:
                for event in decoder.decode(chunk):
                    if last(event):
                        # What follows [DONE] is only the body's end: read it, so the connection goes back to the
                        # pool instead of being closed (a new TCP connection a turn costs more than the turn).
                        await _drain(chunks)
                    yield event
                if time.monotonic() > deadline:
                    raise self._timeout(mid_turn=True)
            decoder.flush()
        except httpx.TimeoutException:
            raise self._timeout(mid_turn=True) from None
        except httpx.TransportError as exc:
            reason = f"the connection broke mid-stream ({type(exc).__name__})"
            raise UpstreamConnectionError(reason, mid_turn=True) from None
        except SSEDecodeError as exc:
            reason = f"the stream could not be read: {sanitise(str(exc), self.secrets)}"
            raise UpstreamConnectionError(reason, mid_turn=True) from None

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    def _timeout(self, *, mid_turn: bool = False) -> UpstreamConnectionError:
        return UpstreamConnectionError(
            f"no answer within {self.options.timeout_s:g} s", mid_turn=mid_turn, timeout=True
        )


class UpstreamClient:
    """A stateless upstream's client: POSTs a JSON body, retries before the first byte, reads SSE.

    Args:
        provider: the provider's name, used in messages and logs.
        options: where and how to connect.
        auth_headers: the headers that carry ``options.api_key``.
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
        self.http = UpstreamHTTP(options, auth_headers, headers=headers, transport=transport)
        self.secrets = self.http.secrets
        self.backoff = options.backoff(provider, sleep)

    @contextlib.asynccontextmanager
    async def stream_events(
        self, path: str, body: JSONObject, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """POST ``body`` (with ``headers`` besides the client's own) and yield the answer's Server-Sent Events; the
        response is closed on exit.

        Raises:
            ProtocolError: the upstream failed (after the retries allowed), or the stream broke.
        """
        deadline = time.monotonic() + self.options.timeout_s
        response = await self._send(path, body, deadline, headers)
        events = self._events(response, deadline)
        try:
            yield events
        finally:
            await events.aclose()
            await response.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(
        self, path: str, body: JSONObject, deadline: float, headers: Mapping[str, str] | None
    ) -> httpx.Response:
        retries = 0
        while True:
            try:
                return await self.http.post(path, body, headers)
            except UpstreamReportedError as error:
                failure = protocol_error(self.provider, error, self.secrets)
                if not error.retryable:
                    raise failure from None
                await self.backoff.wait(retries, failure, error.headers, deadline=deadline)
            except UpstreamConnectionError as error:
                failure = protocol_error(self.provider, error, self.secrets)
                await self.backoff.wait(retries, failure, deadline=deadline)
            retries += 1

    async def _events(self, response: httpx.Response, deadline: float) -> AsyncGenerator[ServerSentEvent, None]:
        try:
            async for event in self.http.sse(response, deadline):
                yield event
        except UpstreamConnectionError as error:
            raise protocol_error(self.provider, error, self.secrets) from None


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of a finished answer, up to :data:`DRAIN_BYTES` and :data:`DRAIN_S`: past either, the
    connection is closed rather than pooled."""
    left = DRAIN_BYTES
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(DRAIN_S):
            async for chunk in chunks:
                left -= len(chunk)
                if left < 0:
                    return


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
