"""The translated path end to end, in process: an agent's request translated → tether's engine on the scripted
model → its events translated back, read by the strict stream checkers, over a whole tool loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tether.engine.engine import Engine, EngineLimits
from tether.protocol.agent_apis import (
    CHAT_DONE,
    ChatStreamChecker,
    ChatStreamEncoder,
    MessagesStreamChecker,
    MessagesStreamEncoder,
    chat_completion,
    encode_chat_chunk,
    encode_messages_event,
    messages_response,
    translate_chat_request,
    translate_messages_request,
)
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
                    "reasoning": "The test reads a.py.",
                    "text": "Reading it.",
                    "tool_calls": [{"name": "Read", "arguments": {"path": "a.py"}}, {"name": "Read", "arguments": {}}],
                },
                {"text": "Fixed the test."},
            ]
        }
    }
)
TOOL = {"name": "Read", "description": "Read a file.", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    router = ProviderRouter({"scripted": ScriptedProvider(ScriptedTiming(), SCRIPTS)})
    engine = Engine(MemoryStore(), router, EngineLimits(shutdown_grace_s=0.0))
    yield engine
    await engine.aclose()


async def run(engine: Engine, responses: JSONObject) -> list[JSONObject]:
    live = await engine.create(parse_create({**responses, "store": False}, Transport.HTTP), tenant="t")
    return [dict(event) async for event in engine.follow(live)]


async def messages_turn(engine: Engine, body: JSONObject) -> tuple[JSONObject, JSONObject]:
    """One Messages request through the engine: what the stream checker read, and the non-streamed body."""
    translation = translate_messages_request(body)
    events = await run(engine, translation.responses)
    encoder = MessagesStreamEncoder(translation.reply)
    checker = MessagesStreamChecker()
    for event in events:
        for out in encoder.feed(event):
            checker.feed(encode_messages_event(out))
    terminal = events[-1]["response"]
    return checker.close(), messages_response(terminal, translation.reply)


async def test_a_claude_code_tool_loop_through_the_engine_streams_valid_messages(engine: Engine) -> None:
    body: dict[str, Any] = {
        "model": "script:loop",
        "max_tokens": 1000,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "system", "content": "<env>cwd=/repo</env>"},
            {"role": "user", "content": "Fix the test."},
            {"role": "user", "content": [{"type": "text", "text": "<reminder/>"}]},
        ],
        "tools": [TOOL],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stream": True,
    }

    streamed, whole = await messages_turn(engine, body)

    assert streamed == whole
    assert streamed["stop_reason"] == "tool_use"
    assert [block["type"] for block in streamed["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    first, second = streamed["content"][2:]
    assert (first["name"], first["input"]) == ("Read", {"path": "a.py"})
    assert first["id"] != second["id"]
    assert streamed["usage"]["output_tokens"] > 0

    # The agent runs the tools and sends the whole history back, as Claude Code does.
    results = [{"type": "tool_result", "tool_use_id": block["id"], "content": "ok"} for block in (first, second)]
    body["messages"] += [
        {"role": "assistant", "content": streamed["content"]},
        {"role": "user", "content": [*results, {"type": "text", "text": "go on"}]},
    ]
    final, final_whole = await messages_turn(engine, body)

    assert final == final_whole
    assert final["stop_reason"] == "end_turn"
    assert final["content"][-1] == {"type": "text", "text": "Fixed the test."}


async def test_a_truncated_answer_stops_at_max_tokens(engine: Engine) -> None:
    body = {"model": "echo", "max_tokens": 1, "messages": [{"role": "user", "content": "a long question " * 20}]}

    streamed, whole = await messages_turn(engine, body)

    assert streamed["stop_reason"] == whole["stop_reason"] == "max_tokens"


async def test_a_chat_tool_loop_through_the_engine_streams_valid_chunks(engine: Engine) -> None:
    body: dict[str, Any] = {
        "model": "script:loop",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fix the test."}],
        "tools": [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async def turn() -> tuple[JSONObject, JSONObject]:
        translation = translate_chat_request(body)
        events = await run(engine, translation.responses)
        encoder = ChatStreamEncoder(translation.reply)
        checker = ChatStreamChecker(include_usage=True)
        for event in events:
            for chunk in encoder.feed(event):
                checker.feed(encode_chat_chunk(chunk))
        checker.feed(CHAT_DONE)
        return checker.close(), chat_completion(events[-1]["response"], translation.reply)

    streamed, whole = await turn()

    assert streamed["finish_reason"] == whole["choices"][0]["finish_reason"] == "tool_calls"
    calls = streamed["message"]["tool_calls"]
    assert calls == whole["choices"][0]["message"]["tool_calls"]
    assert streamed["usage"]["completion_tokens"] > 0
    body["messages"] += [
        {"role": "assistant", "content": streamed["message"]["content"], "tool_calls": calls},
        *({"role": "tool", "tool_call_id": call["id"], "content": "ok"} for call in calls),
    ]

    final, _ = await turn()

    assert final["finish_reason"] == "stop"
    assert final["message"]["content"] == "Fixed the test."
