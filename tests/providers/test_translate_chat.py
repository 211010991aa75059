from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.compaction import compaction_item
from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import Finish, ModelEvent, ReasoningSummaryDelta, TextDelta, ToolCallDelta, Usage
from tether.providers.base import ProviderRequest
from tether.providers.translate_chat import ChatStreamDecoder, chat_request, chat_usage, expand_items
from tether.types import Item, JSONObject

TOOL: JSONObject = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    "strict": True,
}


def make_request(
    context: Sequence[Item],
    *,
    instructions: str | None = None,
    tools: list[JSONObject] | None = None,
    tool_choice: str | JSONObject = "auto",
    params: JSONObject | None = None,
) -> ProviderRequest:
    return ProviderRequest(
        model="qwen3",
        instructions=instructions,
        context=context,
        new_items=context[-1:],
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


def call(call_id: str, name: str = "read_file", arguments: str = '{"path":"a"}') -> Item:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def output(call_id: str, value: Any = "ok") -> Item:
    return {"type": "function_call_output", "call_id": call_id, "output": value}


def messages(context: Sequence[Item], **kwargs: Any) -> list[JSONObject]:
    result: list[JSONObject] = chat_request(make_request(context, **kwargs))["messages"]
    return result


# -- items → messages ------------------------------------------------------------------------------------------


def test_instructions_come_first_as_a_system_message() -> None:
    assert messages([user("Hi.")], instructions="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
    ]


@pytest.mark.parametrize("role", ["system", "developer"])
def test_system_and_developer_messages_become_system_messages(role: str) -> None:
    item = {"type": "message", "role": role, "content": [{"type": "input_text", "text": "Rules."}]}
    assert messages([item]) == [{"role": "system", "content": "Rules."}]


def test_text_only_user_content_is_flattened_to_a_string() -> None:
    content = [{"type": "input_text", "text": "Hello "}, {"type": "input_text", "text": "there."}]
    assert messages([user(content), {"role": "user", "content": "Typeless."}]) == [
        {"role": "user", "content": "Hello there."},
        {"role": "user", "content": "Typeless."},
    ]


def test_images_and_files_keep_the_parts_array() -> None:
    content = [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "high"},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"},
    ]
    assert messages([user(content)]) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "auto"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"}},
            ],
        }
    ]


@pytest.mark.parametrize(
    "part",
    [{"type": "input_image", "file_id": "file_1"}, {"type": "input_audio", "data": "x"}, {"type": "input_file"}],
)
def test_parts_chat_cannot_carry_are_refused(part: JSONObject) -> None:
    with pytest.raises(ProtocolError) as caught:
        messages([user([{"type": "input_text", "text": "x"}, part])])
    assert caught.value.status == 400


def test_assistant_text_and_its_parallel_calls_are_one_message_answered_by_tool_messages() -> None:
    context = [
        user("Read two files."),
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Plan."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Reading."}]},
        call("call_1"),
        call("call_2", arguments='{"path":"b"}'),
        output("call_1", "A"),
        output("call_2", [{"type": "input_text", "text": "B"}]),
    ]
    assert messages(context) == [
        {"role": "user", "content": "Read two files."},
        {
            "role": "assistant",
            "content": "Reading.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"b"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "A"},
        {"role": "tool", "tool_call_id": "call_2", "content": "B"},
    ]


def test_a_call_without_text_opens_its_own_assistant_message() -> None:
    context = [user("Go."), call("c1", arguments=""), output("c1"), call("c2")]
    result = messages(context)
    assert result[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}],
    }
    assert [m["role"] for m in result] == ["user", "assistant", "tool", "assistant"]


def test_images_a_tool_returned_follow_its_tool_message() -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    result = messages([user("Shot."), call("c1"), output("c1", [{"type": "input_text", "text": "see"}, image])])
    assert result[-2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "see"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    ]


def test_compaction_items_made_by_tether_are_expanded() -> None:
    held = [user("Old question."), {"type": "message", "role": "assistant", "content": "Old answer."}]
    context = [compaction_item([compaction_item(held[:1]), held[1]]), user("New question.")]
    assert [m["content"] for m in messages(context)] == ["Old question.", "Old answer.", "New question."]
    assert list(expand_items([held[0]])) == [held[0]]


def test_an_opaque_compaction_item_is_refused() -> None:
    with pytest.raises(ProtocolError, match="compaction"):
        messages([{"type": "compaction", "encrypted_content": "gAAAA-openai-opaque"}])


def test_item_references_are_dropped_and_unknown_items_refused() -> None:
    assert messages([user("x"), {"type": "item_reference", "id": "msg_1"}]) == [{"role": "user", "content": "x"}]
    with pytest.raises(ProtocolError) as caught:
        messages([{"type": "web_search_call", "id": "ws_1"}])
    assert caught.value.param == "input"


# -- tools and parameters --------------------------------------------------------------------------------------


def test_function_tools_are_nested_under_function() -> None:
    body = chat_request(make_request([user("x")], tools=[TOOL, {"type": "function", "name": "now"}]))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "read_file",
                "description": "Read a file.",
                "parameters": TOOL["parameters"],
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
    ]
    assert body["tool_choice"] == "auto"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "read_file"}, {"type": "function", "function": {"name": "read_file"}}),
    ],
)
def test_tool_choice(choice: str | JSONObject, expected: Any) -> None:
    assert chat_request(make_request([user("x")], tools=[TOOL], tool_choice=choice))["tool_choice"] == expected


def test_allowed_tools_narrow_the_tool_list() -> None:
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "now"}]}
    body = chat_request(
        make_request([user("x")], tools=[TOOL, {"type": "function", "name": "now"}], tool_choice=choice)
    )
    assert [tool["function"]["name"] for tool in body["tools"]] == ["now"]
    assert body["tool_choice"] == "required"


def test_no_tools_sends_no_tool_fields() -> None:
    body = chat_request(make_request([user("x")], params={"parallel_tool_calls": False}))
    assert "tools" not in body
    assert "tool_choice" not in body
    assert "parallel_tool_calls" not in body


def test_hosted_tools_are_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        chat_request(make_request([user("x")], tools=[{"type": "web_search"}]))
    assert caught.value.param == "tools"


def test_request_parameters_are_translated() -> None:
    params: JSONObject = {
        "max_output_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        "metadata": {"a": "b"},
    }
    body = chat_request(make_request([user("x")], tools=[TOOL], params=params))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "qwen3"
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["user"]) == (300, 0.2, 0.9, "u1")
    assert body["parallel_tool_calls"] is False
    assert body["reasoning_effort"] == "low"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    assert "metadata" not in body


def test_json_object_format_and_no_reasoning_effort() -> None:
    params: JSONObject = {"text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "none"}}
    body = chat_request(make_request([user("x")], params=params))
    assert body["response_format"] == {"type": "json_object"}
    assert "reasoning_effort" not in body


# -- stream → model events -------------------------------------------------------------------------------------


def chunk(delta: JSONObject | None = None, finish_reason: str | None = None, **extra: Any) -> JSONObject:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {"object": "chat.completion.chunk", "choices": choices, **extra}


def tool_delta(index: int, arguments: str = "", *, call_id: str | None = None, name: str | None = None) -> JSONObject:
    delta: JSONObject = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        delta["id"] = call_id
        delta["type"] = "function"
    if name is not None:
        delta["function"]["name"] = name
    return {"tool_calls": [delta]}


def decode(chunks: Sequence[JSONObject], decoder: ChatStreamDecoder | None = None) -> list[ModelEvent]:
    decoder = decoder or ChatStreamDecoder()
    events = [event for c in chunks for event in decoder.feed(c)]
    return events + decoder.close()


def calls_of(events: Sequence[ModelEvent]) -> list[tuple[str, str, str]]:
    calls: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls.setdefault(event.call_id, []).append(event.arguments)
            names[event.call_id] = event.name
    return [(call_id, names[call_id], "".join(pieces)) for call_id, pieces in calls.items()]


def assert_contiguous(events: Sequence[ModelEvent]) -> None:
    """Every call's deltas are adjacent (model events are sequential per item)."""
    order = [event.call_id for event in events if isinstance(event, ToolCallDelta)]
    runs = [call_id for i, call_id in enumerate(order) if i == 0 or order[i - 1] != call_id]
    assert len(runs) == len(set(runs)), order


def test_text_and_reasoning_stream_as_they_come() -> None:
    events = decode(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Think"}),
            chunk({"reasoning": "ing."}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo."}),
            chunk({}, "stop"),
        ]
    )
    assert events == [
        ReasoningSummaryDelta("Think"),
        ReasoningSummaryDelta("ing."),
        TextDelta("Hel"),
        TextDelta("lo."),
        Finish(Usage(0, 0), "stop"),
    ]


def test_a_tool_call_with_streamed_arguments() -> None:
    events = decode(
        [
            chunk(tool_delta(0, call_id="call_a", name="read_file")),
            chunk(tool_delta(0, '{"pa')),
            chunk(tool_delta(0, 'th":"x"}')),
            chunk({}, "tool_calls"),
        ]
    )
    assert events[:3] == [
        ToolCallDelta("call_a", "read_file", ""),
        ToolCallDelta("call_a", "read_file", '{"pa'),
        ToolCallDelta("call_a", "read_file", 'th":"x"}'),
    ]
    assert events[3] == Finish(Usage(0, 0), "stop")


def test_parallel_calls_in_sequence_stream_one_after_the_other() -> None:
    events = decode(
        [
            chunk(tool_delta(0, call_id="a", name="f")),
            chunk(tool_delta(0, '{"n":1}')),
            chunk(tool_delta(1, call_id="b", name="g")),
            chunk(tool_delta(1, '{"n":2}')),
            chunk({}, "tool_calls"),
        ]
    )
    assert calls_of(events) == [("a", "f", '{"n":1}'), ("b", "g", '{"n":2}')]
    assert_contiguous(events)


def test_interleaved_parallel_calls_are_held_until_the_one_before_is_done() -> None:
    decoder = ChatStreamDecoder()
    first = decoder.feed(chunk(tool_delta(0, '{"n":', call_id="a", name="f")))
    held = decoder.feed(chunk(tool_delta(1, '{"m":', call_id="b", name="g")))
    assert first == [ToolCallDelta("a", "f", '{"n":')]
    assert held == []
    released = decoder.feed(chunk(tool_delta(0, "1}")))
    assert released == [ToolCallDelta("a", "f", "1}"), ToolCallDelta("b", "g", '{"m":')]
    rest = decoder.feed(chunk(tool_delta(1, "2}"))) + decoder.close()
    assert calls_of(first + released + rest) == [("a", "f", '{"n":1}'), ("b", "g", '{"m":2}')]


def test_calls_without_ids_get_one_and_empty_arguments_become_an_object() -> None:
    ids = iter(["call_gen1", "call_gen2"])
    decoder = ChatStreamDecoder(new_call_id=lambda: next(ids))
    events = decode([chunk({"tool_calls": [{"index": 0, "function": {"name": "now"}}]}), chunk({}, "stop")], decoder)
    assert calls_of(events) == [("call_gen1", "now", "{}")]


def test_text_after_tool_calls_began_waits_for_them() -> None:
    events = decode(
        [chunk(tool_delta(0, "{}", call_id="a", name="f")), chunk({"content": "After."}), chunk({}, "tool_calls")]
    )
    assert events[:-1] == [ToolCallDelta("a", "f", "{}"), TextDelta("After.")]


def test_more_arguments_for_a_finished_call_are_an_upstream_error() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(chunk(tool_delta(0, "{}", call_id="a", name="f")))
    decoder.feed(chunk(tool_delta(1, "{}", call_id="b", name="g")))
    decoder.feed(chunk(tool_delta(0, "  ")))  # whitespace is harmless
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(chunk(tool_delta(0, '"x"')))
    assert caught.value.status == 502


def test_a_call_that_never_got_a_name_is_an_upstream_error() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"arguments": "{}"}}]}))
    with pytest.raises(ProtocolError, match="without a name"):
        decoder.close()


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("tool_calls", "stop"), ("length", "max_output_tokens"), ("content_filter", "content_filter")],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    events = decode([chunk({"content": "x"}, reason)])
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == expected


def test_usage_arrives_in_a_chunk_without_choices() -> None:
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 40,
        "total_tokens": 1240,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    decoder = ChatStreamDecoder()
    decoder.feed(chunk({"content": "x"}, "stop"))
    assert decoder.finished
    events = decode([chunk(None, usage=usage)], decoder)
    assert events == [Finish(Usage(1200, 40, cached_tokens=1024, reasoning_tokens=12), "stop")]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({}, Usage(0, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None}, Usage(10, 2)),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}, Usage(10, 0, cached_tokens=10)),
        ({"prompt_tokens": -1, "completion_tokens": True}, Usage(0, 0)),
    ],
)
def test_chat_usage_is_defensive(usage: JSONObject, expected: Usage) -> None:
    assert chat_usage(usage) == expected


def test_other_choices_are_ignored() -> None:
    events = decode([{"choices": [{"index": 1, "delta": {"content": "other"}}]}, chunk({"content": "mine"}, "stop")])
    assert events[0] == TextDelta("mine")


# -- properties ------------------------------------------------------------------------------------------------

json_objects = st.dictionaries(
    st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=8), st.booleans()), max_size=3
)


@st.composite
def parallel_call_streams(draw: st.DrawFn) -> tuple[list[str], list[JSONObject]]:
    """Some calls with JSON object arguments, each cut into pieces, the pieces interleaved across calls."""
    arguments = [json.dumps(value) for value in draw(st.lists(json_objects, min_size=1, max_size=4))]
    queues: list[list[JSONObject]] = []
    for index, text in enumerate(arguments):
        cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        queues.append(
            [chunk(tool_delta(index, pieces[0], call_id=f"c{index}", name=f"f{index}"))]
            + [chunk(tool_delta(index, piece)) for piece in pieces[1:]]
        )
    chunks: list[JSONObject] = []
    opened = 0
    while any(queues):
        # Calls open in index order; after that, any open call may send its next piece.
        candidates = [i for i, q in enumerate(queues) if q and i <= opened]
        index = draw(st.sampled_from(candidates))
        chunks.append(queues[index].pop(0))
        opened = max(opened, index + 1)
    return arguments, [*chunks, chunk({}, "tool_calls")]


@given(parallel_call_streams())
def test_any_interleaving_of_parallel_calls_gives_each_call_whole_and_contiguous(
    case: tuple[list[str], list[JSONObject]],
) -> None:
    arguments, chunks = case
    events = decode(chunks)
    assert calls_of(events) == [(f"c{i}", f"f{i}", text) for i, text in enumerate(arguments)]
    assert_contiguous(events)
    assert isinstance(events[-1], Finish)
    assert not any(isinstance(event, Finish) for event in events[:-1])


@given(st.text(min_size=1, max_size=60), st.lists(st.integers(0, 60), max_size=6))
def test_text_split_anywhere_joins_back(text: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    events = decode([chunk({"content": piece}) for piece in pieces] + [chunk({}, "stop")])
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text


class _UniterableText(str):
    """A tool output that fails if anything walks its characters (a string is one text, never a list of parts)."""

    __slots__ = ()

    def __iter__(self) -> Any:
        raise AssertionError("a string tool output was iterated character by character")


def test_a_string_tool_output_is_never_walked_character_by_character() -> None:
    call = {"type": "function_call", "call_id": "call_1", "name": "read_file", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "call_1", "output": _UniterableText("x" * 10_000)}
    body = chat_request(make_request([{"type": "message", "role": "user", "content": "go"}, call, output]))
    assert body["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "x" * 10_000}
