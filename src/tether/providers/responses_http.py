"""An OpenAI Responses upstream over HTTP: ``POST {base_url}/responses`` with ``stream: true``, read as SSE.

This module only moves bytes, over the shared HTTP stack (:class:`~tether.providers.http_upstream.UpstreamHTTP`):
it yields the upstream's events as JSON objects and raises
:class:`~tether.providers.upstream_errors.UpstreamReportedError` for an error answer (keeping the upstream's code,
so the provider can tell ``previous_response_not_found`` from the rest) and
:class:`~tether.providers.upstream_errors.UpstreamConnectionError` when the connection fails. Retrying is the
provider's decision.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping

import httpx2 as httpx

from tether.protocol.sse import ServerSentEvent
from tether.providers.http_upstream import UpstreamHTTP, UpstreamOptions
from tether.providers.responses_events import decode_event, reported_error
from tether.providers.upstream_errors import UpstreamConnectionError
from tether.types import JSONObject


class ResponsesHTTPTransport:
    """Streams one create request at a time over a shared HTTP connection pool.

    Args:
        options: where and how to connect (``api_key`` goes into ``Authorization: Bearer``, nowhere else).
        transport: an httpx transport, for tests.
    """

    def __init__(self, options: UpstreamOptions, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = options
        auth = {"authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self._http = UpstreamHTTP(options, auth, transport=transport)
        self.secrets = self._http.secrets

    async def events(
        self, body: JSONObject, headers: Mapping[str, str] | None = None
    ) -> AsyncGenerator[JSONObject, None]:
        """POST ``body`` (with ``stream: true``) and yield the events of the answer.

        Raises:
            UpstreamReportedError: the upstream answered with an error status or an error body.
            UpstreamConnectionError: the connection failed or broke (``mid_turn`` once the request was accepted).
        """
        deadline = time.monotonic() + self.options.timeout_s
        response = await self._http.post("responses", {**body, "stream": True}, headers)
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                try:
                    whole = await response.aread()
                except httpx.HTTPError as exc:
                    reason = f"the connection broke mid-answer ({type(exc).__name__})"
                    raise UpstreamConnectionError(reason, mid_turn=True) from None
                for event in _events_of_whole_response(decode_event(whole)):
                    yield event
                return
            async for sse in self._http.sse(response, deadline, _is_last):
                if sse.is_done:
                    return
                yield decode_event(sse.data)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()


_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


def _is_last(event: ServerSentEvent) -> bool:
    """An answer's last event: ``[DONE]``, or a terminal event named in its ``event`` field (as OpenAI frames
    them; an unnamed one is not recognised, and its connection is closed rather than pooled)."""
    return event.is_done or event.event in _TERMINAL


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
