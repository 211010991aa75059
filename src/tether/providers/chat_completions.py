"""The ``chat-completions`` upstream: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, OpenRouter, ...).

The upstream is stateless, so every turn sends the whole context, rebuilt by tether from its own store; the client
still sends only the new items.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager

import httpx2 as httpx

from tether.protocol.model_events import ModelEvent
from tether.providers.base import ProviderRequest
from tether.providers.http_upstream import UpstreamClient, UpstreamFields, UpstreamOptions, event_json, upstream_options
from tether.providers.raw_forward import ForwardedAPI, RawForwarder, RawReply, RawRequest
from tether.providers.retry import Sleep
from tether.providers.translate_chat import ChatStreamDecoder, chat_request
from tether.providers.upstream_errors import stream_error, upstream_failure


class ChatCompletionsProvider:
    """Streams turns from ``POST {base_url}/chat/completions``.

    Args:
        name: the provider's name in the config (used in errors and logs).
        options: where and how to connect; ``api_key`` is sent as ``Authorization: Bearer``.
        transport: an httpx transport, for tests.
        sleep: the retry sleep, for tests.
    """

    def __init__(
        self,
        name: str,
        options: UpstreamOptions,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.name = name
        self.api: ForwardedAPI = "chat-completions"
        auth = {"authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self._upstream = UpstreamClient(name, options, auth, transport=transport, sleep=sleep)
        self._forwarder = RawForwarder(name, self._upstream.http, self._upstream.backoff)

    @classmethod
    def from_config(cls, name: str, config: UpstreamFields, api_key: str | None) -> ChatCompletionsProvider:
        """Build from a provider's config (``ProviderSettings``) and its key."""
        return cls(name, upstream_options(config, api_key))

    def check_request(self, request: ProviderRequest) -> None:
        """Translate the request (its parameters and new items) once, for what Chat Completions cannot express."""
        chat_request(request)

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ModelEvent, None]:
        """Run one turn.

        Raises:
            ProtocolError: the context cannot be expressed as messages (400), or the upstream failed.
        """
        decoder = ChatStreamDecoder()
        done = False
        async with self._upstream.stream_events(
            "chat/completions", chat_request(request), request.trace_headers
        ) as events:
            async for event in events:
                if event.is_done:
                    done = True
                    break
                chunk = event_json(self.name, event)
                if "error" in chunk:
                    raise stream_error(self.name, chunk, self._upstream.secrets)
                for model_event in decoder.feed(chunk):
                    yield model_event
        if not (done or decoder.finished):
            raise upstream_failure(self.name, 502, "the stream ended before the answer finished")
        # The response is closed before the Finish goes out: a consumer that stops at Finish leaves nothing open.
        for model_event in decoder.close():
            yield model_event

    def forward(self, request: RawRequest) -> AbstractAsyncContextManager[RawReply]:
        """Forward a Chat Completions request (``/v1/chat/completions``, ``/v1/models``) untouched, and
        relay the answer as it came (see :class:`~tether.providers.raw_forward.RawForwarding`).

        Raises:
            ProtocolError: the upstream could not be reached (after the retries allowed), 502 or 504.
        """
        return self._forwarder.forward(request)

    async def aclose(self) -> None:
        await self._upstream.aclose()
