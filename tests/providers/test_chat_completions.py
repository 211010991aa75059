"""The chat-completions provider against the fake server, and the HTTP behaviour every upstream shares."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx2 as httpx
import pytest

from tether.netutil import free_port
from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import Finish, ModelEvent, ReasoningSummaryDelta, TextDelta, ToolCallDelta
from tether.providers.anthropic import AnthropicProvider
from tether.providers.base import Provider, ProviderRequest
from tether.providers.chat_completions import ChatCompletionsProvider
from tether.providers.fakes import FakeChatCompletions
from tether.providers.http_upstream import UpstreamOptions, upstream_options
from tether.server.app import provider_router
from tether.settings import ProviderSettings, Settings
from tether.types import Item, JSONObject

KEY = "sk-test-0123456789abcdefghij"
TOOL: JSONObject = {"type": "function", "name": "read_file", "parameters": {"type": "object"}}
SCRIPT: list[dict[str, Any]] = [
    {
        "reasoning": "Two files.",
        "text": "Reading both.",
        "tool_calls": [
            {"name": "read_file", "arguments": {"path": "a.py"}},
            {"name": "read_file", "arguments": {"path": "b.py"}},
        ],
    },
    {"text": "Both files are fine."},
]


def make_request(context: Sequence[Item], *, params: JSONObject | None = None) -> ProviderRequest:
    return ProviderRequest(
        model="qwen3",
        instructions="Be brief.",
        context=context,
        new_items=context[-1:],
        tools=[TOOL],
        tool_choice="auto",
        context_tokens=0,
        cached_tokens=0,
        previous_response_id=None,
        response_id="resp_test",
        params=params or {},
    )


USER: list[Item] = [{"type": "message", "role": "user", "content": "Check a.py and b.py."}]


class Sleeps:
    """Records retry delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def fake() -> Iterator[FakeChatCompletions]:
    with FakeChatCompletions(script=SCRIPT, api_key=KEY) as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


ProviderFactory = Callable[..., ChatCompletionsProvider]


@pytest.fixture
async def make_provider(fake: FakeChatCompletions, sleeps: Sleeps) -> AsyncIterator[ProviderFactory]:
    made: list[ChatCompletionsProvider] = []

    def make(**options: Any) -> ChatCompletionsProvider:
        options.setdefault("base_url", fake.base_url)
        options.setdefault("api_key", KEY)
        transport = options.pop("transport", None)
        provider = ChatCompletionsProvider("vllm", UpstreamOptions(**options), transport=transport, sleep=sleeps)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def collect(provider: Provider, request: ProviderRequest) -> list[ModelEvent]:
    events = [event async for event in provider.stream(request)]
    assert isinstance(events[-1], Finish)
    return events


async def failure(provider: Provider, request: ProviderRequest | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        await collect(provider, request or make_request(USER))
    assert KEY not in caught.value.message
    return caught.value


# -- turns -----------------------------------------------------------------------------------------------------


async def test_a_turn_streams_reasoning_text_and_parallel_calls(
    make_provider: ProviderFactory, fake: FakeChatCompletions
) -> None:
    provider: Provider = make_provider()
    events = await collect(provider, make_request(USER))
    assert "".join(e.text for e in events if isinstance(e, ReasoningSummaryDelta)) == "Two files."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Reading both."
    calls: dict[str, str] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls[event.call_id] = calls.get(event.call_id, "") + event.arguments
    assert list(calls.values()) == ['{"path":"a.py"}', '{"path":"b.py"}']
    assert len([e for e in events if isinstance(e, ToolCallDelta)]) > 2, "arguments arrive in pieces"

    (recorded,) = fake.requests
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert recorded.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert recorded.body["stream_options"] == {"include_usage": True}


async def test_the_next_turn_sends_the_whole_context_and_reads_the_cache(
    make_provider: ProviderFactory, fake: FakeChatCompletions
) -> None:
    provider = make_provider()
    first = await collect(provider, make_request(USER))
    call_ids = list(dict.fromkeys(e.call_id for e in first if isinstance(e, ToolCallDelta)))
    context = [
        *USER,
        {"type": "message", "role": "assistant", "content": "Reading both."},
        *({"type": "function_call", "call_id": c, "name": "read_file", "arguments": "{}"} for c in call_ids),
        *({"type": "function_call_output", "call_id": c, "output": "fine"} for c in call_ids),
    ]
    second = await collect(provider, make_request(context))
    assert "".join(e.text for e in second if isinstance(e, TextDelta)) == "Both files are fine."
    assert [m["role"] for m in fake.requests[1].body["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    finish = second[-1]
    assert isinstance(finish, Finish)
    assert 0 < finish.usage.cached_tokens < finish.usage.input_tokens


async def test_max_output_tokens_cuts_the_answer(make_provider: ProviderFactory, fake: FakeChatCompletions) -> None:
    fake.script = None  # echo the user message
    events = await collect(make_provider(), make_request(USER, params={"max_output_tokens": 2}))
    assert fake.requests[0].body["max_tokens"] == 2
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Check a."
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == "max_output_tokens"


async def test_stopping_at_the_first_event_releases_the_connection(make_provider: ProviderFactory) -> None:
    stream = make_provider().stream(make_request(USER))
    assert isinstance(await anext(stream), ReasoningSummaryDelta)
    await stream.aclose()


async def test_turns_in_a_row_reuse_one_connection(make_provider: ProviderFactory, fake: FakeChatCompletions) -> None:
    # The body's end after [DONE] is read, so each connection goes back to the pool rather than being closed.
    provider = make_provider(pool_shards=1)
    for _ in range(20):
        await collect(provider, make_request(USER))
    assert len(fake.requests) == 20
    assert fake.http_connections == 1


def test_the_pools_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each context loads the CA bundle (a tenth of a second and about a megabyte each): one per pool made start-up
    # on a loaded machine take longer than the health check waits.
    import httpcore2

    made = 0
    default = httpcore2.default_ssl_context

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal made
        made += 1
        return default(*args, **kwargs)

    monkeypatch.setattr(httpcore2, "default_ssl_context", counting)
    ChatCompletionsProvider("vllm", UpstreamOptions(base_url="https://example.invalid/v1", pool_shards=16))
    assert made == 1


async def test_concurrent_turns_open_no_more_connections_than_run_at_once(
    make_provider: ProviderFactory, fake: FakeChatCompletions
) -> None:
    provider = make_provider()
    for _ in range(10):
        await asyncio.gather(*(collect(provider, make_request(USER)) for _ in range(16)))
    assert len(fake.requests) == 160
    assert fake.http_connections <= 16  # 16 at once over the 16 pools, round-robin: one connection each


# -- retries before the first byte -----------------------------------------------------------------------------


async def test_5xx_is_retried_with_growing_backoff(
    make_provider: ProviderFactory, fake: FakeChatCompletions, sleeps: Sleeps
) -> None:
    fake.fail_next(2, 503)
    await collect(make_provider(max_retries=2, backoff_s=0.1), make_request(USER))
    assert len(fake.requests) == 3
    first, second = sleeps.delays
    assert 0.05 <= first <= 0.1
    assert 0.1 <= second <= 0.2


async def test_retry_after_is_honoured(
    make_provider: ProviderFactory, fake: FakeChatCompletions, sleeps: Sleeps
) -> None:
    fake.fail_next(1, 429, retry_after=1.5)
    await collect(make_provider(backoff_s=0.01), make_request(USER))
    assert sleeps.delays == [1.5]


async def test_a_retry_after_beyond_the_longest_wait_fails_at_once(
    make_provider: ProviderFactory, fake: FakeChatCompletions, sleeps: Sleeps
) -> None:
    fake.fail_next(1, 429, "Slow down.", retry_after=120)
    error = await failure(make_provider(max_retry_delay_s=30))
    assert (error.status, error.code, error.headers) == (429, "rate_limit_exceeded", {"retry-after": "120"})
    assert "Slow down." in error.message
    assert sleeps.delays == []


async def test_no_retry_waits_past_the_turn_s_timeout(
    make_provider: ProviderFactory, fake: FakeChatCompletions, sleeps: Sleeps
) -> None:
    fake.fail_next(3, 503)
    error = await failure(make_provider(timeout_s=1.0, backoff_s=4.0))
    assert error.status == 502
    assert (len(fake.requests), sleeps.delays) == (1, [])


async def test_exhausted_retries_give_a_502(make_provider: ProviderFactory, fake: FakeChatCompletions) -> None:
    fake.fail_next(5, 500, "Internal failure.")
    error = await failure(make_provider(max_retries=1))
    assert (error.status, error.code) == (502, "upstream_error")
    assert error.message == "Upstream 'vllm' failed: HTTP 500: Internal failure."
    assert len(fake.requests) == 2


@pytest.mark.parametrize(("status", "expected"), [(400, 400), (404, 400), (422, 400)])
async def test_client_errors_are_not_retried_and_keep_the_upstream_message(
    make_provider: ProviderFactory, fake: FakeChatCompletions, status: int, expected: int
) -> None:
    fake.fail_next(1, status, f"Model 'qwen3' is not served here (key {KEY}).")
    error = await failure(make_provider())
    assert (error.status, error.code) == (expected, "upstream_error")
    assert "Model 'qwen3' is not served here" in error.message
    assert "[redacted]" in error.message
    assert len(fake.requests) == 1


async def test_rejected_credentials_are_an_upstream_auth_error(make_provider: ProviderFactory) -> None:
    error = await failure(make_provider(api_key="sk-wrong-key-000000000000"))
    assert (error.status, error.code) == (502, "upstream_auth_error")
    assert "sk-wrong" not in error.message


async def test_connection_errors_are_retried_then_a_502(make_provider: ProviderFactory, sleeps: Sleeps) -> None:
    error = await failure(make_provider(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=2))
    assert (error.status, error.code) == (502, "upstream_error")
    assert "did not get through" in error.message
    assert len(sleeps.delays) == 2


async def test_a_silent_upstream_times_out_with_a_504(
    make_provider: ProviderFactory, fake: FakeChatCompletions
) -> None:
    fake.latency_s = 0.4
    error = await failure(make_provider(timeout_s=0.05, max_retries=0))
    assert (error.status, error.code) == (504, "upstream_error")
    assert "no answer within 0.05 s" in error.message


async def test_a_stream_cut_short_is_a_502_and_not_retried(
    make_provider: ProviderFactory, fake: FakeChatCompletions
) -> None:
    fake.cut_next()
    error = await failure(make_provider())
    assert (error.status, error.code) == (502, "upstream_error")
    assert "ended before" in error.message
    assert len(fake.requests) == 1


# -- streams with problems (mock transport) --------------------------------------------------------------------


def sse_transport(*frames: bytes, error: Exception | None = None) -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame
        if error is not None:
            raise error

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return httpx.MockTransport(handler)


def data(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


TEXT_CHUNK = data({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]})


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"error": {"message": "boom", "type": "server_error"}}, 502, "upstream_error"),
        ({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, 429, "rate_limit_exceeded"),
    ],
)
async def test_an_error_inside_the_stream(
    make_provider: ProviderFactory, payload: JSONObject, status: int, code: str
) -> None:
    error = await failure(make_provider(transport=sse_transport(TEXT_CHUNK, data(payload))))
    assert (error.status, error.code) == (status, code)
    assert payload["error"]["message"] in error.message


@pytest.mark.parametrize("frame", [b"data: {not json\n\n", b"data: [1, 2]\n\n"])
async def test_an_event_that_is_not_a_json_object_is_a_502(make_provider: ProviderFactory, frame: bytes) -> None:
    error = await failure(make_provider(transport=sse_transport(frame)))
    assert error.status == 502


async def test_a_connection_broken_mid_stream_is_a_502(make_provider: ProviderFactory) -> None:
    transport = sse_transport(TEXT_CHUNK, error=httpx.ReadError("reset by peer"))
    error = await failure(make_provider(transport=transport))
    assert "broke mid-stream" in error.message


@pytest.mark.parametrize(
    "ending",
    [b"data: [DONE]\n\n", data({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})],
    ids=["done-without-finish-reason", "finish-reason-without-done"],
)
async def test_either_ending_completes_the_turn(make_provider: ProviderFactory, ending: bytes) -> None:
    events = await collect(make_provider(transport=sse_transport(TEXT_CHUNK, ending)), make_request(USER))
    assert events[0] == TextDelta("Hi")


# -- configuration ---------------------------------------------------------------------------------------------


def test_options_come_from_the_provider_config_and_hide_the_key() -> None:
    config = ProviderSettings(kind="chat-completions", base_url="http://h/v1", timeout_s=5, headers={"x-a": "b"})
    options = upstream_options(config, KEY)
    assert (options.base_url, options.timeout_s, options.headers) == ("http://h/v1", 5, {"x-a": "b"})
    assert KEY not in repr(options)
    with pytest.raises(ValueError, match="base_url"):
        upstream_options(ProviderSettings(kind="chat-completions"), None)


async def test_the_router_builds_both_kinds_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", KEY)
    settings = Settings.model_validate(
        {
            "providers": {
                "local": {"kind": "chat-completions", "base_url": "http://127.0.0.1:1/v1"},
                "claude": {"kind": "anthropic", "api_key_env": "UPSTREAM_KEY", "prompt_caching": False},
            },
            "routes": [{"model": "claude-*", "provider": "claude", "fallbacks": ["local"]}],
        }
    )
    router = provider_router(settings)
    try:
        assert isinstance(router.providers["local"], ChatCompletionsProvider)
        claude = router.providers["claude"]
        assert isinstance(claude, AnthropicProvider)
        assert claude.prompt_caching is False
        assert router.resolve("claude-opus").name == "claude+local"
    finally:
        await router.aclose()
