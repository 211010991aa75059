"""Same-API forwarding: the agent's request reaches the fake upstream byte for byte, and its answer comes back as it
came; retries only before the first byte; credentials from the config, or the agent's own, never logged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import structlog

from tether.protocol.agent_apis import ChatStreamChecker, MessagesStreamChecker
from tether.protocol.errors import ProtocolError
from tether.providers import ScriptedProvider, ScriptedTiming
from tether.providers.anthropic import AnthropicProvider
from tether.providers.chat_completions import ChatCompletionsProvider
from tether.providers.fakes import FakeAnthropic, FakeChatCompletions
from tether.providers.http_upstream import UpstreamOptions
from tether.providers.raw_forward import RawForwarding, RawReply, RawRequest, raw_forwarder
from tether.providers.router import ProviderRouter, Route
from tether.types import JSONObject

CONFIG_KEY = "sk-ant-configured-0123456789"
AGENT_KEY = "sk-ant-agents-own-key-9876543210"
SCRIPT: list[dict[str, Any]] = [
    {"reasoning": "Look.", "text": "Reading.", "tool_calls": [{"name": "Read", "arguments": {"path": "a.py"}}]},
    {"text": "Fixed."},
]
CLAUDE_CODE: JSONObject = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "system", "content": "<env>cwd=/repo</env>"},
        {"role": "user", "content": "Fix the test."},
        {"role": "user", "content": [{"type": "text", "text": "<reminder/>", "cache_control": {"type": "ephemeral"}}]},
    ],
    "tools": [{"name": "Read", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
    "thinking": {"type": "enabled", "budget_tokens": 2000},
    "metadata": {"user_id": "user_1"},
    "stream": True,
    "a_field_tether_does_not_know": [1, {"x": None}],
}
AGENT_HEADERS = {
    "Host": "127.0.0.1:8787",
    "Content-Length": "999",
    "Accept-Encoding": "gzip",
    "Connection": "keep-alive",
    "content-type": "application/json",
    "accept": "application/json",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
    "x-claude-code-session-id": "sess-1",
    "x-api-key": AGENT_KEY,
}


async def no_sleep(_: float) -> None:
    return None


def anthropic_provider(fake: FakeAnthropic, api_key: str | None, retries: int = 2) -> AnthropicProvider:
    options = UpstreamOptions(base_url=fake.base_url, api_key=api_key, max_retries=retries, backoff_s=0.01)
    return AnthropicProvider("claude", options, sleep=no_sleep)


def messages_request(body: JSONObject = CLAUDE_CODE, path: str = "/v1/messages") -> RawRequest:
    # Not orjson's compact form: the bytes must arrive exactly as the agent wrote them.
    raw = orjson.dumps(body, option=orjson.OPT_INDENT_2)
    return RawRequest("POST", path, raw, AGENT_HEADERS)


async def relay(provider: RawForwarding, request: RawRequest) -> tuple[RawReply, bytes]:
    async with provider.forward(request) as reply:
        return reply, await reply.read()


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script=SCRIPT, api_key=CONFIG_KEY, chunk_size=3) as running:
        yield running


async def test_a_messages_stream_is_forwarded_untouched_and_relayed_as_it_came(fake: FakeAnthropic) -> None:
    provider = anthropic_provider(fake, CONFIG_KEY)
    request = messages_request()

    reply, data = await relay(provider, request)

    (received,) = fake.requests
    assert received.raw == request.body
    assert orjson.loads(received.raw) == CLAUDE_CODE
    assert received.headers["anthropic-beta"] == AGENT_HEADERS["anthropic-beta"]
    assert received.headers["x-claude-code-session-id"] == "sess-1"
    assert received.headers["accept"] == "application/json"
    assert received.headers["x-api-key"] == CONFIG_KEY, "the configured key replaces the agent's"
    assert AGENT_KEY not in str(received.headers)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in reply.headers
    checker = MessagesStreamChecker()
    checker.feed(data)
    message = checker.close()
    assert [block["type"] for block in message["content"]] == ["thinking", "text", "tool_use"]
    await provider.aclose()


async def test_a_rebuilt_json_value_reaches_the_upstream_as_the_same_value(fake: FakeAnthropic) -> None:
    provider = anthropic_provider(fake, CONFIG_KEY)

    reply, _ = await relay(provider, RawRequest.of_json("POST", "/v1/messages", CLAUDE_CODE, AGENT_HEADERS))

    assert reply.status == 200
    assert orjson.loads(fake.requests[0].raw) == CLAUDE_CODE
    await provider.aclose()


async def test_the_relayed_bytes_are_the_upstreams_bytes(fake: FakeAnthropic) -> None:
    provider = anthropic_provider(fake, CONFIG_KEY)
    with FakeAnthropic(script=SCRIPT, chunk_size=3) as twin:
        headers = {"anthropic-version": "2023-06-01"}
        async with httpx.AsyncClient() as client:
            direct = await client.post(f"{twin.base_url}/v1/messages", content=messages_request().body, headers=headers)

    _, relayed = await relay(provider, messages_request())

    assert relayed == direct.content
    await provider.aclose()


async def test_without_a_configured_key_the_agents_own_credentials_go_upstream() -> None:
    with FakeAnthropic(script=SCRIPT, api_key=AGENT_KEY) as fake:
        provider = anthropic_provider(fake, None)

        reply, _ = await relay(provider, messages_request())

        assert reply.status == 200
        assert fake.requests[0].headers["x-api-key"] == AGENT_KEY
        await provider.aclose()


async def test_credentials_are_never_logged_nor_shown(fake: FakeAnthropic) -> None:
    provider = anthropic_provider(fake, None)  # the agent's key goes upstream, and the fake refuses it (401)
    request = messages_request()

    with structlog.testing.capture_logs() as logs:
        reply, body = await relay(provider, request)

    assert reply.status == 401, "the upstream's own refusal is relayed"
    assert orjson.loads(body)["error"]["type"] == "authentication_error"
    assert logs, "forwarding logs a line"
    assert AGENT_KEY not in str(logs)
    assert AGENT_KEY not in repr(request)
    await provider.aclose()


async def test_errors_are_retried_before_the_first_byte_then_relayed_as_they_came(fake: FakeAnthropic) -> None:
    provider = anthropic_provider(fake, CONFIG_KEY, retries=2)
    fake.fail_next(1, 529, "Overloaded")

    reply, data = await relay(provider, messages_request())

    assert (reply.status, reply.retries, len(fake.requests)) == (200, 1, 2)
    assert b"message_stop" in data
    fake.fail_next(3, 503, "Down for a moment.", retry_after=0)
    reply, data = await relay(provider, messages_request())
    assert (reply.status, reply.retries) == (503, 2)
    assert orjson.loads(data) == {"type": "error", "error": {"type": "api_error", "message": "Down for a moment."}}
    assert reply.headers["retry-after"] == "0"
    await provider.aclose()


async def test_a_refused_request_is_relayed_at_once(fake: FakeAnthropic) -> None:
    provider = anthropic_provider(fake, CONFIG_KEY)
    body = {**CLAUDE_CODE, "messages": [{"role": "assistant", "content": "first"}]}

    reply, data = await relay(provider, messages_request(body))

    assert (reply.status, reply.retries, len(fake.requests)) == (400, 0, 1)
    assert orjson.loads(data)["error"]["type"] == "invalid_request_error"
    await provider.aclose()


async def test_count_tokens_and_models_are_forwarded(fake: FakeAnthropic) -> None:
    provider = anthropic_provider(fake, CONFIG_KEY)
    counted = {key: CLAUDE_CODE[key] for key in ("model", "messages", "system", "tools")}

    count, count_body = await relay(provider, messages_request(counted, "/v1/messages/count_tokens"))
    models, models_body = await relay(provider, RawRequest("GET", "/v1/models", b"", AGENT_HEADERS, "limit=2"))

    assert count.status == 200
    assert orjson.loads(count_body)["input_tokens"] > 0
    assert models.status == 200
    assert orjson.loads(models_body)["data"][0]["type"] == "model"
    assert [(r.method, r.path, r.query) for r in fake.requests] == [
        ("POST", "/v1/messages/count_tokens", ""),
        ("GET", "/v1/models", "limit=2"),
    ]
    await provider.aclose()


async def test_an_unreachable_upstream_is_a_protocol_error_after_the_retries() -> None:
    with FakeAnthropic() as gone:
        base_url = gone.base_url
    options = UpstreamOptions(base_url=base_url, api_key=CONFIG_KEY, max_retries=1, backoff_s=0.01)
    provider = AnthropicProvider("claude", options, sleep=no_sleep)

    with pytest.raises(ProtocolError) as caught:
        await relay(provider, messages_request())

    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert CONFIG_KEY not in caught.value.message
    await provider.aclose()


async def test_a_chat_completions_stream_is_forwarded_untouched() -> None:
    body = {
        "model": "local-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "unknown_vendor_field": {"keep": True},
    }
    with FakeChatCompletions(script=SCRIPT, api_key="chat-key-0123456789") as fake:
        options = UpstreamOptions(base_url=fake.base_url, api_key="chat-key-0123456789")
        provider = ChatCompletionsProvider("local", options, sleep=no_sleep)
        raw = orjson.dumps(body)
        headers = {"authorization": "Bearer agents-placeholder", "content-type": "application/json"}

        reply, data = await relay(provider, RawRequest("POST", "/v1/chat/completions", raw, headers))

        assert fake.requests[0].raw == raw
        assert fake.requests[0].headers["authorization"] == "Bearer chat-key-0123456789"
        assert reply.status == 200
        assert data.endswith(b"data: [DONE]\n\n")
        checker = ChatStreamChecker(include_usage=True)
        checker.feed(data)
        assert checker.close()["finish_reason"] == "tool_calls"
        await provider.aclose()


# -- the router: which model forwards, and along which chain -------------------------------------------------


async def test_the_router_says_which_models_forward(fake: FakeAnthropic) -> None:
    claude = anthropic_provider(fake, CONFIG_KEY)
    with FakeChatCompletions() as chat_fake:
        chat = ChatCompletionsProvider("local", UpstreamOptions(base_url=chat_fake.base_url))
        router = ProviderRouter(
            {"scripted": ScriptedProvider(ScriptedTiming()), "claude": claude, "local": chat},
            [Route("claude-*", "claude"), Route("local-*", "local")],
        )

        assert raw_forwarder(router.resolve("claude-sonnet-4-5"), "anthropic-messages") is not None
        assert raw_forwarder(router.resolve("claude-sonnet-4-5"), "chat-completions") is None
        assert raw_forwarder(router.resolve("local-1"), "chat-completions") is not None
        assert raw_forwarder(router.resolve("anything-else"), "anthropic-messages") is None  # the scripted model
        await router.aclose()


async def test_a_route_renames_the_model_and_falls_back_along_same_api_providers(fake: FakeAnthropic) -> None:
    with FakeAnthropic() as gone:
        dead_url = gone.base_url
    dead = AnthropicProvider("dead", UpstreamOptions(base_url=dead_url, max_retries=0), sleep=no_sleep)
    live = anthropic_provider(fake, CONFIG_KEY)
    router = ProviderRouter(
        {"scripted": ScriptedProvider(ScriptedTiming()), "dead": dead, "live": live},
        [Route("claude-*", "dead", upstream_model="claude-opus-4-5", fallbacks=("live",))],
    )
    forwarder = raw_forwarder(router.resolve("claude-sonnet-4-5"), "anthropic-messages")
    assert forwarder is not None

    reply, _ = await relay(forwarder, messages_request())

    assert reply.status == 200
    assert orjson.loads(fake.requests[0].raw) == {**CLAUDE_CODE, "model": "claude-opus-4-5"}
    await router.aclose()
