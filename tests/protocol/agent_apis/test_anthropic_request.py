"""Anthropic Messages requests → Responses request bodies."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.agent_apis import count_message_tokens, translate_messages_request
from tether.protocol.errors import ProtocolError
from tether.protocol.request import Transport, parse_create
from tether.providers.base import ProviderRequest
from tether.providers.translate_anthropic import anthropic_request
from tether.types import JSONObject

TOOL = {"name": "Read", "description": "Read a file.", "input_schema": {"type": "object", "properties": {}}}
PNG = "iVBORw0KGgo="


def claude_code_body() -> JSONObject:
    """The shapes Claude Code sends: system blocks with cache_control, a system message inside messages, two user
    messages in a row, a tool loop, an image."""
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "system", "content": "<env>cwd=/repo</env>"},
            {"role": "user", "content": "Fix the test."},
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Reading it."},
                    {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"path": "a.py"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "def test(): ..."},
                    {"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
        "tools": [{**TOOL, "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "user_abc"},
        "temperature": 1,
        "stop_sequences": ["\n\nHuman:"],
        "stream": True,
    }


def test_claude_code_request_becomes_items_in_order() -> None:
    translation = translate_messages_request(claude_code_body())

    assert translation.responses == {
        "model": "claude-sonnet-4-5",
        "instructions": "You are Claude Code.\n\nBe brief.",
        "input": [
            {"type": "message", "role": "system", "content": "<env>cwd=/repo</env>"},
            {"type": "message", "role": "user", "content": "Fix the test."},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"}],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Reading it.", "annotations": []}],
            },
            {"type": "function_call", "call_id": "toolu_01", "name": "Read", "arguments": '{"path":"a.py"}'},
            {"type": "function_call_output", "call_id": "toolu_01", "output": "def test(): ..."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go on"}]},
        ],
        "tools": [
            {"type": "function", "name": "Read", "description": "Read a file.", "parameters": TOOL["input_schema"]}
        ],
        "tool_choice": "auto",
        "max_output_tokens": 32000,
        "temperature": 1,
        "user": "user_abc",
        "stream": True,
    }
    assert translation.reply.model == "claude-sonnet-4-5"
    assert translation.reply.stream is True
    assert translation.reply.stop_sequences == ("\n\nHuman:",)
    assert translation.reply.thinking is False
    assert translation.reply.input_tokens > 0


def test_translated_body_is_a_valid_responses_request() -> None:
    request = parse_create(translate_messages_request(claude_code_body()).responses, Transport.HTTP)

    assert request.stream is True
    assert [item["type"] for item in request.input][-3:] == ["function_call", "function_call_output", "message"]


def test_the_agents_body_is_not_modified() -> None:
    body = claude_code_body()
    before = copy.deepcopy(body)

    translate_messages_request(body)

    assert body == before


def test_thinking_becomes_reasoning_and_redacted_thinking_is_dropped() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Let me see.", "signature": "EqQBCkYI..."},
                    {"type": "redacted_thinking", "data": "EmwKAhgB..."},
                    {"type": "text", "text": "Hello."},
                ],
            },
            {"role": "user", "content": "again"},
        ],
    }

    translation = translate_messages_request(body)

    assert translation.responses["input"][1] == {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Let me see."}],
    }
    assert translation.responses["input"][2]["role"] == "assistant"
    assert translation.responses["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert translation.reply.thinking is True


@pytest.mark.parametrize(
    ("source", "part"),
    [
        (
            {"type": "url", "url": "https://x/a.png"},
            {"type": "input_image", "image_url": "https://x/a.png", "detail": "auto"},
        ),
        ({"type": "file", "file_id": "file_1"}, {"type": "input_image", "file_id": "file_1", "detail": "auto"}),
    ],
)
def test_image_sources(source: JSONObject, part: JSONObject) -> None:
    body = {
        "model": "m",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": [{"type": "image", "source": source}]}],
    }

    assert translate_messages_request(body).responses["input"][0]["content"] == [part]


def test_documents_and_rich_tool_results() -> None:
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    body = {
        "model": "m",
        "max_tokens": 1,
        "messages": [
            {"role": "user", "content": [pdf, text_doc]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "ok"}, image],
                        "is_error": True,
                    }
                ],
            },
        ],
    }

    items = translate_messages_request(body).responses["input"]

    assert items[0]["content"] == [
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "document.pdf"},
        {"type": "input_text", "text": "notes"},
    ]
    assert items[2] == {
        "type": "function_call_output",
        "call_id": "t1",
        "output": [
            {"type": "input_text", "text": "ok"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "Read"}, {"tool_choice": {"type": "function", "name": "Read"}}),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice(choice: JSONObject, expected: JSONObject) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [TOOL]}
    responses = translate_messages_request({**body, "tool_choice": choice}).responses

    assert {key: responses[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"max_tokens": None}, "max_tokens", "missing_required_parameter"),
        ({"model": 3}, "model", "missing_required_parameter"),
        ({"messages": []}, "messages", "missing_required_parameter"),
        ({"messages": ["hi"]}, "messages.0", "invalid_type"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "invalid_value"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "invalid_type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b"}]}]},
            "messages.0.content.0",
            "invalid_value",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
            "messages.0.content.0",
            "unsupported_value",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0", "unsupported_value"),
        ({"tools": [{"name": "x"}]}, "tools.0.input_schema", "missing_required_parameter"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice", "invalid_value"),
        ({"system": [{"type": "image"}]}, "system.0", "invalid_type"),
        ({"stop_sequences": "END"}, "stop_sequences", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(change: JSONObject, param: str, code: str) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], **change}

    with pytest.raises(ProtocolError) as caught:
        translate_messages_request(body)

    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, code)


def test_count_tokens_needs_no_max_tokens_and_counts_tools() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}

    bare = count_message_tokens(body)["input_tokens"]
    with_tools = count_message_tokens({**body, "tools": [TOOL]})["input_tokens"]
    with_system = count_message_tokens({**body, "system": "You are a helpful assistant."})["input_tokens"]

    assert 0 < bare < with_tools
    assert bare < with_system


def test_count_tokens_refuses_what_messages_refuses() -> None:
    with pytest.raises(ProtocolError) as caught:
        count_message_tokens({"model": "m", "messages": "hi"})

    assert caught.value.param == "messages"


# -- round trip through tether's own Responses → Messages translation ----------------------------------------

_text = st.text(min_size=1, max_size=12)
_text_block = st.builds(lambda text: {"type": "text", "text": text}, _text)


@st.composite
def _conversations(draw: st.DrawFn) -> list[JSONObject]:
    """Alternating-or-not user/assistant messages; every tool_use is answered by the next user message."""
    messages: list[JSONObject] = []
    pending: list[str] = []
    for turn in range(draw(st.integers(1, 6))):
        results = [{"type": "tool_result", "tool_use_id": call_id, "content": draw(_text)} for call_id in pending]
        pending = []
        blocks: list[Any] = [*results, *draw(st.lists(_text_block, max_size=2))]
        if not blocks:
            blocks = [{"type": "text", "text": "go"}]
        as_string = not results and len(blocks) == 1 and draw(st.booleans())
        messages.append({"role": "user", "content": blocks[0]["text"] if as_string else blocks})
        if draw(st.booleans()):  # a second user message in a row
            messages.append({"role": "user", "content": draw(_text)})
        assistant: list[Any] = draw(st.lists(_text_block, max_size=2))
        for call in range(draw(st.integers(0, 2))):
            pending.append(f"toolu_{turn}_{call}")
            assistant.append({"type": "tool_use", "id": pending[-1], "name": "Read", "input": {"n": call}})
        messages.append({"role": "assistant", "content": assistant or [{"type": "text", "text": "ok"}]})
    if pending:
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": c} for c in pending]})
    return messages


def _normalised(messages: list[JSONObject]) -> list[JSONObject]:
    """What the Messages API means by a message list: string content as one text block, same-role runs merged,
    tool results first in their user turn, empty text and tool_result ``content`` left out when empty."""
    merged: list[JSONObject] = []
    for message in messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else [dict(b) for b in content]
        for block in blocks:
            if block["type"] == "tool_result":
                block["content"] = block.get("content", "")
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"] += blocks
        else:
            merged.append({"role": message["role"], "content": blocks})
    for message in merged:
        message["content"].sort(key=lambda block: block["type"] != "tool_result")
    return merged


@given(_conversations(), st.sampled_from([None, "You are terse."]))
def test_round_trip_through_the_messages_translation_keeps_the_conversation(
    messages: list[JSONObject], system: str | None
) -> None:
    body: JSONObject = {"model": "m", "max_tokens": 100, "messages": messages, "tools": [TOOL]}
    if system is not None:
        body["system"] = system
    responses = translate_messages_request(body).responses
    request = ProviderRequest(
        model="m",
        instructions=responses.get("instructions"),
        context=responses["input"],
        new_items=responses["input"][-1:],
        tools=responses["tools"],
        tool_choice="auto",
        context_tokens=0,
        cached_tokens=0,
        previous_response_id=None,
        response_id="resp_x",
        params={"max_output_tokens": responses["max_output_tokens"]},
    )

    back = anthropic_request(request, prompt_caching=False)

    assert back["messages"] == _normalised(messages)
    assert back.get("system") == ([{"type": "text", "text": system}] if system else None)
    assert back["tools"] == [TOOL]
    assert back["max_tokens"] == 100
