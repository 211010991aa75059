"""Responses events → the Messages answer and its exact SSE stream, checked by a strict reader of the format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.agent_apis import (
    MessagesReply,
    MessagesStreamChecker,
    MessagesStreamEncoder,
    WireError,
    anthropic_error,
    encode_messages_event,
    messages_failure,
    messages_response,
    ping_frame,
)
from tether.protocol.agent_apis.common import StopScanner, cut_at_stop
from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import Finish, ModelEvent, ReasoningSummaryDelta, TextDelta, ToolCallDelta, Usage
from tether.protocol.response import response_object
from tether.protocol.stream import ResponseStream
from tether.providers.translate_anthropic import AnthropicStreamDecoder
from tether.types import JSONObject

REPLY = MessagesReply(model="claude-sonnet-4-5", stream=True, input_tokens=42)


@dataclass
class Answer:
    """A response's Responses events and its final response object."""

    events: list[JSONObject]
    response: JSONObject


def responses_stream(events: Sequence[ModelEvent], *, fail: ProtocolError | None = None) -> Answer:
    response = response_object(
        response_id="resp_0123",
        created_at=1700000000,
        status="in_progress",
        model="claude-sonnet-4-5",
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
    return Answer([dict(event) for event in out], dict(stream.response))


def encode(responses: Sequence[JSONObject], reply: MessagesReply = REPLY) -> tuple[list[JSONObject], bytes, JSONObject]:
    encoder = MessagesStreamEncoder(reply)
    events = [out for event in responses for out in encoder.feed(event)]
    assert encoder.finished
    return events, b"".join(encode_messages_event(event) for event in events), encoder.message


def check(data: bytes, cut: int | None = None) -> JSONObject:
    checker = MessagesStreamChecker()
    if cut is None:
        checker.feed(data)
    else:
        for start in range(0, len(data), cut):
            checker.feed(data[start : start + cut])
    return checker.close()


def test_a_tool_loop_turn_streams_as_the_api_does() -> None:
    stream = responses_stream(
        [
            TextDelta("Let me "),
            TextDelta("look."),
            ToolCallDelta("call_abc", "Read", '{"path":'),
            ToolCallDelta("call_abc", "Read", '"a.py"}'),
            Finish(Usage(input_tokens=100, output_tokens=12, cached_tokens=60, cache_write_tokens=30)),
        ]
    )

    events, data, message = encode(stream.events)

    assert [event["type"] for event in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["id"] == "msg_0123"
    assert events[0]["message"]["usage"]["input_tokens"] == 42
    assert events[6]["content_block"] == {"type": "tool_use", "id": "call_abc", "name": "Read", "input": {}}
    assert events[7]["delta"] == {"type": "input_json_delta", "partial_json": '{"path":'}
    assert events[10] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 30,
            "cache_read_input_tokens": 60,
            "output_tokens": 12,
        },
    }
    assert data.startswith(b"event: message_start\ndata: {")
    assert check(data) == message == messages_response(stream.response, REPLY)
    assert message["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_abc", "name": "Read", "input": {"path": "a.py"}},
    ]


def test_text_only_ends_the_turn() -> None:
    stream = responses_stream([TextDelta("Done."), Finish(Usage(5, 1))])

    _, data, message = encode(stream.events)

    assert message["stop_reason"] == "end_turn"
    assert check(data)["stop_reason"] == "end_turn"


def test_max_output_tokens_is_max_tokens() -> None:
    stream = responses_stream([TextDelta("Once upon"), Finish(Usage(5, 2), reason="max_output_tokens")])

    _, data, message = encode(stream.events)

    assert message["stop_reason"] == check(data)["stop_reason"] == "max_tokens"
    assert messages_response(stream.response, REPLY)["stop_reason"] == "max_tokens"


def test_thinking_is_sent_only_when_the_request_enabled_it() -> None:
    stream = responses_stream([ReasoningSummaryDelta("Hmm."), TextDelta("Hi."), Finish(Usage(5, 2))])
    thinking = MessagesReply(model="m", thinking=True)

    _, without, plain = encode(stream.events)
    _, with_thinking, rich = encode(stream.events, thinking)

    assert [block["type"] for block in plain["content"]] == ["text"]
    assert rich["content"] == [
        {"type": "thinking", "thinking": "Hmm.", "signature": ""},
        {"type": "text", "text": "Hi."},
    ]
    assert check(with_thinking) == rich == messages_response(stream.response, thinking)
    assert b"signature_delta" in with_thinking
    assert b"thinking" not in without


def test_call_ids_become_valid_tool_use_ids() -> None:
    stream = responses_stream([ToolCallDelta("call.1:x", "Read", "{}"), Finish(Usage(1, 1))])

    _, data, message = encode(stream.events)

    assert message["content"][0]["id"] == "call_1_x"
    assert check(data)["content"][0]["id"] == "call_1_x"


def test_a_failed_response_is_an_error_event() -> None:
    stream = responses_stream([TextDelta("part")], fail=ProtocolError(429, "rate_limit_exceeded", "Slow down."))

    events, data, _ = encode(stream.events)

    assert events[-1] == {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down."}}
    assert check(data)["type"] == "error"


def test_deltas_missing_from_the_stream_are_caught_up_from_the_done_events() -> None:
    stream = responses_stream([TextDelta("Hello"), ToolCallDelta("c1", "Read", '{"a":1}'), Finish(Usage(1, 1))])
    without_deltas = [event for event in stream.events if not event["type"].endswith(".delta")]

    _, data, message = encode(without_deltas)

    assert check(data) == message == messages_response(stream.response, REPLY)
    assert message["content"][0]["text"] == "Hello"
    assert message["content"][1]["input"] == {"a": 1}


def test_events_after_the_end_are_ignored() -> None:
    stream = responses_stream([TextDelta("x"), Finish(Usage(1, 1))])
    encoder = MessagesStreamEncoder(REPLY)
    for event in stream.events:
        encoder.feed(event)

    assert encoder.feed(stream.events[-1]) == []


def test_errors_in_the_messages_shape() -> None:
    assert anthropic_error(ProtocolError(400, "invalid_value", "bad")) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    assert anthropic_error(ProtocolError(502, "upstream_error", "down"))["error"]["type"] == "api_error"
    failed = {"status": "failed", "error": {"code": "server_error", "message": "boom"}}
    assert messages_failure(failed) == (500, {"type": "error", "error": {"type": "api_error", "message": "boom"}})


def test_ping_frame() -> None:
    assert ping_frame() == b'event: ping\ndata: {"type":"ping"}\n\n'


@pytest.mark.parametrize(
    "frames",
    [
        b'event: ping\ndata: {"type":"ping"}\n\n',  # no message_start
        b'event: message_stop\ndata: {"type":"message_start"}\n\n',  # name and type differ
    ],
)
def test_the_checker_is_strict(frames: bytes) -> None:
    with pytest.raises(WireError):
        check(frames)


def test_the_checker_refuses_a_stream_cut_short() -> None:
    stream = responses_stream([TextDelta("x"), Finish(Usage(1, 1))])
    _, data, _ = encode(stream.events)

    with pytest.raises(WireError):
        check(data[: data.index(b"event: message_delta")])


@st.composite
def _answers(draw: st.DrawFn) -> list[ModelEvent]:
    """Text, reasoning and complete tool calls (their JSON arguments cut into pieces), in any order."""
    events: list[ModelEvent] = []
    for index in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "reasoning", "call"]))
        if kind == "text":
            events += [
                TextDelta(piece) for piece in draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3))
            ]
        elif kind == "reasoning":
            events.append(ReasoningSummaryDelta(draw(st.text(min_size=1, max_size=5))))
        else:
            arguments = orjson.dumps(
                draw(st.dictionaries(st.text(max_size=3), st.integers(-1000, 1000), max_size=2))
            ).decode()
            cuts = sorted(draw(st.lists(st.integers(0, len(arguments)), max_size=3)))
            pieces = [arguments[a:b] for a, b in zip([0, *cuts], [*cuts, len(arguments)], strict=True)]
            events += [ToolCallDelta(f"call_{index}", "Read", piece) for piece in pieces]
    return events


@given(
    _answers(),
    st.sampled_from(["stop", "max_output_tokens", "content_filter"]),
    st.booleans(),
    st.integers(1, 64),
)
def test_any_answer_streams_validly_and_matches_the_non_streamed_body(
    events: list[ModelEvent], reason: str, thinking: bool, cut: int
) -> None:
    stream = responses_stream([*events, Finish(Usage(10, 3), reason=reason)])  # type: ignore[arg-type]
    reply = MessagesReply(model="m", thinking=thinking)

    _, data, message = encode(stream.events, reply)

    assert check(data, cut) == message == messages_response(stream.response, reply)


# -- an Anthropic upstream's answer, through tether's engine events, back to the Messages API -----------------


@st.composite
def _upstream_messages(draw: st.DrawFn) -> list[JSONObject]:
    """Content blocks as an Anthropic upstream streams them (no two text or thinking blocks in a row: tether's
    engine keeps one item per run of the same kind)."""
    blocks: list[JSONObject] = []
    for index in range(draw(st.integers(1, 5))):
        kinds = ["tool_use"] + [k for k in ("text", "thinking") if not blocks or blocks[-1]["type"] != k]
        kind = draw(st.sampled_from(kinds))
        if kind == "text":
            blocks.append({"type": "text", "text": draw(st.text(min_size=1, max_size=8))})
        elif kind == "thinking":
            blocks.append({"type": "thinking", "thinking": draw(st.text(min_size=1, max_size=8)), "signature": ""})
        else:
            value = draw(st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2))
            blocks.append({"type": "tool_use", "id": f"toolu_{index:02d}", "name": "Read", "input": value})
    return blocks


def _upstream_stream(blocks: list[JSONObject], stop_reason: str) -> list[JSONObject]:
    events: list[JSONObject] = [{"type": "message_start", "message": {"usage": {"input_tokens": 7}}}]
    for index, block in enumerate(blocks):
        if block["type"] == "tool_use":
            start = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}]
        elif block["type"] == "text":
            start, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block["text"]}]
        else:
            start, deltas = (
                {"type": "thinking", "thinking": ""},
                [{"type": "thinking_delta", "thinking": block["thinking"]}],
            )
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events += [{"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 3}})
    events.append({"type": "message_stop"})
    return events


@given(_upstream_messages(), st.sampled_from(["end_turn", "max_tokens"]))
def test_an_anthropic_upstreams_answer_comes_back_as_it_was(blocks: list[JSONObject], stop_reason: str) -> None:
    decoder = AnthropicStreamDecoder()
    model_events = [event for upstream in _upstream_stream(blocks, stop_reason) for event in decoder.feed(upstream)]
    stream = responses_stream([*model_events, *decoder.close()])
    reply = MessagesReply(model="m", thinking=True)

    _, data, message = encode(stream.events, reply)

    assert check(data) == message
    assert message["content"] == blocks
    calls_tools = any(block["type"] == "tool_use" for block in blocks)
    assert message["stop_reason"] == (
        "max_tokens" if stop_reason == "max_tokens" else "tool_use" if calls_tools else "end_turn"
    )


_stop_text = st.text(alphabet="abXY", min_size=1, max_size=4)


@given(
    st.lists(_stop_text, min_size=1, max_size=6),
    st.lists(st.text(alphabet="abXY", min_size=1, max_size=3), max_size=2),
    st.booleans(),
)
def test_a_stop_sequence_ends_the_answer_where_it_starts(pieces: list[str], stops: list[str], call: bool) -> None:
    events: list[ModelEvent] = [TextDelta(piece) for piece in pieces]
    if call:
        events.append(ToolCallDelta("call_x", "Read", "{}"))
    stream = responses_stream([*events, Finish(Usage(1, 1))])
    reply = MessagesReply(model="m", stop_sequences=tuple(stops))

    _, data, message = encode(stream.events, reply)

    assert check(data) == message == messages_response(stream.response, reply)
    text, hit = cut_at_stop("".join(pieces), tuple(stops))
    assert [block.get("text") for block in message["content"] if block["type"] == "text"] == ([text] if text else [])
    assert message["stop_sequence"] == hit
    if hit is not None:
        assert message["stop_reason"] == "stop_sequence"
        assert all(block["type"] == "text" for block in message["content"])


@given(st.text(alphabet="abXY", max_size=12), st.lists(_stop_text, max_size=3), st.data())
def test_the_stop_scanner_cuts_the_same_however_the_text_is_chunked(
    whole: str, stops: list[str], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=4)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    scanner = StopScanner(tuple(stops))

    out = "".join(scanner.feed(piece) for piece in pieces) + scanner.flush()

    found = [(whole.find(s) + len(s), whole.find(s), s) for s in stops if s in whole]
    first = min(found) if found else None
    assert (out, scanner.hit) == ((whole[: first[1]], first[2]) if first else (whole, None))
