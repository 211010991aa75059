"""Chat Completions requests → Responses request bodies."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.agent_apis import translate_chat_request
from tether.protocol.errors import ProtocolError
from tether.protocol.request import Transport, parse_create
from tether.providers.base import ProviderRequest
from tether.providers.translate_chat import chat_request
from tether.types import JSONObject

FUNCTION = {"name": "read_file", "description": "Read a file.", "parameters": {"type": "object", "properties": {}}}
TOOL = {"type": "function", "function": FUNCTION}


def agent_body() -> JSONObject:
    return {
        "model": "gpt-5.4",
        "messages": [
            {"role": "system", "content": "You are a coding agent."},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this file?"},
                    {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Reading.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"p":1}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": '{"p":2}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "one"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
        ],
        "tools": [TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "max_completion_tokens": 500,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": "END",
        "seed": 7,
    }


def test_an_agent_request_becomes_items_in_order() -> None:
    translation = translate_chat_request(agent_body())

    assert translation.responses == {
        "model": "gpt-5.4",
        "input": [
            {"type": "message", "role": "system", "content": "You are a coding agent."},
            {"type": "message", "role": "developer", "content": "Be brief."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this file?"},
                    {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Reading.", "annotations": []}],
            },
            {"type": "function_call", "call_id": "call_1", "name": "read_file", "arguments": '{"p":1}'},
            {"type": "function_call", "call_id": "call_2", "name": "read_file", "arguments": '{"p":2}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "one"},
            {"type": "function_call_output", "call_id": "call_2", "output": "two"},
        ],
        "tools": [{"type": "function", **FUNCTION}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "max_output_tokens": 500,
        "temperature": 0.2,
        "stream": True,
    }
    assert translation.reply.include_usage is True
    assert translation.reply.stop == ("END",)


def test_translated_body_is_a_valid_responses_request() -> None:
    request = parse_create(translate_chat_request(agent_body()).responses, Transport.HTTP)

    assert request.max_output_tokens == 500


def test_the_agents_body_is_not_modified() -> None:
    body = agent_body()
    before = copy.deepcopy(body)

    translate_chat_request(body)

    assert body == before


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("required", "required"),
        ({"type": "function", "function": {"name": "read_file"}}, {"type": "function", "name": "read_file"}),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [TOOL]}},
            {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "read_file"}]},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": choice}

    assert translate_chat_request(body).responses["tool_choice"] == expected


def test_response_format_and_reasoning_effort() -> None:
    schema = {"name": "answer", "schema": {"type": "object"}, "strict": True}
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": schema},
        "reasoning_effort": "low",
        "max_tokens": 9,
    }

    responses = translate_chat_request(body).responses

    assert responses["text"] == {"format": {"type": "json_schema", **schema}}
    assert responses["reasoning"] == {"effort": "low"}
    assert responses["max_output_tokens"] == 9


def test_include_usage_only_counts_when_streaming() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}}

    assert translate_chat_request(body).reply.include_usage is False


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"model": None}, "model", "missing_required_parameter"),
        ({"messages": "hi"}, "messages", "missing_required_parameter"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "invalid_value"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role", "unsupported_value"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0]",
            "unsupported_value",
        ),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "invalid_type"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]", "unsupported_value"),
        ({"n": 2}, "n", "unsupported_value"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "invalid_value"),
        ({"tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        ({"stop": 5}, "stop", "invalid_type"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(change: JSONObject, param: str, code: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **change}

    with pytest.raises(ProtocolError) as caught:
        translate_chat_request(body)

    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, code)


# -- round trip through tether's own Responses → Chat translation --------------------------------------------

_text = st.text(min_size=1, max_size=12)


@st.composite
def _conversations(draw: st.DrawFn) -> list[JSONObject]:
    messages: list[JSONObject] = [{"role": "system", "content": draw(_text)}] if draw(st.booleans()) else []
    for turn in range(draw(st.integers(1, 5))):
        messages.append({"role": "user", "content": draw(_text)})
        calls = [
            {"id": f"call_{turn}_{n}", "type": "function", "function": {"name": "read_file", "arguments": '{"n":1}'}}
            for n in range(draw(st.integers(0, 2)))
        ]
        assistant: JSONObject = {"role": "assistant", "content": draw(st.one_of(st.none(), _text))}
        if calls:
            assistant["tool_calls"] = calls
        elif assistant["content"] is None:
            assistant["content"] = "ok"
        messages.append(assistant)
        messages += [{"role": "tool", "tool_call_id": call["id"], "content": draw(_text)} for call in calls]
    return messages


@given(_conversations())
def test_round_trip_through_the_chat_translation_keeps_the_conversation(messages: list[JSONObject]) -> None:
    responses = translate_chat_request({"model": "m", "messages": messages, "tools": [TOOL]}).responses
    request = ProviderRequest(
        model="m",
        instructions=None,
        context=responses["input"],
        new_items=responses["input"][-1:],
        tools=responses["tools"],
        tool_choice="auto",
        context_tokens=0,
        cached_tokens=0,
        previous_response_id=None,
        response_id="resp_x",
    )

    back = chat_request(request)

    assert back["messages"] == messages
    assert back["tools"] == [TOOL]
