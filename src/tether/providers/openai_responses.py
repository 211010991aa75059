"""An OpenAI Responses upstream (OpenAI, Azure OpenAI, xAI, any Open Responses server), over HTTP/SSE or WebSocket.

The upstream is stateful, so tether sends it deltas too: a turn whose parent maps to an upstream response goes up
as that response's id plus the turn's new items (:mod:`tether.providers.responses_payload`). Whenever the upstream
cannot continue (``previous_response_not_found``, a dropped socket, a ``store=false`` response on another socket,
a restart that emptied the id map) the turn goes up with the full context tether holds, before anything reached
the client, so the client never notices. Upstream ids never leave this module: clients see tether's ids.

Credentials: a configured key always wins. A provider with none (no ``api_key_env``, no credential header configured)
sends the agent's own ``Authorization`` when an edge relayed the turn (``ProviderRequest.credentials``): on each HTTP
request, and as the upgrade header of WebSocket sockets that only that credential's turns use
(:class:`~tether.providers.responses_ws.PoolsByCredential`).

An upstream declared stateless (``stateful = false``: vLLM's or SGLang's ``/v1/responses`` without a store) gets
every turn with the full context and ``store: false``, in one request: no delta for it to refuse first.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx2 as httpx
import structlog

from tether.protocol.model_events import Finish, ModelEvent
from tether.providers.base import ProviderRequest
from tether.providers.http_upstream import UpstreamFields, UpstreamOptions, upstream_options
from tether.providers.raw_forward import CREDENTIAL_HEADERS
from tether.providers.redaction import secrets_of
from tether.providers.responses_events import ResponsesEventReader
from tether.providers.responses_http import ResponsesHTTPTransport
from tether.providers.responses_payload import (
    ResponseIdMap,
    UpstreamRef,
    continuation_of,
    create_body,
    stores_upstream,
)
from tether.providers.responses_steering import SteerSender, UpstreamSuccessor
from tether.providers.responses_ws import PoolsByCredential, SocketPool, UpstreamSocket, exchange, websocket_url
from tether.providers.retry import Sleep
from tether.providers.upstream_errors import UpstreamConnectionError, UpstreamReportedError, protocol_error
from tether.types import JSONObject

_log = structlog.get_logger("tether.providers")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_NOT_FOUND = "previous_response_not_found"
_CONNECTION_LIMIT = "websocket_connection_limit_reached"


class ResponsesFields(UpstreamFields, Protocol):
    """The fields of a provider's config this provider reads (``ProviderSettings`` has them)."""

    @property
    def transport(self) -> Literal["http", "websocket"]: ...
    @property
    def max_connection_age_s(self) -> float: ...
    @property
    def stateful(self) -> bool: ...
    @property
    def steer_answer_grace_s(self) -> float: ...


@dataclass(slots=True)
class _Attempt:
    """What the retry loop knows about a turn so far."""

    full_context: bool = False
    sent_delta: bool = False
    retries: int = 0


class OpenAIResponsesProvider:
    """A Responses API upstream.

    Args:
        name: the provider's configured name.
        options: where and how to reach it; ``api_key`` is sent as ``Authorization: Bearer`` only.
        transport: ``"http"`` (``POST /responses`` with SSE) or ``"websocket"`` (WebSocket mode, one socket per lane).
        max_connection_age_s: WebSocket rotation age, below the upstream's cap (OpenAI: 60 min, xAI: 25 min).
        id_map_size: how many tether → upstream response ids are remembered.
        stateful: ``False`` for an upstream that keeps no responses: every turn goes up whole, ``store: false``.
        steer_answer_grace_s: after a steered response's end, how long the upstream may take to say what became of
            its steers (a successor, pending or failed); past it they fail and the socket is closed.
        http_transport: an httpx transport, for tests.
        sleep: the retry sleep, for tests.
    """

    def __init__(
        self,
        name: str,
        options: UpstreamOptions,
        *,
        transport: Literal["http", "websocket"] = "http",
        max_connection_age_s: float = 3300.0,
        id_map_size: int = 100_000,
        stateful: bool = True,
        steer_answer_grace_s: float = 10.0,
        http_transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self.stateful = stateful
        self.ids = ResponseIdMap(id_map_size if stateful else 1)
        self.secrets = options.secrets
        self.backoff = options.backoff(name, sleep)
        self.relays_steering = transport == "websocket"
        """``response.steer`` goes up the socket of the turn it steers (see :mod:`.responses_steering`)."""
        self.steer_answer_grace_s = steer_answer_grace_s
        self.keyed = options.api_key is not None or any(name.lower() in CREDENTIAL_HEADERS for name in options.headers)
        """A key is configured: the agent's forwarded credentials are never used."""
        self._http: ResponsesHTTPTransport | None = None
        self.pool: SocketPool | None = None
        self.forwarded_pools: PoolsByCredential | None = None
        if transport == "http":
            self._http = ResponsesHTTPTransport(options, transport=http_transport)
        else:
            headers = dict(options.headers)
            if options.api_key:
                headers["Authorization"] = f"Bearer {options.api_key}"

            def pool(extra: dict[str, str]) -> SocketPool:
                return SocketPool(
                    websocket_url(options.base_url),
                    {**headers, **extra},
                    (*self.secrets, *secrets_of(None, extra)),
                    max_age_s=max_connection_age_s,
                    open_timeout_s=options.connect_timeout_s,
                )

            self.pool = pool({})
            self.forwarded_pools = PoolsByCredential(pool)

    @classmethod
    def from_config(cls, name: str, config: ResponsesFields, api_key: str | None) -> OpenAIResponsesProvider:
        """Build from a ``[providers.NAME]`` section with ``kind = "openai-responses"``."""
        options = upstream_options(config, api_key, default_base_url=DEFAULT_BASE_URL)
        return cls(
            name,
            options,
            transport=config.transport,
            max_connection_age_s=config.max_connection_age_s,
            stateful=config.stateful,
            steer_answer_grace_s=config.steer_answer_grace_s,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ModelEvent]:
        """Run one turn upstream: as a delta when the upstream holds the parent, else with the full context.

        Raises:
            ProtocolError: the upstream failed (after the retries allowed, or after events were yielded).
        """
        attempt = _Attempt(full_context=not self.stateful)
        forwarded = self._forwarded(request)
        secrets = (*self.secrets, *secrets_of(None, forwarded))
        while True:
            started = False
            try:
                runner = (
                    self._over_websocket(request, attempt, forwarded)
                    if self.pool
                    else self._over_http(request, attempt, forwarded)
                )
                async with contextlib.aclosing(runner) as events:
                    async for event in events:
                        started = True
                        yield event
                return
            except UpstreamReportedError as error:
                failure = protocol_error(self.name, error, secrets)
                if started:
                    raise failure from None
                if error.code == _NOT_FOUND and attempt.sent_delta and not attempt.full_context:
                    # The upstream forgot the parent (evicted, expired, another socket): send everything once.
                    self._fall_back(request, attempt, error.code)
                    continue
                if error.code == _CONNECTION_LIMIT and attempt.retries < self.options.max_retries:
                    attempt.retries += 1
                    continue
                if not error.retryable:
                    raise failure from None
                await self.backoff.wait(attempt.retries, failure, error.headers)
                attempt.retries += 1
            except UpstreamConnectionError as error:
                failure = protocol_error(self.name, error, secrets)
                if started:
                    raise failure from None
                if error.mid_turn and attempt.sent_delta:
                    self._fall_back(request, attempt, "connection_lost")
                await self.backoff.wait(attempt.retries, failure)
                attempt.retries += 1

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self.pool is not None:
            await self.pool.aclose()
        if self.forwarded_pools is not None:
            await self.forwarded_pools.aclose()

    # -- transports ----------------------------------------------------------------------------------------

    def _forwarded(self, request: ProviderRequest) -> dict[str, str]:
        """The agent's credential to send upstream: only when no key is configured."""
        credential = None if self.keyed else request.credentials.get("authorization")
        return {"authorization": credential} if credential else {}

    async def _over_http(
        self, request: ProviderRequest, attempt: _Attempt, forwarded: dict[str, str]
    ) -> AsyncGenerator[ModelEvent, None]:
        assert self._http is not None
        previous = None if attempt.full_context else continuation_of(request, self.ids)
        attempt.sent_delta = previous is not None
        reader = ResponsesEventReader()
        finish: Finish | None = None
        async with contextlib.aclosing(
            self._http.events(self._body(request, previous), {**request.trace_headers, **forwarded})
        ) as events:
            async for raw in events:
                for event in reader.feed(raw):
                    if isinstance(event, Finish):
                        finish = event
                        break
                    yield event
                if finish is not None:
                    break
        if finish is None:
            raise UpstreamConnectionError("the stream ended before the response finished", mid_turn=True)
        self._remember(request, reader)
        yield finish

    async def _over_websocket(
        self, request: ProviderRequest, attempt: _Attempt, forwarded: dict[str, str]
    ) -> AsyncGenerator[ModelEvent, None]:
        assert self.pool is not None
        assert self.forwarded_pools is not None
        successor = request.continues
        frame: JSONObject | None = None
        first: JSONObject | None = None
        if isinstance(successor, UpstreamSuccessor) and successor.owner is self and successor.take():
            # The upstream started this turn itself (steering): read it from the socket it is on.
            pool, socket, first = successor.pool, successor.socket, successor.created
        else:
            pool = self.forwarded_pools.pool(forwarded) if forwarded else self.pool
            parent = self.ids.get(request.previous_response_id) if request.previous_response_id else None
            socket = await pool.acquire(request.lane_key, prefer=parent.upstream_id if parent else None)
        released = False
        reusable = True
        try:
            if first is None:
                held = socket.holds
                previous = None if attempt.full_context else continuation_of(request, self.ids, held_by_connection=held)
                attempt.sent_delta = previous is not None
                waiting = socket.steering.waiting.pop(previous, 0) if previous is not None else 0
                sent = request
                if waiting and request.queued_upstream:  # the upstream prepends the steering it holds for the parent
                    sent = dataclasses.replace(request, new_items=request.new_items[request.queued_upstream :])
                frame = {"type": "response.create", **self._body(sent, previous)}
            reader = ResponsesEventReader()
            sender = SteerSender(request.steering, socket) if request.steering is not None else None
            upstream = exchange(
                socket,
                frame,
                self.options.timeout_s,
                sender=sender,
                first=first,
                answer_grace_s=self.steer_answer_grace_s,
            )
            async with contextlib.aclosing(upstream) as upstream_events:
                async for raw in upstream_events:
                    try:
                        events = reader.feed(raw)
                    except UpstreamReportedError as error:
                        # A failed continuation evicts its parent from the connection-local cache; at its age
                        # limit the upstream closes the socket.
                        socket.holds = None
                        reusable = error.code != _CONNECTION_LIMIT
                        raise
                    for event in events:
                        if isinstance(event, Finish):
                            # Released before the Finish leaves: the lane's next turn may start as soon as it does.
                            released = True
                            self._remember(request, reader)
                            self._hand_over(request, pool, socket, reader)
                        yield event
        finally:
            if not released:
                pool.release(socket, request.lane_key, reusable=reusable)

    def _hand_over(
        self, request: ProviderRequest, pool: SocketPool, socket: UpstreamSocket, reader: ResponsesEventReader
    ) -> None:
        """Give the socket back, or, when steering started a successor on it, to the successor turn."""
        created, socket.successor = socket.successor, None
        if created is not None and request.steering is not None:
            request.steering.succeeded_by(UpstreamSuccessor(self, pool, socket, request.lane_key, created))
            return
        socket.holds = reader.upstream_id
        pool.release(socket, request.lane_key, reusable=created is None)

    # -- decisions -----------------------------------------------------------------------------------------

    def _body(self, request: ProviderRequest, previous: str | None) -> JSONObject:
        body = create_body(request, previous, stateless=not self.stateful)
        if not self.stateful:
            body["store"] = False  # tether holds the state; nothing up there could continue it
        return body

    def _remember(self, request: ProviderRequest, reader: ResponsesEventReader) -> None:
        if self.stateful and reader.upstream_id is not None:
            self.ids.put(request.response_id, UpstreamRef(reader.upstream_id, stored=stores_upstream(request)))

    def _fall_back(self, request: ProviderRequest, attempt: _Attempt, reason: str) -> None:
        if request.previous_response_id is not None:
            self.ids.drop(request.previous_response_id)
        attempt.full_context = True
        _log.info("upstream.full_context", provider=self.name, response_id=request.response_id, reason=reason)
