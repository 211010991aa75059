"""Responses events → the ``chat.completion`` body and its chunk stream, checked by a strict reader."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.agent_apis import (
    CHAT_DONE,
    ChatReply,
    ChatStreamChecker,
    ChatStreamEncoder,
    WireError,
    chat_completion,
    chat_error,
    chat_failure,
    encode_chat_chunk,
)
from tether.protocol.agent_apis.common import cut_at_stop
from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import Finish, ModelEvent, ReasoningSummaryDelta, TextDelta, ToolCallDelta, Usage
from tether.protocol.response import response_object
from tether.protocol.stream import ResponseStream
from tether.types import JSONObject

REPLY = ChatReply(model="gpt-5.4", stream=True, include_usage=True)


def answer(events: Sequence[ModelEvent], fail: ProtocolError | None = None) -> tuple[list[JSONObject], JSONObject]:
    response = response_object(
        response_id="resp_77",
        created_at=1700000000,
        status="in_progress",
        model="gpt-5.4",
        params={},
        output=[],
        previous_response_id=None,
        store=False,
    )
    stream = ResponseStream(response)
    out = stream.start()
    for event in events:
        out += stream.feed(event)
    if fail is not None:
        out += stream.fail(fail)
    return [dict(event) for event in out], dict(stream.response)


def encode(events: Sequence[JSONObject], reply: ChatReply = REPLY) -> tuple[list[JSONObject], bytes, JSONObject]:
    encoder = ChatStreamEncoder(reply)
    chunks = [chunk for event in events for chunk in encoder.feed(event)]
    assert encoder.finished
    return chunks, b"".join(encode_chat_chunk(chunk) for chunk in chunks) + CHAT_DONE, encoder.completion


def check(data: bytes, include_usage: bool = True, cut: int | None = None) -> JSONObject:
    checker = ChatStreamChecker(include_usage=include_usage)
    step = cut or len(data)
    for start in range(0, len(data), step):
        checker.feed(data[start : start + step])
    return checker.close()


def test_a_tool_call_turn_streams_as_the_api_does() -> None:
    events, response = answer(
        [
            TextDelta("Reading."),
            ToolCallDelta("call_1", "read_file", '{"p":'),
            ToolCallDelta("call_1", "read_file", "1}"),
            ToolCallDelta("call_2", "read_file", "{}"),
            Finish(Usage(input_tokens=50, output_tokens=9, cached_tokens=40, reasoning_tokens=2)),
        ]
    )

    chunks, data, completion = encode(events)

    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert deltas == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Reading."},
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"p":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
        {
            "tool_calls": [
                {"index": 1, "id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 50,
        "completion_tokens": 9,
        "total_tokens": 59,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert all(chunk["id"] == "chatcmpl-77" and chunk["created"] == 1700000000 for chunk in chunks)
    assert data.endswith(b"data: [DONE]\n\n")
    checked = check(data)
    assert completion == chat_completion(response, REPLY)
    assert checked["message"]["tool_calls"] == completion["choices"][0]["message"]["tool_calls"]
    assert checked["message"]["content"] == completion["choices"][0]["message"]["content"] == "Reading."


def test_without_include_usage_no_chunk_has_a_usage_key() -> None:
    events, _ = answer([TextDelta("hi"), Finish(Usage(1, 1))])
    reply = ChatReply(model="m", stream=True)

    chunks, data, completion = encode(events, reply)

    assert all("usage" not in chunk for chunk in chunks)
    assert check(data, include_usage=False)["finish_reason"] == "stop"
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hi",
        "refusal": None,
        "annotations": [],
    }


def test_truncated_is_length_and_reasoning_is_not_sent() -> None:
    events, response = answer(
        [ReasoningSummaryDelta("think"), TextDelta("Once"), Finish(Usage(1, 1), "max_output_tokens")]
    )

    _, data, completion = encode(events)

    assert b"think" not in data
    assert check(data)["finish_reason"] == "length" == completion["choices"][0]["finish_reason"]
    assert chat_completion(response, REPLY) == completion


def test_a_failed_response_is_an_error_chunk() -> None:
    events, _ = answer([TextDelta("x")], fail=ProtocolError(502, "upstream_error", "Upstream broke."))

    chunks, data, _ = encode(events)

    assert chunks[-1]["error"]["message"] == "Upstream broke."
    assert "error" in check(data)


def test_errors_in_the_openai_shape() -> None:
    error = ProtocolError(400, "invalid_value", "bad", param="messages")
    assert chat_error(error) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "invalid_value"}
    }
    status, body = chat_failure({"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow"}})
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(
    "frames",
    [
        b"event: x\ndata: {}\n\n",  # an event line
        b'data: {"object":"chat.completion"}\n\ndata: [DONE]\n\n',  # not a chunk
        b"data: [DONE]\n\ndata: [DONE]\n\n",  # after [DONE]
    ],
)
def test_the_checker_is_strict(frames: bytes) -> None:
    with pytest.raises(WireError):
        check(frames)


def test_the_checker_needs_done() -> None:
    events, _ = answer([TextDelta("x"), Finish(Usage(1, 1))])
    _, data, _ = encode(events)

    with pytest.raises(WireError):
        check(data.removesuffix(CHAT_DONE))


@st.composite
def _answers(draw: st.DrawFn) -> list[ModelEvent]:
    events: list[ModelEvent] = []
    for index in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "reasoning", "call"]))
        if kind == "text":
            events.append(TextDelta(draw(st.text(min_size=1, max_size=5))))
        elif kind == "reasoning":
            events.append(ReasoningSummaryDelta(draw(st.text(min_size=1, max_size=5))))
        else:
            arguments = orjson.dumps(draw(st.dictionaries(st.text(max_size=3), st.booleans(), max_size=2))).decode()
            middle = draw(st.integers(0, len(arguments)))
            events += [
                ToolCallDelta(f"call_{index}", "f", arguments[:middle]),
                ToolCallDelta(f"call_{index}", "f", arguments[middle:]),
            ]
    return events


@given(_answers(), st.sampled_from(["stop", "max_output_tokens"]), st.booleans(), st.integers(1, 80))
def test_any_answer_streams_validly_and_matches_the_non_streamed_body(
    events: list[ModelEvent], reason: str, include_usage: bool, cut: int
) -> None:
    stream_events, response = answer([*events, Finish(Usage(3, 4), reason=reason)])  # type: ignore[arg-type]
    reply = ChatReply(model="m", stream=True, include_usage=include_usage)

    _, data, completion = encode(stream_events, reply)

    checked = check(data, include_usage, cut)
    assert completion == chat_completion(response, reply)
    choice = completion["choices"][0]
    assert checked["finish_reason"] == choice["finish_reason"]
    assert checked["message"]["content"] == choice["message"]["content"]
    assert checked["message"].get("tool_calls") == choice["message"].get("tool_calls")


@given(
    st.lists(st.text(alphabet="abXY", min_size=1, max_size=4), min_size=1, max_size=6),
    st.lists(st.text(alphabet="abXY", min_size=1, max_size=3), max_size=2),
    st.booleans(),
)
def test_a_stop_sequence_ends_the_chat_answer_where_it_starts(pieces: list[str], stops: list[str], call: bool) -> None:
    events: list[ModelEvent] = [TextDelta(piece) for piece in pieces]
    if call:
        events.append(ToolCallDelta("call_x", "f", "{}"))
    stream_events, response = answer([*events, Finish(Usage(1, 1))])
    reply = ChatReply(model="m", stream=True, stop=tuple(stops))

    _, data, completion = encode(stream_events, reply)

    checked = check(data, include_usage=False)
    assert completion == chat_completion(response, reply)
    text, hit = cut_at_stop("".join(pieces), tuple(stops))
    assert checked["message"]["content"] == completion["choices"][0]["message"]["content"] == (text or None)
    if hit is not None:
        assert checked["finish_reason"] == "stop"
        assert "tool_calls" not in completion["choices"][0]["message"]
