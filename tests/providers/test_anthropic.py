"""The anthropic provider against the fake Messages server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx2 as httpx
import pytest

from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import Finish, ModelEvent, ReasoningSummaryDelta, TextDelta, ToolCallDelta
from tether.providers.anthropic import ANTHROPIC_BASE_URL, AnthropicProvider
from tether.providers.base import Provider, ProviderRequest
from tether.providers.fakes import FakeAnthropic
from tether.providers.http_upstream import UpstreamOptions
from tether.settings import ProviderSettings
from tether.types import Item, JSONObject

KEY = "sk-ant-test-0123456789abcdef"
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
    {"tool_calls": [{"name": "read_file", "arguments": {"path": "c.py"}}]},
    {"text": "All files are fine."},
]
USER: list[Item] = [{"type": "message", "role": "user", "content": "Check the files. " * 40}]


def make_request(
    context: Sequence[Item], *, new: int = 1, params: JSONObject | None = None, model: str = "claude-sonnet-4-5"
) -> ProviderRequest:
    return ProviderRequest(
        model=model,
        instructions="You review code. " * 20,
        context=context,
        new_items=context[len(context) - new :],
        tools=[TOOL],
        tool_choice="auto",
        context_tokens=0,
        cached_tokens=0,
        previous_response_id=None,
        response_id="resp_test",
        params=params or {},
    )


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script=SCRIPT, api_key=KEY) as server:
        yield server


ProviderFactory = Callable[..., AnthropicProvider]


@pytest.fixture
async def make_provider(fake: FakeAnthropic) -> AsyncIterator[ProviderFactory]:
    made: list[AnthropicProvider] = []

    def make(
        *, prompt_caching: bool = True, transport: httpx.AsyncBaseTransport | None = None, **options: Any
    ) -> AnthropicProvider:
        options.setdefault("base_url", fake.base_url)
        options.setdefault("api_key", KEY)
        provider = AnthropicProvider(
            "claude", UpstreamOptions(**options), prompt_caching=prompt_caching, transport=transport, sleep=Sleeps()
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def collect(provider: Provider, request: ProviderRequest) -> list[ModelEvent]:
    events = [event async for event in provider.stream(request)]
    assert isinstance(events[-1], Finish)
    assert not any(isinstance(event, Finish) for event in events[:-1])
    return events


def finish_of(events: list[ModelEvent]) -> Finish:
    finish = events[-1]
    assert isinstance(finish, Finish)
    return finish


def model_items(events: list[ModelEvent]) -> list[Item]:
    """The output items the events describe, as tether would append them to the context."""
    items: list[Item] = []
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    if text:
        items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
    calls: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls.setdefault(event.call_id, [event.name]).append(event.arguments)
    for call_id, (name, *pieces) in calls.items():
        items.append({"type": "function_call", "call_id": call_id, "name": name, "arguments": "".join(pieces)})
    return items


async def run_loop(provider: Provider, turns: int) -> list[list[ModelEvent]]:
    context: list[Item] = list(USER)
    history: list[list[ModelEvent]] = []
    new = 1
    for _ in range(turns):
        events = await collect(provider, make_request(context, new=new))
        history.append(events)
        produced = model_items(events)
        outputs = [
            {"type": "function_call_output", "call_id": item["call_id"], "output": "looks fine " * 30}
            for item in produced
            if item["type"] == "function_call"
        ]
        context += produced + outputs
        new = len(outputs)
    return history


# -- turns -----------------------------------------------------------------------------------------------------


async def test_a_turn_streams_thinking_text_and_parallel_tool_use(
    make_provider: ProviderFactory, fake: FakeAnthropic
) -> None:
    events = await collect(make_provider(), make_request(USER))
    assert "".join(e.text for e in events if isinstance(e, ReasoningSummaryDelta)) == "Two files."
    items = model_items(events)
    assert [item.get("arguments") for item in items[1:]] == ['{"path":"a.py"}', '{"path":"b.py"}']
    assert items[0]["content"][0]["text"] == "Reading both."

    (recorded,) = fake.requests
    assert recorded.path == "/v1/messages"
    assert recorded.headers["x-api-key"] == KEY
    assert recorded.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in recorded.headers
    assert recorded.body["model"] == "claude-sonnet-4-5"
    assert recorded.body["max_tokens"] == 4096


async def test_a_tool_loop_reads_ever_more_of_its_prompt_from_the_cache(
    make_provider: ProviderFactory, fake: FakeAnthropic
) -> None:
    history = await run_loop(make_provider(), 3)
    assert "".join(e.text for e in history[-1] if isinstance(e, TextDelta)) == "All files are fine."
    usages = [finish_of(events).usage for events in history]
    assert usages[0].cached_tokens == 0
    assert usages[0].cache_write_tokens > 0
    assert 0 < usages[1].cached_tokens < usages[2].cached_tokens
    assert usages[2].cached_tokens > usages[2].input_tokens // 2
    for usage in usages:
        assert usage.cached_tokens + usage.cache_write_tokens <= usage.input_tokens
    assert [len(r.body["messages"]) for r in fake.requests] == [1, 3, 5]


async def test_without_prompt_caching_nothing_is_marked_or_cached(
    make_provider: ProviderFactory, fake: FakeAnthropic
) -> None:
    history = await run_loop(make_provider(prompt_caching=False), 2)
    assert all(finish_of(events).usage.cached_tokens == 0 for events in history)
    assert "cache_control" not in json.dumps([r.body for r in fake.requests])


async def test_max_output_tokens_cuts_the_answer(make_provider: ProviderFactory, fake: FakeAnthropic) -> None:
    fake.script = None  # echo the user message
    events = await collect(make_provider(), make_request(USER, params={"max_output_tokens": 3}))
    assert fake.requests[0].body["max_tokens"] == 3
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Check the fi"
    assert finish_of(events).reason == "max_output_tokens"


async def test_a_base_url_ending_in_v1_works_too(make_provider: ProviderFactory, fake: FakeAnthropic) -> None:
    await collect(make_provider(base_url=fake.base_url + "/v1/"), make_request(USER))
    assert fake.requests[0].path == "/v1/messages"


# -- failures --------------------------------------------------------------------------------------------------


async def test_overloaded_is_retried(make_provider: ProviderFactory, fake: FakeAnthropic) -> None:
    fake.fail_next(2, 529, "Overloaded")
    await collect(make_provider(max_retries=2), make_request(USER))
    assert len(fake.requests) == 3


async def test_a_bad_request_carries_anthropic_s_message(make_provider: ProviderFactory, fake: FakeAnthropic) -> None:
    fake.fail_next(1, 400, "messages.0.content: prompt is too long: 210000 tokens > 200000 maximum")
    with pytest.raises(ProtocolError) as caught:
        await collect(make_provider(), make_request(USER))
    assert (caught.value.status, caught.value.code) == (400, "upstream_error")
    assert "prompt is too long" in caught.value.message


async def test_a_stream_without_message_stop_is_a_502(make_provider: ProviderFactory, fake: FakeAnthropic) -> None:
    fake.cut_next()
    with pytest.raises(ProtocolError) as caught:
        await collect(make_provider(), make_request(USER))
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert "message_stop" in caught.value.message


def error_stream(error_type: str) -> httpx.MockTransport:
    frames = [
        b'event: message_start\ndata: {"type": "message_start", "message": {"usage": {"input_tokens": 3}}}\n\n',
        b"event: error\ndata: "
        + json.dumps({"type": "error", "error": {"type": error_type, "message": "Try later."}}).encode()
        + b"\n\n",
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(frames))

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("error_type", "status", "code"),
    [("overloaded_error", 502, "upstream_error"), ("rate_limit_error", 429, "rate_limit_exceeded")],
)
async def test_an_error_event_inside_the_stream(
    make_provider: ProviderFactory, error_type: str, status: int, code: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        await collect(make_provider(transport=error_stream(error_type)), make_request(USER))
    assert (caught.value.status, caught.value.code) == (status, code)
    assert "Try later." in caught.value.message


# -- configuration ---------------------------------------------------------------------------------------------


async def test_from_config_defaults_to_the_anthropic_api() -> None:
    provider = AnthropicProvider.from_config("claude", ProviderSettings(kind="anthropic", prompt_caching=False), KEY)
    try:
        assert provider.name == "claude"
        assert provider.prompt_caching is False
        assert provider._upstream.options.base_url == ANTHROPIC_BASE_URL
    finally:
        await provider.aclose()
