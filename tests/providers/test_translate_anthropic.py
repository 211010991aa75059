from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.compaction import compaction_item
from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import (
    Finish,
    ModelEvent,
    ReasoningEnd,
    ReasoningSummaryDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tether.providers.base import ProviderRequest
from tether.providers.translate_anthropic import AnthropicStreamDecoder, anthropic_request, anthropic_usage, tool_id
from tether.types import Item, JSONObject

TOOL: JSONObject = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    "strict": True,
}
EPHEMERAL = {"type": "ephemeral"}


def make_request(
    context: Sequence[Item],
    *,
    new: int = 1,
    instructions: str | None = None,
    tools: list[JSONObject] | None = None,
    tool_choice: str | JSONObject = "auto",
    params: JSONObject | None = None,
) -> ProviderRequest:
    return ProviderRequest(
        model="claude-sonnet-4-5",
        instructions=instructions,
        context=context,
        new_items=context[len(context) - new :],
        tools=tools or [],
        tool_choice=tool_choice,
        context_tokens=0,
        cached_tokens=0,
        previous_response_id=None,
        response_id="resp_test",
        params=params or {},
    )


def user(content: Any) -> Item:
    return {"type": "message", "role": "user", "content": content}


def assistant(text: str) -> Item:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def call(call_id: str, arguments: str = '{"path":"a"}') -> Item:
    return {"type": "function_call", "call_id": call_id, "name": "read_file", "arguments": arguments}


def output(call_id: str, value: Any = "ok") -> Item:
    return {"type": "function_call_output", "call_id": call_id, "output": value}


def body_of(context: Sequence[Item], **kwargs: Any) -> JSONObject:
    kwargs.setdefault("prompt_caching", False)
    caching = kwargs.pop("prompt_caching")
    return anthropic_request(make_request(context, **kwargs), prompt_caching=caching)


def text(value: str) -> JSONObject:
    return {"type": "text", "text": value}


# -- items → messages ------------------------------------------------------------------------------------------


def test_instructions_system_and_developer_messages_make_the_system_prompt() -> None:
    context = [
        {"type": "message", "role": "developer", "content": "Use tools."},
        user("Hi."),
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be kind."}]},
    ]
    body = body_of(context, instructions="Be brief.")
    assert body["system"] == [text("Be brief."), text("Use tools."), text("Be kind.")]
    assert body["messages"] == [{"role": "user", "content": [text("Hi.")]}]


def test_consecutive_same_role_messages_are_merged() -> None:
    context = [user("One."), user([{"type": "input_text", "text": "Two."}]), assistant("A."), assistant("B.")]
    assert body_of(context)["messages"] == [
        {"role": "user", "content": [text("One."), text("Two.")]},
        {"role": "assistant", "content": [text("A."), text("B.")]},
    ]


def test_calls_become_tool_use_and_outputs_tool_result_blocks() -> None:
    context = [
        user("Read two files."),
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Plan."}]},
        assistant("Reading."),
        call("call_1"),
        call("call.2:x", arguments='{"path":"b"}'),
        output("call_1", "A"),
        output("call.2:x", [{"type": "input_text", "text": "B"}]),
        user("Thanks."),
    ]
    assert body_of(context)["messages"] == [
        {"role": "user", "content": [text("Read two files.")]},
        {
            "role": "assistant",
            "content": [
                text("Reading."),
                {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"path": "a"}},
                {"type": "tool_use", "id": "call_2_x", "name": "read_file", "input": {"path": "b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "A"},
                {"type": "tool_result", "tool_use_id": "call_2_x", "content": [text("B")]},
                text("Thanks."),
            ],
        },
    ]


def test_tool_results_are_moved_before_text_in_a_user_message() -> None:
    context = [user("Go."), call("c1"), user("Also this."), output("c1")]
    assert body_of(context)["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "ok"},
        text("Also this."),
    ]


@pytest.mark.parametrize("arguments", ["", "{not json", "[1, 2]"])
def test_arguments_that_are_not_an_object_become_an_empty_input(arguments: str) -> None:
    body = body_of([user("Go."), call("c1", arguments)])
    assert body["messages"][1]["content"][0]["input"] == {}


def test_images_and_documents() -> None:
    content = [
        {"type": "input_text", "text": "Compare."},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0="},
        {"type": "input_file", "file_url": "https://example.com/a.pdf"},
    ]
    image = {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/"}
    context = [user(content), call("c1"), output("c1", [{"type": "input_text", "text": "shot"}, image])]
    messages = body_of(context)["messages"]
    assert messages[0]["content"] == [
        text("Compare."),
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
    ]
    assert messages[2]["content"][0]["content"] == [
        text("shot"),
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "file_id": "file_1"},
        {"type": "input_image", "image_url": "ftp://example.com/a.png"},
        {"type": "input_audio", "data": "x"},
    ],
)
def test_parts_anthropic_cannot_carry_are_refused(part: JSONObject) -> None:
    with pytest.raises(ProtocolError) as caught:
        body_of([user([part])])
    assert (caught.value.status, caught.value.param) == (400, "input")


def test_empty_text_is_skipped_and_refusals_kept() -> None:
    refusal = {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]}
    context = [user(""), user([{"type": "input_text", "text": ""}]), user("Real."), refusal]
    assert body_of(context)["messages"] == [
        {"role": "user", "content": [text("Real.")]},
        {"role": "assistant", "content": [text("I can't.")]},
    ]


def test_compaction_is_expanded_and_unknown_items_refused() -> None:
    context = [compaction_item([user("Old."), assistant("Answer.")]), user("New.")]
    assert [m["content"] for m in body_of(context)["messages"]] == [
        [text("Old.")],
        [text("Answer.")],
        [text("New.")],
    ]
    with pytest.raises(ProtocolError):
        body_of([{"type": "custom_tool_call", "call_id": "x"}])


@pytest.mark.parametrize(("call_id", "expected"), [("toolu_01A", "toolu_01A"), ("a.b/c d", "a_b_c_d"), ("", "call")])
def test_tool_ids_are_made_acceptable(call_id: str, expected: str) -> None:
    assert tool_id(call_id) == expected


# -- tools and parameters --------------------------------------------------------------------------------------


def test_tools_take_input_schema() -> None:
    body = body_of([user("x")], tools=[TOOL, {"type": "function", "name": "now"}])
    assert body["tools"] == [
        {"name": "read_file", "description": "Read a file.", "input_schema": TOOL["parameters"]},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize(
    ("choice", "sequential", "expected"),
    [
        ("auto", False, {"type": "auto"}),
        ("required", False, {"type": "any"}),
        ("none", True, {"type": "none"}),
        ({"type": "function", "name": "read_file"}, False, {"type": "tool", "name": "read_file"}),
        ("auto", True, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "read_file"}]},
            False,
            {"type": "any"},
        ),
    ],
)
def test_tool_choice(choice: str | JSONObject, sequential: bool, expected: JSONObject) -> None:
    params = {"parallel_tool_calls": not sequential}
    assert body_of([user("x")], tools=[TOOL], tool_choice=choice, params=params)["tool_choice"] == expected


def test_max_tokens_is_always_sent_and_parameters_translated() -> None:
    assert body_of([user("x")])["max_tokens"] == 4096
    params: JSONObject = {"max_output_tokens": 100, "temperature": 0.5, "top_p": 0.9, "user": "u1"}
    body = body_of([user("x")], params=params)
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (100, 0.5, 0.9)
    assert body["metadata"] == {"user_id": "u1"}
    assert body["stream"] is True
    assert "tools" not in body
    assert "system" not in body


@pytest.mark.parametrize("temperature", [1.01, 2])
def test_a_temperature_anthropic_cannot_take_is_refused_before_it_is_sent(temperature: float) -> None:
    with pytest.raises(ProtocolError) as caught:
        body_of([user("x")], params={"temperature": temperature})
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "unsupported_value", "temperature")
    assert body_of([user("x")], params={"temperature": 1})["temperature"] == 1


# -- prompt caching --------------------------------------------------------------------------------------------


def marked(body: JSONObject) -> list[JSONObject]:
    blocks = [*body.get("tools", []), *body.get("system", [])]
    blocks += [block for message in body["messages"] for block in message["content"]]
    return [block for block in blocks if "cache_control" in block]


def agent_loop(rounds: int) -> list[Item]:
    items: list[Item] = [user("Do the task.")]
    for n in range(rounds):
        items += [call(f"c{n}"), output(f"c{n}", f"result {n}")]
    return items


def test_breakpoints_sit_on_the_tools_the_system_the_previous_request_end_and_the_end() -> None:
    context = agent_loop(3)
    body = body_of(context, new=1, instructions="Sys.", tools=[TOOL], prompt_caching=True)
    assert body["tools"][-1]["cache_control"] == EPHEMERAL
    assert body["system"][-1]["cache_control"] == EPHEMERAL
    messages = body["messages"]
    # The previous turn's request ended with the output of c1; this one adds the call c2 and its output.
    assert messages[4]["content"][-1] == {
        "type": "tool_result",
        "tool_use_id": "c1",
        "content": "result 1",
        "cache_control": EPHEMERAL,
    }
    assert messages[-1]["content"][-1]["cache_control"] == EPHEMERAL
    assert len(marked(body)) == 4


def test_the_previous_request_end_is_where_that_request_put_its_last_breakpoint() -> None:
    previous = anthropic_request(make_request(agent_loop(2)))
    current = anthropic_request(make_request(agent_loop(3)))
    last_before = marked(previous)[-1]
    assert last_before["tool_use_id"] == "c1"
    assert last_before in marked(current)


def test_a_first_turn_has_at_most_one_message_breakpoint() -> None:
    body = anthropic_request(make_request([user("Hello.")]))
    assert marked(body) == [{"type": "text", "text": "Hello.", "cache_control": EPHEMERAL}]


def test_prompt_caching_can_be_turned_off() -> None:
    body = body_of(agent_loop(3), instructions="Sys.", tools=[TOOL], prompt_caching=False)
    assert marked(body) == []


def strip_cache_control(messages: list[JSONObject]) -> list[JSONObject]:
    stripped = copy.deepcopy(messages)
    for message in stripped:
        for block in message["content"]:
            block.pop("cache_control", None)
    return stripped


@given(st.integers(1, 12), st.integers(1, 3))
def test_each_turn_extends_the_previous_prompt_and_never_exceeds_four_breakpoints(rounds: int, parallel: int) -> None:
    history: list[Item] = [user("Task.")]
    previous: list[JSONObject] = []
    for n in range(rounds):
        new = [output(f"c{n}_{p}") for p in range(parallel)] if n else []
        history += new
        body = anthropic_request(make_request(history, new=max(1, len(new)), instructions="Sys.", tools=[TOOL]))
        assert len(marked(body)) <= 4
        messages = strip_cache_control(body["messages"])
        assert messages[: len(previous)] == previous
        previous = messages
        history += [call(f"c{n + 1}_{p}") for p in range(parallel)]


# -- stream → model events -------------------------------------------------------------------------------------


def decode(events: Sequence[JSONObject]) -> tuple[list[ModelEvent], AnthropicStreamDecoder]:
    decoder = AnthropicStreamDecoder()
    out = [model_event for event in events for model_event in decoder.feed(event)]
    return out + decoder.close(), decoder


def start(index: int, block: JSONObject) -> JSONObject:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, value: JSONObject) -> JSONObject:
    return {"type": "content_block_delta", "index": index, "delta": value}


def stop(index: int) -> JSONObject:
    return {"type": "content_block_stop", "index": index}


MESSAGE_START: JSONObject = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 5000,
            "output_tokens": 1,
        },
    },
}


def test_a_whole_stream() -> None:
    events, decoder = decode(
        [
            MESSAGE_START,
            {"type": "ping"},
            start(0, {"type": "thinking", "thinking": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "Plan"}),
            delta(0, {"type": "signature_delta", "signature": "sig"}),
            stop(0),
            start(1, {"type": "text", "text": ""}),
            delta(1, {"type": "text_delta", "text": "Reading."}),
            stop(1),
            start(2, {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {}}),
            delta(2, {"type": "input_json_delta", "partial_json": ""}),
            delta(2, {"type": "input_json_delta", "partial_json": '{"path":'}),
            delta(2, {"type": "input_json_delta", "partial_json": '"a"}'}),
            stop(2),
            start(3, {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}),
            stop(3),
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}},
            {"type": "message_stop"},
        ]
    )
    assert decoder.finished
    assert events == [
        ReasoningSummaryDelta("Plan"),
        ReasoningEnd({"encrypted_content": "tether:anthropic:thinking:sig"}),
        TextDelta("Reading."),
        ToolCallDelta("toolu_1", "read_file", ""),
        ToolCallDelta("toolu_1", "read_file", '{"path":'),
        ToolCallDelta("toolu_1", "read_file", '"a"}'),
        ToolCallDelta("toolu_2", "now", ""),
        ToolCallDelta("toolu_2", "now", "{}"),
        Finish(Usage(5320, 42, cached_tokens=5000, cache_write_tokens=300), "stop"),
    ]


def test_a_redacted_thinking_block_is_kept_whole() -> None:
    events, _ = decode([start(0, {"type": "redacted_thinking", "data": "EmwKAhgB"}), stop(0)])
    assert events[:-1] == [ReasoningEnd({"encrypted_content": "tether:anthropic:redacted:EmwKAhgB"})]


# -- extended thinking -------------------------------------------------------------------------------------------

THINKING: Item = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "Plan: read a."}],
    "encrypted_content": "tether:anthropic:thinking:EqQBCkYIBRgCKkDsig==",
}
HIGH: JSONObject = {"reasoning": {"effort": "high"}}
REDACTED: Item = {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "tether:anthropic:redacted:Ex"}


def test_thinking_kept_as_reasoning_goes_back_verbatim_before_the_tool_use() -> None:
    context = [user("Read a."), THINKING, REDACTED, call("call_1"), output("call_1", "A")]
    messages = anthropic_request(make_request(context), prompt_caching=True)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Plan: read a.", "signature": "EqQBCkYIBRgCKkDsig=="},
            {"type": "redacted_thinking", "data": "Ex"},
            {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"path": "a"}},
        ],
    }


def test_reasoning_another_upstream_sealed_is_not_sent() -> None:
    openai_reasoning = {**THINKING, "encrypted_content": "gAAAAB-openai"}
    context = [user("Read a."), openai_reasoning, call("call_1"), output("call_1", "A")]
    assert [block["type"] for block in body_of(context)["messages"][1]["content"]] == ["tool_use"]


def test_thinking_blocks_never_carry_a_cache_breakpoint() -> None:
    body = anthropic_request(make_request([user("Hi."), THINKING], new=1), prompt_caching=True)
    assert "cache_control" not in body["messages"][1]["content"][0]


@pytest.mark.parametrize(
    ("params", "thinking", "max_tokens"),
    [
        ({"reasoning": {"effort": "low"}}, {"type": "enabled", "budget_tokens": 2048}, 4096 + 2048),
        ({**HIGH, "max_output_tokens": 30000}, {"type": "enabled", "budget_tokens": 24576}, 30000),
        ({**HIGH, "max_output_tokens": 8000}, {"type": "enabled", "budget_tokens": 7999}, 8000),
        ({"reasoning": {"effort": "none"}}, None, 4096),
        ({}, None, 4096),
        ({"thinking": {"type": "enabled", "budget_tokens": 5000}}, {"type": "enabled", "budget_tokens": 5000}, 9096),
        ({"thinking": {"type": "adaptive"}}, {"type": "adaptive"}, 4096),
    ],
)  # fmt: skip
def test_reasoning_effort_asks_for_extended_thinking(
    params: JSONObject, thinking: JSONObject | None, max_tokens: int
) -> None:
    body = anthropic_request(make_request([user("Hi.")], params=params))
    assert body.get("thinking") == thinking
    assert body["max_tokens"] == max_tokens


def test_a_configured_budget_applies_unless_the_request_says_otherwise() -> None:
    configured = anthropic_request(make_request([user("Hi.")]), thinking_budget_tokens=3000)
    assert configured["thinking"] == {"type": "enabled", "budget_tokens": 3000}
    off = anthropic_request(
        make_request([user("Hi.")], params={"reasoning": {"effort": "none"}}), thinking_budget_tokens=3000
    )
    assert "thinking" not in off


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"reasoning": {"effort": "low"}, "max_output_tokens": 1000}, "max_output_tokens"),
    ],
)
def test_reasoning_settings_anthropic_cannot_take_are_a_400(params: JSONObject, param: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        anthropic_request(make_request([user("Hi.")], params=params))
    assert (raised.value.status, raised.value.param) == (400, param)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "name": "read_file"}])
def test_thinking_with_a_forced_tool_is_a_400_before_the_upstream_is_asked(tool_choice: str | JSONObject) -> None:
    request = make_request(
        [user("Hi.")], tools=[TOOL], tool_choice=tool_choice, params={"reasoning": {"effort": "low"}}
    )
    with pytest.raises(ProtocolError) as raised:
        anthropic_request(request)
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, "unsupported_value", "tool_choice")
    auto = make_request([user("Hi.")], tools=[TOOL], params={"reasoning": {"effort": "low"}})
    assert anthropic_request(auto)["tool_choice"] == {"type": "auto"}
    # A configured default budget is a default: a turn that forces a tool runs without thinking.
    configured = anthropic_request(
        make_request([user("Hi.")], tools=[TOOL], tool_choice=tool_choice), thinking_budget_tokens=3000
    )
    assert "thinking" not in configured


def test_text_in_a_block_start_and_input_given_whole_are_kept() -> None:
    events, _ = decode(
        [
            start(0, {"type": "text", "text": "Hi"}),
            start(1, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}),
            stop(1),
            start(2, {"type": "redacted_thinking", "data": "xyz"}),
            {"type": "message_stop"},
        ]
    )
    assert events[:3] == [TextDelta("Hi"), ToolCallDelta("t", "f", ""), ToolCallDelta("t", "f", '{"a":1}')]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("end_turn", "stop"),
        ("tool_use", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "max_output_tokens"),
        ("model_context_window_exceeded", "max_output_tokens"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, expected: str) -> None:
    events, _ = decode([{"type": "message_delta", "delta": {"stop_reason": reason}}, {"type": "message_stop"}])
    assert events == [Finish(Usage(0, 0), expected)]  # type: ignore[arg-type]


def test_a_stream_without_message_stop_is_not_finished() -> None:
    _, decoder = decode([MESSAGE_START, start(0, {"type": "text", "text": ""})])
    assert not decoder.finished


def test_usage_from_message_delta_overrides_message_start() -> None:
    usage = {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 9}
    events, _ = decode([MESSAGE_START, {"type": "message_delta", "delta": {}, "usage": usage}])
    assert events[-1] == Finish(Usage(7 + 300 + 3, 9, cached_tokens=3, cache_write_tokens=300))


def test_anthropic_usage() -> None:
    assert anthropic_usage({}) == Usage(0, 0)
    assert anthropic_usage({"input_tokens": 5, "cache_creation_input_tokens": 10}) == Usage(
        15, 0, cached_tokens=0, cache_write_tokens=10
    )
