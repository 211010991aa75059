"""Same-API forwarding behind the ``Provider`` seam: a request of the provider's own API, sent on untouched, and the
upstream's answer relayed as it came.

An agent that speaks Anthropic Messages, routed to an ``anthropic`` provider, must reach the upstream with its
request byte for byte (thinking blocks with signatures, ``cache_control``, images, fields tether does not know), so
prompt caching and extended thinking keep working. A provider that can do this implements :class:`RawForwarding`
(an optional interface beside :class:`~tether.providers.base.Provider`); :func:`raw_forwarder` finds the one a
model routes to.

Rules (:class:`RawForwarder` implements them once for every HTTP provider):

* the body's bytes are sent as they are; the agent's headers too, less hop-by-hop and transport headers
  (``host``, ``content-length``, ``connection``, ``accept-encoding``, ...) and less the headers the provider's
  config sets;
* credentials: when the provider has a key configured, the agent's credential headers (``x-api-key``,
  ``authorization``, ``api-key``) are dropped and the provider's key is sent; when it has none, the agent's own
  credential headers go upstream as they came. They live only in the request object (never in its ``repr``), are
  redacted from every message, and are never logged;
* retries (the shared :class:`~tether.providers.retry.Backoff`) only before the first byte reaches the caller: on
  a connection error or timeout, a 429 or a 5xx. When no retry is left, an error answer is relayed as it came
  (status, headers, body), so the agent sees the upstream's own error; a connection that never got through is a
  :class:`~tether.protocol.errors.ProtocolError` (502/504) for the caller to render in the agent's API;
* the answer's status, headers (less hop-by-hop, ``content-length`` and ``content-encoding``: the body is relayed
  decoded) and body bytes (SSE or JSON, chunk by chunk) are relayed untouched. A connection that breaks mid-answer
  raises ``ProtocolError`` (502) from the body iterator.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import httpx2 as httpx
import orjson
import structlog

from tether.protocol.errors import ProtocolError
from tether.providers.http_upstream import UpstreamHTTP
from tether.providers.redaction import StreamRedactor, sanitise, secrets_of
from tether.providers.retry import Backoff
from tether.providers.upstream_errors import UpstreamConnectionError, protocol_error

__all__ = [
    "CREDENTIAL_HEADERS",
    "ForwardedAPI",
    "ForwardingSource",
    "RawForwarder",
    "RawForwarding",
    "RawReply",
    "RawRequest",
    "raw_forwarder",
    "with_model",
]

_log = structlog.get_logger("tether.providers")

ForwardedAPI: TypeAlias = Literal["anthropic-messages", "chat-completions"]

CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization", "api-key"})
"""The headers that carry an agent's credentials."""

# Hop-by-hop headers (RFC 9110 §7.6.1) and those that describe one connection's framing, not the request.
_NOT_SENT = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "accept-encoding",
    }
)
_NOT_RELAYED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "trailer", "upgrade"}
)


@dataclass(frozen=True, slots=True)
class RawRequest:
    """A request of the provider's own API, as the agent sent it.

    Attributes:
        method: ``POST`` (``GET`` for listings such as ``/v1/models``).
        path: the agent's URL path, e.g. ``/v1/messages``, ``/v1/messages/count_tokens``, ``/v1/chat/completions``
            (a leading ``/v1`` is the API root and is mapped onto the provider's ``base_url``).
        body: the body's exact bytes (``b""`` for none).
        headers: the agent's headers (any case); credentials among them are used only when the provider has no
            key. Not shown in ``repr``.
        query: the URL's query string, without ``?``.
    """

    method: str
    path: str
    body: bytes = field(default=b"", repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    query: str = ""

    @classmethod
    def of_json(cls, method: str, path: str, value: object, headers: Mapping[str, str], query: str = "") -> RawRequest:
        """A request whose body is a JSON value (e.g. one the gateway rebuilt from an edge's delta): it is encoded
        compactly, so the upstream receives the same JSON value the agent sent."""
        return cls(method, path, orjson.dumps(value), headers, query)

    @property
    def api_path(self) -> str:
        """The path under the API root: ``/v1/messages`` → ``messages``."""
        path = self.path.lstrip("/")
        return path.removeprefix("v1/") if path != "v1" else ""


@dataclass(slots=True)
class RawReply:
    """The upstream's answer, relayed as it came.

    Attributes:
        status: the HTTP status.
        headers: the answer's headers (names in lower case), less hop-by-hop, ``content-length`` and
            ``content-encoding``.
        retries: how many times the request was retried before this answer.
    """

    status: int
    headers: dict[str, str]
    retries: int = 0
    _chunks: AsyncIterator[bytes] | None = field(default=None, repr=False)
    _buffered: bytes | None = field(default=None, repr=False)

    async def body(self) -> AsyncIterator[bytes]:
        """The body's bytes, chunk by chunk as they arrive (decoded from any content-encoding).

        Raises:
            ProtocolError: 502/504 when the connection breaks or stays silent mid-answer.
        """
        if self._buffered is not None:
            if self._buffered:
                yield self._buffered
            return
        if self._chunks is not None:
            async for chunk in self._chunks:
                yield chunk

    async def read(self) -> bytes:
        """The whole body (for a JSON answer)."""
        return b"".join([chunk async for chunk in self.body()])


@runtime_checkable
class RawForwarding(Protocol):
    """A provider that can forward a request of its own API untouched (an optional interface beside ``Provider``).

    Attributes:
        api: the API it speaks, in the edge's names.
    """

    name: str
    api: ForwardedAPI

    def forward(self, request: RawRequest) -> AbstractAsyncContextManager[RawReply]:
        """Send ``request`` upstream untouched; the answer is open inside the ``async with`` and closed on exit.

        Raises:
            ProtocolError: the upstream could not be reached (after the retries allowed), 502 or 504.
        """
        ...


class RawForwarder:
    """The forwarding rules over one provider's HTTP pool (see the module docstring).

    A ``base_url`` that ends in ``/v1`` is the API root; one that does not gets ``v1/`` before the path.

    Args:
        provider: the provider's name (for messages and logs).
        http: the provider's pool; its default headers carry the configured key, if any.
        backoff: the provider's retry budget.
    """

    def __init__(self, provider: str, http: UpstreamHTTP, backoff: Backoff) -> None:
        self.provider = provider
        self.http = http
        self.backoff = backoff
        self._prefix = "" if http.options.base_url.rstrip("/").endswith("/v1") else "v1/"
        self._configured = {name.lower() for name in http.options.headers}

    def headers_for(self, request: RawRequest) -> dict[str, str]:
        """The agent's headers as they go upstream (credentials only when the provider has no key)."""
        keyed = self.http.options.api_key is not None
        sent: dict[str, str] = {}
        for name, value in request.headers.items():
            lowered = name.lower()
            if lowered in _NOT_SENT or lowered in self._configured or (keyed and lowered in CREDENTIAL_HEADERS):
                continue
            sent[lowered] = value
        return sent

    @contextlib.asynccontextmanager
    async def forward(self, request: RawRequest) -> AsyncIterator[RawReply]:
        """Send ``request`` untouched and relay the answer (see :meth:`RawForwarding.forward`)."""
        headers = self.headers_for(request)
        secrets = (*self.http.secrets, *secrets_of(None, {k: v for k, v in headers.items() if k in CREDENTIAL_HEADERS}))
        path = self._prefix + request.api_path
        deadline = time.monotonic() + self.http.options.timeout_s
        response, retries, buffered = await self._send(request, path, headers, deadline, secrets)
        _log.info("upstream.forward", provider=self.provider, path=path, status=response.status_code, retries=retries)
        relayed = _relayed(response.headers, secrets)
        if buffered is not None:
            yield RawReply(response.status_code, relayed, retries, _buffered=StreamRedactor(secrets).redact(buffered))
            return
        chunks = self._chunks(response, deadline, secrets)
        try:
            yield RawReply(response.status_code, relayed, retries, _chunks=chunks)
        finally:
            await chunks.aclose()
            await response.aclose()

    async def _send(
        self, request: RawRequest, path: str, headers: dict[str, str], deadline: float, secrets: tuple[str, ...]
    ) -> tuple[httpx.Response, int, bytes | None]:
        """The answer worth relaying, after the retries it earns; an error answer comes back read (``bytes``)."""
        retries = 0
        while True:
            try:
                response = await self.http.send_raw(request.method, path, request.body, headers, request.query)
            except UpstreamConnectionError as error:
                await self.backoff.wait(retries, protocol_error(self.provider, error, secrets), deadline=deadline)
                retries += 1
                continue
            if response.status_code != 429 and response.status_code < 500:
                return response, retries, None
            buffered = await _drain(response)
            failure = ProtocolError(response.status_code, "upstream_error", f"HTTP {response.status_code}")
            try:
                await self.backoff.wait(retries, failure, response.headers, deadline=deadline)
            except ProtocolError:
                return response, retries, buffered
            retries += 1

    async def _chunks(
        self, response: httpx.Response, deadline: float, secrets: tuple[str, ...]
    ) -> AsyncGenerator[bytes, None]:
        redactor = StreamRedactor(secrets)  # an upstream that echoes tether's credentials does not reach the agent
        try:
            async for chunk in response.aiter_bytes():
                if safe := redactor.feed(chunk):
                    yield safe
                if time.monotonic() > deadline:
                    timeout = UpstreamConnectionError("no answer within the timeout", mid_turn=True, timeout=True)
                    raise protocol_error(self.provider, timeout, secrets)
            if rest := redactor.flush():
                yield rest
        except httpx.TimeoutException:
            timeout = UpstreamConnectionError("the answer stalled", mid_turn=True, timeout=True)
            raise protocol_error(self.provider, timeout, secrets) from None
        except httpx.TransportError as exc:
            broken = UpstreamConnectionError(f"the connection broke mid-answer ({type(exc).__name__})", mid_turn=True)
            raise protocol_error(self.provider, broken, secrets) from None


class ForwardingSource(Protocol):
    """Something that knows which of its providers can forward an API (a route: ``RoutedProvider``)."""

    def forwarder(self, api: ForwardedAPI) -> RawForwarding | None:
        """The forwarder for ``api``, or ``None``."""
        ...


def raw_forwarder(resolved: object, api: ForwardedAPI) -> RawForwarding | None:
    """Where to forward a request of ``api`` for a resolved provider (``engine.router.resolve(model)``).

    Returns:
        The provider itself when it speaks ``api``; for a route, a forwarder along the route (see
        ``RoutedProvider.forwarder``); ``None`` when the model's upstream speaks another API (then translate
        instead: :mod:`tether.protocol.agent_apis`).
    """
    if isinstance(resolved, RawForwarding):
        return resolved if resolved.api == api else None
    source = getattr(resolved, "forwarder", None)
    if callable(source):
        found = source(api)
        return found if isinstance(found, RawForwarding) else None
    return None


async def _drain(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


def _relayed(headers: httpx.Headers, secrets: tuple[str, ...]) -> dict[str, str]:
    return {
        name.lower(): sanitise(value, secrets, shapes=False)
        for name, value in headers.items()
        if name.lower() not in _NOT_RELAYED
    }


def with_model(body: bytes, model: str) -> bytes:
    """The body with its ``model`` replaced (a route's ``upstream_model``): the one change forwarding ever makes.

    Raises:
        ProtocolError: 400 when the body is not a JSON object.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ProtocolError(400, "invalid_json", "The body must be a JSON object.")
    return orjson.dumps({**value, "model": model})
