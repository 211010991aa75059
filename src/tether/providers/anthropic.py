"""The ``anthropic`` upstream: the Anthropic Messages API (or a server that speaks it).

The upstream is stateless: every turn sends the whole context, with prompt-caching breakpoints on its stable prefix
(see :mod:`tether.providers.translate_anthropic`) so a long agent session pays for each token in full once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import httpx2 as httpx

from tether.protocol.model_events import ModelEvent
from tether.providers.base import ProviderRequest
from tether.providers.http_upstream import UpstreamClient, UpstreamFields, UpstreamOptions, event_json, upstream_options
from tether.providers.raw_forward import ForwardedAPI, RawForwarder, RawReply, RawRequest
from tether.providers.retry import Sleep
from tether.providers.translate_anthropic import DEFAULT_MAX_TOKENS, AnthropicStreamDecoder, anthropic_request
from tether.providers.upstream_errors import stream_error, upstream_failure

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"


class AnthropicFields(UpstreamFields, Protocol):
    @property
    def prompt_caching(self) -> bool: ...
    @property
    def thinking_budget_tokens(self) -> int | None: ...


class AnthropicProvider:
    """Streams turns from ``POST {base_url}/v1/messages``.

    Args:
        name: the provider's name in the config (used in errors and logs).
        options: where and how to connect; ``api_key`` is sent as ``x-api-key``.
        prompt_caching: place ``cache_control`` breakpoints on the stable prefix.
        default_max_tokens: ``max_tokens`` (required by the API) when the client sets no ``max_output_tokens``.
        thinking_budget_tokens: extended thinking with this budget for turns whose request does not say
            (see :mod:`tether.providers.anthropic_thinking`).
        transport: an httpx transport, for tests.
        sleep: the retry sleep, for tests.
    """

    def __init__(
        self,
        name: str,
        options: UpstreamOptions,
        *,
        prompt_caching: bool = True,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        thinking_budget_tokens: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.name = name
        self.api: ForwardedAPI = "anthropic-messages"
        self.prompt_caching = prompt_caching
        self.default_max_tokens = default_max_tokens
        self.thinking_budget_tokens = thinking_budget_tokens
        auth = {"x-api-key": options.api_key} if options.api_key else {}
        self._upstream = UpstreamClient(
            name, options, auth, headers={"anthropic-version": ANTHROPIC_VERSION}, transport=transport, sleep=sleep
        )
        self._forwarder = RawForwarder(name, self._upstream.http, self._upstream.backoff)
        self._path = "messages" if options.base_url.rstrip("/").endswith("/v1") else "v1/messages"

    @classmethod
    def from_config(cls, name: str, config: AnthropicFields, api_key: str | None) -> AnthropicProvider:
        """Build from a provider's config (``ProviderSettings``) and its key."""
        options = upstream_options(config, api_key, default_base_url=ANTHROPIC_BASE_URL)
        return cls(
            name, options, prompt_caching=config.prompt_caching, thinking_budget_tokens=config.thinking_budget_tokens
        )

    def check_request(self, request: ProviderRequest) -> None:
        """Translate the request (its parameters and new items) once, for what the Messages API cannot express."""
        anthropic_request(
            request,
            prompt_caching=False,
            default_max_tokens=self.default_max_tokens,
            thinking_budget_tokens=self.thinking_budget_tokens,
        )

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ModelEvent, None]:
        """Run one turn.

        Raises:
            ProtocolError: the context cannot be expressed as messages (400), or the upstream failed.
        """
        body = anthropic_request(
            request,
            prompt_caching=self.prompt_caching,
            default_max_tokens=self.default_max_tokens,
            thinking_budget_tokens=self.thinking_budget_tokens,
        )
        decoder = AnthropicStreamDecoder()
        async with self._upstream.stream_events(self._path, body, request.trace_headers) as events:
            async for event in events:
                data = event_json(self.name, event)
                if data.get("type") == "error":
                    raise stream_error(self.name, data, self._upstream.secrets)
                for model_event in decoder.feed(data):
                    yield model_event
                if decoder.finished:
                    break
        if not decoder.finished:
            raise upstream_failure(self.name, 502, "the stream ended before message_stop")
        # The response is closed before the Finish goes out: a consumer that stops at Finish leaves nothing open.
        for model_event in decoder.close():
            yield model_event

    def forward(self, request: RawRequest) -> AbstractAsyncContextManager[RawReply]:
        """Forward a Messages request (``/v1/messages``, ``/v1/messages/count_tokens``, ``/v1/models``) untouched, and
        relay the answer as it came (see :class:`~tether.providers.raw_forward.RawForwarding`).

        Raises:
            ProtocolError: the upstream could not be reached (after the retries allowed), 502 or 504.
        """
        return self._forwarder.forward(request)

    async def aclose(self) -> None:
        await self._upstream.aclose()
