"""HTTP transport: ``POST /responses`` with ``stream: true``, and SSE resume through ``GET /responses/{id}``.

Server-Sent Events are decoded with :class:`tether.protocol.sse.SSEDecoder` straight from the bytes (never
``aiter_lines``, which splits JSON strings at U+2028).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx2 as httpx
import orjson

from tether.client.errors import ConnectionLostError, ServerUnreachableError, api_error_from_http
from tether.client.events import ClientStats, Connected, Disconnected, Emitter, Offline, SentRequest, TransportKind
from tether.client.transport import ConnectionPolicy, responses_url
from tether.protocol.sse import SSEDecodeError, SSEDecoder
from tether.protocol.vocabulary import RESUME_TOKEN
from tether.types import JSONObject


class HTTPTransport:
    """Turns over HTTP SSE.

    Args:
        base_url: the API base, e.g. ``http://127.0.0.1:8000/v1``.
        headers: sent with every request (``Authorization`` among them).
        policy: timeouts.
        emitter: where connection events go.
        stats: counters to update.
        client: an ``httpx2.AsyncClient`` to use (it stays the caller's to close); by default one is made.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        policy: ConnectionPolicy,
        emitter: Emitter,
        stats: ClientStats,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = responses_url(base_url)
        self._emitter = emitter
        self._stats = stats
        timeout = httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout
        self._headers = dict(headers)
        self._state: str = "new"  # new | online | lost | offline

    @property
    def kind(self) -> TransportKind:
        return TransportKind.HTTP

    async def connect(self) -> None:
        """HTTP opens connections per request (from the client's pool): nothing to do."""

    def create(self, body: JSONObject, idempotency_key: str | None) -> AsyncGenerator[JSONObject, None]:
        headers = {"accept": "text/event-stream", "content-type": "application/json"}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        return self._stream("POST", self.url, {**body, "stream": True}, headers, None)

    def resume(self, response_id: str, after: int, resume_token: str | None) -> AsyncGenerator[JSONObject, None]:
        params: dict[str, Any] = {"stream": "true", "starting_after": after}
        if resume_token is not None:
            params[RESUME_TOKEN] = resume_token
        return self._stream("GET", f"{self.url}/{response_id}", None, {"accept": "text/event-stream"}, params)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def _stream(
        self,
        method: str,
        url: str,
        body: JSONObject | None,
        headers: dict[str, str],
        params: dict[str, Any] | None,
    ) -> AsyncGenerator[JSONObject, None]:
        content = orjson.dumps(body) if body is not None else None
        request = self._client.build_request(
            method, url, content=content, params=params, headers={**self._headers, **headers}, timeout=self._timeout
        )
        size = len(content or b"")
        self._stats.bytes_sent += size
        self._emitter.request(SentRequest(TransportKind.HTTP, method, str(request.url), body, size))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.ConnectError as error:
            raise self._offline(f"cannot connect: {error}") from error
        except httpx.ConnectTimeout as error:
            raise self._offline("connection timed out") from error
        except (httpx.TransportError, OSError) as error:
            raise self._lost(f"request failed: {error!r}") from error
        try:
            self._online()
            if response.status_code != 200:
                raise api_error_from_http(response.status_code, await self._read_all(response), response.headers)
            async for event in self._events(response):
                yield event
        finally:
            await response.aclose()

    async def _events(self, response: httpx.Response) -> AsyncGenerator[JSONObject, None]:
        # The body is read to its end, past ``[DONE]``, so that the connection goes back to the pool. A body that
        # ends cleanly without ``[DONE]`` (OpenAI omits it) is the end of the stream too; the session tells a
        # finished response from a cut-short one by its terminal event.
        decoder = SSEDecoder()
        done = False
        try:
            async for chunk in response.aiter_bytes():
                self._stats.bytes_received += len(chunk)
                for sse in decoder.decode(chunk):
                    done = done or sse.is_done
                    if done:
                        continue
                    event = sse.json()
                    if not isinstance(event, dict):
                        raise self._lost(f"SSE data is not a JSON object: {sse.data[:100]!r}")
                    yield event
        except (httpx.TransportError, OSError) as error:
            raise self._lost(f"stream broken: {error!r}") from error
        except (SSEDecodeError, orjson.JSONDecodeError) as error:
            raise self._lost(f"malformed event stream: {error}") from error

    async def _read_all(self, response: httpx.Response) -> bytes:
        try:
            body = await response.aread()
            self._stats.bytes_received += len(body)
            return body
        except (httpx.TransportError, OSError) as error:
            raise self._lost(f"error body broken: {error!r}") from error

    def _online(self) -> None:
        if self._state != "online":
            reconnect = self._state in ("lost", "offline")
            if reconnect:
                self._stats.reconnects += 1
            self._state = "online"
            self._emitter.event(Connected(TransportKind.HTTP, reconnect))

    def _lost(self, reason: str) -> ConnectionLostError:
        if self._state == "online":
            self._emitter.event(Disconnected(TransportKind.HTTP, reason))
        self._state = "lost"
        return ConnectionLostError(reason)

    def _offline(self, reason: str) -> ServerUnreachableError:
        if self._state != "offline":
            self._emitter.event(Offline(reason))
        self._state = "offline"
        return ServerUnreachableError(reason)
