"""A real tether server routing to fake upstreams, with the official ``openai`` SDK as the client.

The same 20-turn tool loop (the client sends only the tool outputs and ``previous_response_id`` after the first
turn) gives the same transcript through the built-in scripted model, a Chat Completions upstream and an Anthropic
upstream; the stateless upstreams receive the whole context every turn.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import websockets.sync.client
from openai import OpenAI
from openai.types.responses import FunctionToolParam, Response

from tether.providers.fakes import FakeAnthropic, FakeChatCompletions, FakeUpstream
from tether.server.app import provider_router
from tether.server.runner import RunningServer
from tether.settings import Settings

KEY = "sk-fake-upstream-0123456789abcdefXYZ"
KEY_ENV = "TETHER_TEST_UPSTREAM_KEY"
TURNS = 20
FAST_RETRIES = {"max_retries": 2, "backoff_s": 0.01}

LOOKUP: FunctionToolParam = {
    "type": "function",
    "name": "lookup",
    "description": "Look up one fact.",
    "parameters": {"type": "object", "properties": {"step": {"type": "integer"}}, "required": ["step"]},
    "strict": False,
}


def _step(n: int) -> dict[str, Any]:
    """Tool rounds of every shape: single, parallel, with commentary, with reasoning, with awkward characters."""
    call = {"name": "lookup", "arguments": {"step": n}}
    if n % 5 == 1:
        return {"tool_calls": [call, {"name": "lookup", "arguments": {"step": n, "part": 2}}]}
    if n % 5 == 2:
        return {"text": f"Checking step {n} — naïve\u2028café.", "tool_calls": [call]}
    if n % 5 == 3:
        return {"reasoning": f"Step {n} needs a lookup.", "tool_calls": [call]}
    return {"tool_calls": [call]}


STEPS: list[dict[str, Any]] = [*(_step(n) for n in range(TURNS - 1)), {"text": "All twenty steps are done."}]

ServerFactory = Callable[..., RunningServer]


@pytest.fixture
def chat_fake() -> Iterator[FakeChatCompletions]:
    with FakeChatCompletions(script=STEPS, api_key=KEY) as fake:
        yield fake


@pytest.fixture
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script=STEPS, api_key=KEY) as fake:
        yield fake


@pytest.fixture
def backup() -> Iterator[FakeChatCompletions]:
    with FakeChatCompletions(script=[{"text": "Served by the backup."}], api_key=KEY) as fake:
        yield fake


@pytest.fixture
def gateway(
    chat_fake: FakeChatCompletions,
    anthropic_fake: FakeAnthropic,
    backup: FakeChatCompletions,
    make_server: ServerFactory,  # after the fakes: the gateway stops first
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> RunningServer:
    monkeypatch.setenv(KEY_ENV, KEY)
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps({"scripts": {"loop": STEPS}}))
    return make_server(
        scripted={"scripts_file": scripts},
        providers={
            "vllm": {
                "kind": "chat-completions",
                "base_url": chat_fake.base_url,
                "api_key_env": KEY_ENV,
                **FAST_RETRIES,
            },
            "claude": {
                "kind": "anthropic",
                "base_url": anthropic_fake.base_url,
                "api_key_env": KEY_ENV,
                **FAST_RETRIES,
            },
            "backup": {"kind": "chat-completions", "base_url": backup.base_url, "api_key_env": KEY_ENV},
        },
        routes=[
            {"model": "local-*", "provider": "vllm", "upstream_model": "qwen3-8b"},
            {"model": "claude-*", "provider": "claude"},
            {"model": "safe-*", "provider": "vllm", "fallbacks": ["backup"]},
            {"model": "script:*", "provider": "scripted"},
        ],
    )


@pytest.fixture
def client(gateway: RunningServer) -> Iterator[OpenAI]:
    with OpenAI(api_key="client-key", base_url=gateway.base_url, max_retries=0) as sdk:
        yield sdk


def run_tool_loop(client: OpenAI, model: str) -> list[Response]:
    """The agent loop: after the first turn, send only the tool outputs and the previous response's id."""
    responses: list[Response] = []
    input_items: Any = "Run the twenty-step task."
    previous: str | None = None
    for _ in range(TURNS + 1):
        with client.responses.create(
            model=model, input=input_items, previous_response_id=previous, tools=[LOOKUP], stream=True
        ) as stream:
            events = list(stream)
        assert events[-1].type == "response.completed", events[-1]
        response = events[-1].response
        streamed = "".join(event.delta for event in events if event.type == "response.output_text.delta")
        assert streamed == response.output_text
        responses.append(response)
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return responses
        previous = response.id
        input_items = [
            {"type": "function_call_output", "call_id": call.call_id, "output": f"fact for {call.arguments}"}
            for call in calls
        ]
    raise AssertionError("the loop did not end")


def transcript(responses: list[Response]) -> list[list[tuple[str, ...]]]:
    """What the client saw, without ids: each turn's output items by type, name, arguments and text."""
    turns = []
    for response in responses:
        items: list[tuple[str, ...]] = []
        for item in response.output:
            if item.type == "function_call":
                items.append(("function_call", item.name, item.arguments))
            elif item.type == "message":
                items.append(("message", response.output_text))
            elif item.type == "reasoning":
                items.append(("reasoning", "".join(part.text for part in item.summary)))
            else:
                raise AssertionError(f"unexpected output item {item.type}")
        turns.append(items)
    return turns


# -- the same workload through every upstream ------------------------------------------------------------------


def test_the_same_tool_loop_gives_the_same_transcript_through_every_upstream(
    client: OpenAI, chat_fake: FakeChatCompletions, anthropic_fake: FakeAnthropic
) -> None:
    scripted = run_tool_loop(client, "script:loop")
    through_chat = run_tool_loop(client, "local-agent")
    through_anthropic = run_tool_loop(client, "claude-agent")

    assert len(scripted) == TURNS
    assert transcript(through_chat) == transcript(scripted)
    assert transcript(through_anthropic) == transcript(scripted)
    assert transcript(scripted)[-1] == [("message", "All twenty steps are done.")]
    assert transcript(scripted)[1][1:] == [("function_call", "lookup", '{"step":1,"part":2}')]
    assert len(chat_fake.requests) == len(anthropic_fake.requests) == TURNS


def test_stateless_upstreams_receive_the_whole_context_every_turn(
    client: OpenAI, chat_fake: FakeChatCompletions, anthropic_fake: FakeAnthropic
) -> None:
    run_tool_loop(client, "local-agent")
    run_tool_loop(client, "claude-agent")

    chat_bodies = [request.body for request in chat_fake.requests]
    assert [body["model"] for body in chat_bodies] == ["qwen3-8b"] * TURNS
    sizes = [len(body["messages"]) for body in chat_bodies]
    assert sizes == sorted(set(sizes)), "the context grows every turn"
    for body in chat_bodies:
        assert body["messages"][0] == {"role": "user", "content": "Run the twenty-step task."}
    last = chat_bodies[-1]["messages"]
    assert sum(1 for message in last if message["role"] == "tool") == sum(
        len(step.get("tool_calls", [])) for step in STEPS
    )
    for earlier, later in itertools.pairwise(chat_bodies):
        assert later["messages"][: len(earlier["messages"])] == earlier["messages"]

    anthropic_bodies = [request.body for request in anthropic_fake.requests]
    sizes = [len(body["messages"]) for body in anthropic_bodies]
    assert sizes == [2 * turn + 1 for turn in range(TURNS)]
    assert all(body["messages"][0]["content"][0]["text"] == "Run the twenty-step task." for body in anthropic_bodies)


def test_prompt_caching_makes_later_anthropic_turns_read_from_the_cache(client: OpenAI) -> None:
    responses = run_tool_loop(client, "claude-agent")
    usage = [response.usage for response in responses]
    assert all(u is not None for u in usage)
    cached = [u.input_tokens_details.cached_tokens for u in usage if u is not None]
    inputs = [u.input_tokens for u in usage if u is not None]
    assert cached[0] == 0
    assert all(c > 0 for c in cached[1:])
    assert cached[-1] > inputs[-1] * 0.8, "nearly the whole long context is read from the cache"


def test_the_upstream_key_goes_upstream_and_nowhere_else(
    client: OpenAI, chat_fake: FakeChatCompletions, anthropic_fake: FakeAnthropic
) -> None:
    bodies: list[str] = []
    for model in ("local-agent", "claude-agent"):
        first = client.responses.create(model=model, input="Go.", tools=[LOOKUP])
        bodies.append(first.model_dump_json())
        with client.responses.create(model=model, input="Go.", tools=[LOOKUP], stream=True) as stream:
            bodies += [event.model_dump_json() for event in stream]
    assert {r.headers["authorization"] for r in chat_fake.requests} == {f"Bearer {KEY}"}
    assert {r.headers["x-api-key"] for r in anthropic_fake.requests} == {KEY}
    assert all("client-key" not in str(r.headers) for r in chat_fake.requests + anthropic_fake.requests)
    assert not any(KEY in body for body in bodies)


async def test_the_documented_config_file_loads_and_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = Path(__file__).parents[2] / "docs" / "providers.md"
    example = docs.read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "tether.toml"
    config.write_text(example)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)

    router = provider_router(Settings.load(config))
    try:
        assert router.resolve("claude-opus-4").name == "claude"
        assert router.resolve("fast").name == "local+openrouter"
        assert router.resolve("qwen/qwen3-coder").name == "openrouter"
        assert router.resolve("gpt-5").name == "scripted"
        assert router.model_names() == ["fast", "scripted"]
    finally:
        await router.aclose()


# -- failures --------------------------------------------------------------------------------------------------


def answer_text(client: OpenAI, model: str) -> str:
    return client.responses.create(model=model, input="Hello.").output_text


def test_a_failing_first_upstream_falls_back_to_the_next(
    client: OpenAI, chat_fake: FakeChatCompletions, backup: FakeChatCompletions
) -> None:
    chat_fake.fail_next(10, 503)
    assert answer_text(client, "safe-model") == "Served by the backup."
    assert len(chat_fake.requests) == 1 + FAST_RETRIES["max_retries"]
    assert len(backup.requests) == 1


def test_a_stream_cut_short_is_not_retried_but_falls_back(
    client: OpenAI, chat_fake: FakeChatCompletions, backup: FakeChatCompletions
) -> None:
    chat_fake.cut_next()
    assert answer_text(client, "safe-model") == "Served by the backup."
    assert len(chat_fake.requests) == 1
    assert len(backup.requests) == 1


def test_a_429_with_retry_after_is_served_after_the_wait(client: OpenAI, chat_fake: FakeChatCompletions) -> None:
    chat_fake.fail_next(1, 429, "Slow down.", retry_after=0.3)
    started = time.monotonic()
    response = client.responses.create(model="local-model", input="Hello.", tools=[LOOKUP])
    assert time.monotonic() - started >= 0.3
    assert transcript([response]) == [[("function_call", "lookup", '{"step":0}')]]
    assert len(chat_fake.requests) == 2


@pytest.mark.parametrize("fake_name", ["chat_fake", "anthropic_fake"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_400_reaches_the_client_with_its_message(
    client: OpenAI, fake_name: str, stream: bool, request: pytest.FixtureRequest
) -> None:
    fake: FakeUpstream = request.getfixturevalue(fake_name)
    model = "local-model" if fake_name == "chat_fake" else "claude-model"
    fake.fail_next(1, 400, f"The model does not support images (request signed with {KEY}).")
    if stream:
        with client.responses.create(model=model, input="Hello.", stream=True) as events:
            failed = list(events)
        error = next(event for event in failed if event.type == "error")
        assert error.code == "upstream_error"
        message = error.message
        assert failed[-1].type == "response.failed"
    else:
        with pytest.raises(openai.BadRequestError) as caught:
            answer_text(client, model)
        assert caught.value.status_code == 400
        assert caught.value.code == "upstream_error"
        message = caught.value.message
        assert KEY not in caught.value.response.text
    assert "The model does not support images" in message
    assert KEY not in message
    assert len(fake.requests) == 1, "a 400 is not retried"


def test_an_upstream_that_keeps_failing_gives_a_502(client: OpenAI, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.fail_next(10, 529, "Overloaded.")
    with pytest.raises(openai.APIStatusError) as caught:
        answer_text(client, "claude-model")
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert "Overloaded." in caught.value.message
    assert len(anthropic_fake.requests) == 3


def test_rate_limits_that_outlast_the_retries_reach_the_client_as_429(
    client: OpenAI, chat_fake: FakeChatCompletions
) -> None:
    chat_fake.fail_next(10, 429, "Too many requests.", retry_after=3600)
    with pytest.raises(openai.RateLimitError) as caught:
        answer_text(client, "local-model")
    assert caught.value.code == "rate_limit_exceeded"
    assert len(chat_fake.requests) == 1, "a retry-after beyond the longest wait fails at once"


def test_rejected_upstream_credentials_are_a_502_that_does_not_show_them(
    gateway: RunningServer, chat_fake: FakeChatCompletions, client: OpenAI
) -> None:
    chat_fake.api_key = "a-different-key"
    with pytest.raises(openai.APIStatusError) as caught:
        answer_text(client, "local-model")
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_auth_error"
    assert KEY not in caught.value.response.text


def test_the_sdk_does_not_retry_rejected_upstream_credentials(
    gateway: RunningServer, chat_fake: FakeChatCompletions
) -> None:
    chat_fake.api_key = "a-different-key"
    retrying = OpenAI(api_key="client-key", base_url=gateway.base_url, max_retries=2)
    with retrying, pytest.raises(openai.APIStatusError) as caught:
        answer_text(retrying, "local-model")
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(chat_fake.requests) == 1, "x-should-retry: false stops the SDK's two retries"


REFUSED_BY_TRANSLATION = [
    ("claude-x", {"input": "hi", "temperature": 1.5}, "temperature"),
    ("claude-x", {"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input"),
    ("local-x", {"input": [{"type": "x_unknown_item", "id": "x_1"}]}, "input"),
    ("local-x", {"input": "hi", "tools": [{"type": "web_search"}]}, "tools"),
]


@pytest.mark.parametrize(("model", "fields", "param"), REFUSED_BY_TRANSLATION)
def test_what_a_stateless_upstream_cannot_take_is_the_same_400_on_every_transport(
    gateway: RunningServer,
    chat_fake: FakeChatCompletions,
    anthropic_fake: FakeAnthropic,
    model: str,
    fields: dict[str, Any],
    param: str,
) -> None:
    """Checked before the turn starts, as model_not_found is: JSON got 400 unsupported_value, but SSE got 200 with
    an error event and response.failed, and WebSocket response.created, then response.failed with server_error."""
    body = {"model": model, **fields}
    with httpx.Client(base_url=gateway.base_url, timeout=20) as http:
        answers = [http.post("/responses", json=body), http.post("/responses", json={**body, "stream": True})]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "unsupported_value"
        assert answer.json()["error"]["param"] == param
    with websockets.sync.client.connect(gateway.ws_url, open_timeout=20) as ws:
        ws.send(json.dumps({"type": "response.create", **body}))
        event = json.loads(ws.recv(timeout=20))
        assert event["type"] == "error", event  # no response.created: the turn never started
        assert (event["status"], event["error"]["code"], event["error"]["param"]) == (400, "unsupported_value", param)
        ws.send(json.dumps({"type": "response.create", "model": model, "input": "and now a good one"}))
        while (event := json.loads(ws.recv(timeout=20)))["type"] not in ("response.completed", "response.failed"):
            pass
        assert event["type"] == "response.completed"
    assert len(chat_fake.requests) + len(anthropic_fake.requests) == 1  # only the good turn went upstream
