"""The official ``anthropic`` and ``openai`` SDKs read the translated answers: a small real server on 127.0.0.1
translates each request, runs it on tether's engine (the scripted model) and answers in the agent's API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tether.engine.engine import Engine, EngineLimits
from tether.netutil import loopback_server
from tether.protocol import agent_apis
from tether.protocol.errors import ProtocolError
from tether.protocol.request import Transport, parse_create
from tether.providers.router import ProviderRouter
from tether.providers.scripted import ScriptedProvider, ScriptedTiming, parse_scripts
from tether.store.memory import MemoryStore
from tether.types import JSONObject

SCRIPTS = parse_scripts(
    {
        "scripts": {
            "loop": [
                {
                    "reasoning": "Read it first.",
                    "text": "Reading.",
                    "tool_calls": [{"name": "Read", "arguments": {"path": "a.py"}}],
                },
                {"text": "Fixed the test."},
            ]
        }
    }
)
TOOL: Any = {"name": "Read", "description": "Read a file.", "input_schema": {"type": "object", "properties": {}}}


async def _events(responses: JSONObject) -> AsyncIterator[JSONObject]:
    engine = Engine(
        MemoryStore(),
        ProviderRouter({"scripted": ScriptedProvider(ScriptedTiming(), SCRIPTS)}),
        EngineLimits(shutdown_grace_s=0.0),
    )
    try:
        live = await engine.create(parse_create({**responses, "store": False}, Transport.HTTP), tenant="t")
        async for event in engine.follow(live):
            yield dict(event)
    finally:
        await engine.aclose()


async def _messages(request: Request) -> Response:
    body = orjson.loads(await request.body())
    try:
        if request.url.path.endswith("/count_tokens"):
            return Response(orjson.dumps(agent_apis.count_message_tokens(body)), media_type="application/json")
        translation = agent_apis.translate_messages_request(body)
    except ProtocolError as error:
        return Response(orjson.dumps(agent_apis.anthropic_error(error)), error.status, media_type="application/json")
    if not translation.reply.stream:
        terminal = [event async for event in _events(translation.responses)][-1]["response"]
        answer = agent_apis.messages_response(terminal, translation.reply)
        return Response(orjson.dumps(answer), media_type="application/json")

    async def frames() -> AsyncIterator[bytes]:
        encoder = agent_apis.MessagesStreamEncoder(translation.reply)
        async for event in _events(translation.responses):
            for out in encoder.feed(event):
                yield agent_apis.encode_messages_event(out)

    return StreamingResponse(frames(), media_type="text/event-stream")


async def _chat(request: Request) -> Response:
    try:
        translation = agent_apis.translate_chat_request(orjson.loads(await request.body()))
    except ProtocolError as error:
        return Response(orjson.dumps(agent_apis.chat_error(error)), error.status, media_type="application/json")
    if not translation.reply.stream:
        terminal = [event async for event in _events(translation.responses)][-1]["response"]
        answer = agent_apis.chat_completion(terminal, translation.reply)
        return Response(orjson.dumps(answer), media_type="application/json")

    async def frames() -> AsyncIterator[bytes]:
        encoder = agent_apis.ChatStreamEncoder(translation.reply)
        async for event in _events(translation.responses):
            for chunk in encoder.feed(event):
                yield agent_apis.encode_chat_chunk(chunk)
        yield agent_apis.CHAT_DONE

    return StreamingResponse(frames(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/v1/messages", _messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", _messages, methods=["POST"]),
            Route("/v1/chat/completions", _chat, methods=["POST"]),
        ]
    )
    with loopback_server(app, name="translated-sdks") as server:
        yield f"http://127.0.0.1:{server.port}"


def test_the_anthropic_sdk_runs_a_tool_loop_on_the_translated_stream(base_url: str) -> None:
    client = anthropic.Anthropic(api_key="unused", base_url=base_url, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "Fix the test."}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}

    with client.messages.stream(
        model="script:loop", max_tokens=1000, messages=messages, tools=[TOOL], thinking=thinking
    ) as stream:
        first = stream.get_final_message()

    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["thinking", "text", "tool_use"]
    call = first.content[2]
    assert call.type == "tool_use"
    assert call.input == {"path": "a.py"}
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "def test(): ..."}]},
    ]
    second = client.messages.create(model="script:loop", max_tokens=1000, messages=messages, tools=[TOOL])
    assert second.stop_reason == "end_turn"
    assert second.content[-1].type == "text"
    assert second.content[-1].text == "Fixed the test."
    client.close()


def test_the_anthropic_sdk_reads_refusals_and_token_counts(base_url: str) -> None:
    client = anthropic.Anthropic(api_key="unused", base_url=base_url, max_retries=0)
    server_tools: Any = [{"type": "web_search_20250305", "name": "web_search"}]

    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}], tools=server_tools
        )
    counted = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "Hello there."}])

    assert "server tools" in str(caught.value)
    assert counted.input_tokens > 0
    client.close()


def test_the_openai_sdk_reads_the_translated_chat_stream(base_url: str) -> None:
    client = openai.OpenAI(api_key="unused", base_url=f"{base_url}/v1", max_retries=0)
    tools: Any = [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}]
    messages: list[Any] = [{"role": "user", "content": "Fix the test."}]

    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(
        model="script:loop", messages=messages, tools=tools, stream=True, stream_options={"include_usage": True}
    ):
        state.handle_chunk(chunk)
    streamed = state.get_final_completion()
    whole = client.chat.completions.create(model="script:loop", messages=messages, tools=tools)

    assert streamed.choices[0].finish_reason == whole.choices[0].finish_reason == "tool_calls"
    calls = streamed.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["Read"]
    assert streamed.usage is not None
    assert streamed.usage.completion_tokens > 0
    messages += [
        {
            "role": "assistant",
            "content": "Reading.",
            "tool_calls": [c.model_dump(exclude={"parsed_arguments"}) for c in calls],
        },
        {"role": "tool", "tool_call_id": calls[0].id, "content": "ok"},
    ]
    final = client.chat.completions.create(model="script:loop", messages=messages, tools=tools)
    assert final.choices[0].message.content == "Fixed the test."
    client.close()
