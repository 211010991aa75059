"""An OpenAI Responses upstream over HTTP: ``POST {base_url}/responses`` with ``stream: true``, read as SSE.

This module only moves bytes: it yields the upstream's events as JSON objects and raises
:class:`~tether.providers.responses_events.UpstreamReportedError` for an error answer (keeping the upstream's code,
so the provider can tell ``previous_response_not_found`` from the rest) and
:class:`~tether.providers.responses_events.UpstreamConnectionError` when the connection fails. Retrying is the
provider's decision.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import httpx2 as httpx
import orjson

from tether.protocol.sse import SSEDecodeError, SSEDecoder
from tether.providers.http_upstream import UpstreamOptions, sanitise
from tether.providers.responses_events import UpstreamConnectionError, UpstreamReportedError, reported_error
from tether.types import JSONObject

_KEPT_HEADERS = ("retry-after", "retry-after-ms")
_MIN_SECRET_CHARS = 8  # shorter header values (versions, flags) are not credentials, and redacting them garbles text


class ResponsesHTTPTransport:
    """Streams one create request at a time over a shared HTTP connection pool.

    Args:
        options: where and how to connect (``api_key`` goes into ``Authorization: Bearer``, nowhere else).
        transport: an httpx transport, for tests.
    """

    def __init__(self, options: UpstreamOptions, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = options
        headers = {**options.headers, "accept": "text/event-stream"}
        if options.api_key:
            headers["authorization"] = f"Bearer {options.api_key}"
        self.secrets = secrets_of(options)
        self._client = httpx.AsyncClient(
            base_url=options.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s),
            transport=transport,
        )

    async def events(self, body: JSONObject) -> AsyncGenerator[JSONObject, None]:
        """POST ``body`` (with ``stream: true``) and yield the events of the answer.

        Raises:
            UpstreamReportedError: the upstream answered with an error status or an error body.
            UpstreamConnectionError: the connection failed or broke (``mid_turn`` once the request was accepted).
        """
        content = orjson.dumps({**body, "stream": True})
        request = self._client.build_request(
            "POST", "responses", content=content, headers={"content-type": "application/json"}
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise UpstreamConnectionError(f"no answer within {self.options.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            reason = sanitise(str(exc), self.secrets) or type(exc).__name__
            raise UpstreamConnectionError(f"could not connect ({reason})") from None
        try:
            if response.status_code >= 400:
                raise await self._error(response)
            if response.headers.get("content-type", "").startswith("application/json"):
                for event in _events_of_whole_response(await self._json(response)):
                    yield event
                return
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                for sse in decoder.decode(chunk):
                    if sse.is_done:
                        return
                    yield self._decode(sse.data.encode())
        except httpx.TimeoutException:
            raise UpstreamConnectionError(f"no event for {self.options.timeout_s:g} s", mid_turn=True) from None
        except httpx.TransportError as exc:
            raise UpstreamConnectionError(f"the stream broke ({type(exc).__name__})", mid_turn=True) from None
        except SSEDecodeError as exc:
            raise UpstreamConnectionError(f"the stream could not be read ({exc})", mid_turn=True) from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _error(self, response: httpx.Response) -> UpstreamReportedError:
        try:
            raw = await response.aread()
        except httpx.HTTPError:
            raw = b""
        try:
            payload: object = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = {"error": {"message": raw.decode("utf-8", "replace")[:500]}}
        error = reported_error(payload, response.status_code)
        error.message = sanitise(error.message, self.secrets)
        error.headers.update(_kept(response.headers))
        return error

    async def _json(self, response: httpx.Response) -> JSONObject:
        return self._decode(await response.aread())

    def _decode(self, data: bytes) -> JSONObject:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamConnectionError("the upstream sent an event that is not JSON", mid_turn=True) from None
        if not isinstance(value, dict):
            raise UpstreamConnectionError("the upstream sent an event that is not a JSON object", mid_turn=True)
        return value


def secrets_of(options: UpstreamOptions) -> tuple[str, ...]:
    """What must never appear in a message: the key, and the extra headers' values (they may carry credentials)."""
    extra = (value for value in options.headers.values() if len(value) >= _MIN_SECRET_CHARS)
    return tuple(secret for secret in (options.api_key, *extra) if secret)


def _events_of_whole_response(response: JSONObject) -> list[JSONObject]:
    """The events a streamed answer would have carried, for an upstream that answered with the whole response."""
    if "error" in response and "output" not in response:
        raise reported_error(response)
    output = response.get("output")
    items = output if isinstance(output, list) else []
    events: list[JSONObject] = [
        {"type": "response.output_item.done", "output_index": index, "item": item}
        for index, item in enumerate(items)
        if isinstance(item, dict)
    ]
    terminal = {"failed": "response.failed", "incomplete": "response.incomplete"}.get(
        str(response.get("status")), "response.completed"
    )
    events.append({"type": terminal, "response": response})
    return events


def _kept(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in _KEPT_HEADERS if name in headers}
