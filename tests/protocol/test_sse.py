from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.sse import ServerSentEvent, SSEDecodeError, SSEDecoder, encode_done, encode_event
from tether.types import JSON, JSONObject

# Characters a naive line splitter (str.splitlines, aiter_lines) would cut at, plus NUL, BOM and multibyte ones.
TRICKY = "\r\n\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\x00\ufeffé€😀 :"
SINGLE_LINE = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\x00\ufeffé€😀 :"

text_chars = st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY))
line_chars = st.one_of(st.characters(codec="utf-8", exclude_characters="\r\n"), st.sampled_from(SINGLE_LINE))

PROPERTY = settings(max_examples=100, deadline=None)


def decode_all(chunks: Iterable[bytes], decoder: SSEDecoder | None = None) -> list[ServerSentEvent]:
    decoder = decoder or SSEDecoder()
    events = [event for chunk in chunks for event in decoder.decode(chunk)]
    return events + decoder.flush()


def split_at(stream: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


# --- encoding -------------------------------------------------------------------------------------------------


def test_encode_event_frames_type_and_json() -> None:
    frame = encode_event({"type": "response.output_text.delta", "delta": "hi", "sequence_number": 3})
    assert frame == (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","delta":"hi","sequence_number":3}\n\n'
    )


def test_encode_event_escapes_control_characters_but_keeps_line_separators_raw() -> None:
    frame = encode_event({"type": "t", "text": "a\r\nb\u2028c"})
    assert frame.count(b"\n") == 3
    assert b"\r" not in frame
    assert "\u2028".encode() in frame


def test_encode_done() -> None:
    assert encode_done() == b"data: [DONE]\n\n"


@pytest.mark.parametrize("event", [{}, {"type": ""}, {"type": 3}, {"type": "a\nb"}, {"type": "a\rb"}])
def test_encode_event_rejects_types_that_break_framing(event: JSONObject) -> None:
    with pytest.raises(ValueError, match="type"):
        encode_event(event)


# --- decoding: lines ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending(eol: bytes) -> None:
    stream = b"event: a" + eol + b"data: 1" + eol + eol + b"data: 2" + eol + eol
    assert decode_all([stream]) == [ServerSentEvent("a", "1"), ServerSentEvent(None, "2")]


def test_mixed_line_endings() -> None:
    stream = b"data: a\rdata: b\r\ndata: c\n\r\n"
    assert decode_all([stream]) == [ServerSentEvent(None, "a\nb\nc")]


def test_cr_ending_a_chunk_and_lf_opening_the_next_are_one_line_break() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: a\r") == []
    assert decoder.decode(b"") == []
    # Were the LF a second line break, the blank line would dispatch "a" alone.
    assert decoder.decode(b"\ndata: b\r\n\r\n") == [ServerSentEvent(None, "a\nb")]


def test_cr_ending_a_chunk_then_cr_is_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: a\r") == []
    assert decoder.decode(b"\r") == [ServerSentEvent(None, "a")]


def test_event_dispatches_at_its_final_cr_without_waiting_for_more_input() -> None:
    assert SSEDecoder().decode(b"data: a\r\r") == [ServerSentEvent(None, "a")]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"])
def test_unicode_line_separators_do_not_end_lines(separator: str) -> None:
    stream = f"event: a{separator}b\ndata: x{separator}y\n\n".encode()
    assert decode_all([stream]) == [ServerSentEvent(f"a{separator}b", f"x{separator}y")]


def test_line_separator_inside_a_json_string_stays_in_the_data() -> None:
    event = {"type": "response.output_text.delta", "delta": "one\u2028two\u2029three\x85four"}
    [decoded] = decode_all([encode_event(event)])
    assert decoded.json() == event


def test_multibyte_character_split_across_chunks() -> None:
    stream = "data: 😀é\n\n".encode()
    emoji_start = stream.index(b"\xf0")
    chunks = split_at(stream, [emoji_start + 1, emoji_start + 3, emoji_start + 5])
    assert decode_all(chunks) == [ServerSentEvent(None, "😀é")]


def test_invalid_utf8_is_replaced() -> None:
    assert decode_all([b"data: a\xffb\xe2\x82\n\n"]) == [ServerSentEvent(None, "a\ufffdb\ufffd")]


# --- decoding: fields -----------------------------------------------------------------------------------------


def test_comments_are_ignored() -> None:
    stream = b": keep-alive\n:\ndata: a\n: between\ndata: b\n\n"
    assert decode_all([stream]) == [ServerSentEvent(None, "a\nb")]


def test_comment_only_block_dispatches_nothing() -> None:
    assert decode_all([b": ping\n\n: ping\n\n"]) == []


def test_multiple_data_lines_join_with_lf() -> None:
    assert decode_all([b"data: a\ndata:\ndata: c\n\n"]) == [ServerSentEvent(None, "a\n\nc")]


def test_only_one_leading_space_is_stripped() -> None:
    stream = b"data:no-space\ndata:  two\ndata: trailing \n\n"
    assert decode_all([stream]) == [ServerSentEvent(None, "no-space\n two\ntrailing ")]


def test_value_keeps_later_colons() -> None:
    assert decode_all([b'data: {"a": 1}\n\n']) == [ServerSentEvent(None, '{"a": 1}')]


def test_field_without_colon_has_empty_value() -> None:
    assert decode_all([b"data\n\n"]) == [ServerSentEvent(None, "")]
    assert decode_all([b"event: a\nevent\ndata: x\n\n"]) == [ServerSentEvent(None, "x")]


def test_unknown_fields_and_case_variants_are_ignored() -> None:
    assert decode_all([b"foo: bar\nData: x\nEVENT: y\ndata: z\n\n"]) == [ServerSentEvent(None, "z")]


def test_block_without_data_is_not_dispatched_and_resets_the_event_type() -> None:
    stream = b"event: orphan\nid: 1\n\ndata: x\n\n"
    assert decode_all([stream]) == [ServerSentEvent(None, "x", id="1")]


def test_empty_event_field_means_message() -> None:
    assert decode_all([b"event:\ndata: x\n\n"]) == [ServerSentEvent(None, "x")]


def test_last_event_id_persists_across_events() -> None:
    decoder = SSEDecoder()
    stream = b"id: 7\ndata: a\n\ndata: b\n\nid:\ndata: c\n\n"
    assert decode_all([stream], decoder) == [
        ServerSentEvent(None, "a", id="7"),
        ServerSentEvent(None, "b", id="7"),
        ServerSentEvent(None, "c", id=""),
    ]
    assert decoder.last_event_id == ""


def test_id_containing_nul_is_ignored() -> None:
    assert decode_all([b"id: 1\nid: 2\x003\ndata: a\n\n"]) == [ServerSentEvent(None, "a", id="1")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"1500", 1500),
        (b"0", 0),
        (b"007", 7),
        (b"", None),
        (b"15a", None),
        (b"-1", None),
        (b"1.5", None),
        (b" 10", None),  # one space is stripped, the second is not a digit
        ("١٢".encode(), None),  # digits, but not ASCII ones
        (b"1" * 19, None),  # beyond any sensible reconnection delay, and int() caps digits anyway
        (b"1" * 5000, None),
    ],
)
def test_retry_accepts_ascii_digits_only(value: bytes, expected: int | None) -> None:
    decoder = SSEDecoder()
    [event] = decode_all([b"retry: " + value + b"\ndata: x\n\n"], decoder)
    assert event.retry == expected
    assert decoder.retry == expected


def test_retry_belongs_to_its_block_but_the_decoder_remembers_it() -> None:
    decoder = SSEDecoder()
    events = decode_all([b"retry: 10\n\ndata: a\n\nretry: 20\ndata: b\n\n"], decoder)
    assert [event.retry for event in events] == [None, 20]
    assert decoder.retry == 20


def test_leading_bom_is_stripped_once() -> None:
    stream = b"\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\n"
    # The second BOM is part of a field name, "\ufeffdata", which is unknown.
    assert decode_all([stream]) == [ServerSentEvent(None, "a")]


def test_bom_split_across_chunks() -> None:
    assert decode_all([b"\xef", b"\xbb", b"\xbfdata: a\n\n"]) == [ServerSentEvent(None, "a")]


def test_only_a_bom_at_stream_start_is_stripped() -> None:
    assert decode_all([b"data: \xef\xbb\xbfa\n\n"]) == [ServerSentEvent(None, "\ufeffa")]


# --- end of stream --------------------------------------------------------------------------------------------


def test_flush_discards_an_event_without_its_blank_line() -> None:
    # Per the spec, "If the file ends in the middle of an event, before the final empty line, the incomplete event
    # is not dispatched"; a truncated upstream stream must not look like a complete last event.
    decoder = SSEDecoder()
    assert decoder.decode(b"data: a\n\ndata: b\n") == [ServerSentEvent(None, "a")]
    assert decoder.incomplete
    assert decoder.flush() == []
    assert not decoder.incomplete


def test_flush_discards_a_partial_line() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: a\n\ndata: b") == [ServerSentEvent(None, "a")]
    assert decoder.incomplete
    assert decoder.flush() == []


def test_clean_end_is_not_incomplete() -> None:
    decoder = SSEDecoder()
    decoder.decode(b"data: a\n\n: trailing comment\n")
    assert not decoder.incomplete


def test_flush_resets_the_stream_but_keeps_reconnection_state() -> None:
    decoder = SSEDecoder()
    decoder.decode(b"id: 4\nretry: 99\ndata: a\n\nevent: x\ndata: partial\n")
    decoder.flush()
    # A new stream: its BOM is stripped and the old event is gone.
    assert decoder.decode(b"\xef\xbb\xbfdata: b\n\n") == [ServerSentEvent(None, "b", id="4")]
    assert (decoder.last_event_id, decoder.retry) == ("4", 99)


# --- bounded buffer -------------------------------------------------------------------------------------------


def test_line_at_the_limit_is_accepted() -> None:
    assert decode_all([b"data: " + b"x" * 4 + b"\n\n"], SSEDecoder(max_line_size=10)) == [ServerSentEvent(None, "xxxx")]


def test_complete_line_over_the_limit_raises() -> None:
    with pytest.raises(SSEDecodeError, match="10 bytes"):
        SSEDecoder(max_line_size=10).decode(b"data: xxxxx\n\n")


def test_partial_line_over_the_limit_raises_before_its_end_arrives() -> None:
    decoder = SSEDecoder(max_line_size=10)
    decoder.decode(b"data: ")
    decoder.decode(b"xxxx")
    with pytest.raises(SSEDecodeError):
        decoder.decode(b"x")


def test_limit_counts_bytes_not_characters() -> None:
    with pytest.raises(SSEDecodeError):
        SSEDecoder(max_line_size=8).decode("data: é😀\n".encode())


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(SSEDecodeError, ValueError)


def test_max_line_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SSEDecoder(max_line_size=0)


# --- the event object -----------------------------------------------------------------------------------------


def test_server_sent_event_helpers() -> None:
    event = ServerSentEvent("response.created", '{"type":"response.created","n":[1,2]}')
    assert event.json() == {"type": "response.created", "n": [1, 2]}
    assert not event.is_done
    assert ServerSentEvent(data="[DONE]").is_done
    assert ServerSentEvent() == ServerSentEvent(None, "", None, None)
    with pytest.raises(orjson.JSONDecodeError):
        ServerSentEvent(data="[DONE]").json()


# --- properties: tether's own frames --------------------------------------------------------------------------

json_values: st.SearchStrategy[JSON] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(text_chars, max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(text_chars, max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def events(draw: st.DrawFn) -> JSONObject:
    body: dict[str, JSON] = draw(st.dictionaries(st.text(text_chars, max_size=8), json_values, max_size=3))
    body["type"] = draw(st.text(line_chars, min_size=1, max_size=20))
    return body


event_lists = st.lists(events(), max_size=6)


def encode_stream(batch: list[JSONObject], *, done: bool) -> bytes:
    return b"".join(encode_event(event) for event in batch) + (encode_done() if done else b"")


@PROPERTY
@given(batch=event_lists, done=st.booleans())
def test_encode_decode_round_trip(batch: list[JSONObject], done: bool) -> None:
    decoded = decode_all([encode_stream(batch, done=done)])
    if done:
        assert decoded.pop() == ServerSentEvent(None, "[DONE]")
        assert not decoded or not decoded[-1].is_done
    assert [(event.event, event.json(), event.id, event.retry) for event in decoded] == [
        (event["type"], event, None, None) for event in batch
    ]


@PROPERTY
@given(batch=event_lists, data=st.data())
def test_any_chunking_of_encoded_events_decodes_the_same(batch: list[JSONObject], data: st.DataObject) -> None:
    stream = encode_stream(batch, done=True)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    assert decode_all(split_at(stream, cuts)) == decode_all([stream])


@settings(max_examples=40, deadline=None)
@given(batch=event_lists)
def test_byte_by_byte_decoding_matches_one_chunk(batch: list[JSONObject]) -> None:
    stream = encode_stream(batch, done=True)
    assert decode_all(stream[i : i + 1] for i in range(len(stream))) == decode_all([stream])


@settings(max_examples=50, deadline=None)
@given(batch=event_lists)
def test_each_event_dispatches_as_soon_as_its_frame_ends(batch: list[JSONObject]) -> None:
    decoder = SSEDecoder()
    for event in batch:
        [decoded] = decoder.decode(encode_event(event))
        assert decoded.json() == event
    assert not decoder.incomplete


# --- properties: hand-built streams with every line ending ----------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of a hand-built stream: ``text`` as sent, and its meaning as (field, value) or a comment."""

    text: str
    field: str | None  # None for a comment
    value: str


def sent_value(field: str, colon_space: bool, value: str) -> Line:
    if colon_space:
        return Line(f"{field}: {value}", field, value)
    # Without the space after the colon, the value's own leading space (if any) is the one stripped.
    return Line(f"{field}:{value}", field, value[1:] if value.startswith(" ") else value)


field_names = st.sampled_from(["data", "data", "data", "event", "id", "retry", "foo", "Data", "ev ent", "\u2028"])
retry_values = st.text("0123456789", min_size=1, max_size=12) | st.text(line_chars, max_size=5)
line_values = st.text(line_chars, max_size=20)


@st.composite
def lines(draw: st.DrawFn) -> Line:
    kind = draw(st.sampled_from(["field", "field", "field", "bare", "comment"]))
    if kind == "comment":
        return Line(":" + draw(line_values), None, "")
    field = draw(field_names)
    if kind == "bare":
        return Line(field, field, "")
    value = draw(retry_values if field == "retry" else line_values)
    return sent_value(field, draw(st.booleans()), value)


def expected_events(blocks: list[list[Line]]) -> list[ServerSentEvent]:
    """The spec's meaning of complete blocks, computed from their structure rather than by parsing text."""
    events: list[ServerSentEvent] = []
    last_id: str | None = None
    for block in blocks:
        data = [line.value for line in block if line.field == "data"]
        event_type = ""
        retry = None
        for line in block:
            if line.field == "event":
                event_type = line.value
            elif line.field == "id" and "\x00" not in line.value:
                last_id = line.value
            elif line.field == "retry" and re.fullmatch("[0-9]+", line.value):
                retry = int(line.value)
        if data:
            events.append(ServerSentEvent(event_type or None, "\n".join(data), last_id, retry))
    return events


@st.composite
def hand_built_streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    blocks = draw(st.lists(st.lists(lines(), max_size=5), max_size=6))
    # Each block ends with a blank line; a trailing unterminated block is sent but must not be dispatched.
    trailing = draw(st.lists(lines(), max_size=3))
    rendered = [line.text for block in blocks for line in [*block, Line("", None, "")]] + [
        line.text for line in trailing
    ]
    endings = draw(st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=len(rendered), max_size=len(rendered)))
    for i in range(1, len(rendered)):
        # CR followed by a blank line ending in LF would read as one CRLF, swallowing the blank line.
        if endings[i - 1] == "\r" and rendered[i] == "" and endings[i] == "\n":
            endings[i - 1] = "\r\n"
    if trailing and draw(st.booleans()):  # type: ignore[arg-type]  # hypothesis DrawFn stub
        endings[-1] = ""  # the stream ends mid-line
    bom = "\ufeff" if draw(st.booleans()) else ""
    text = bom + "".join(line + eol for line, eol in zip(rendered, endings, strict=True))
    return text.encode(), expected_events(blocks)


@settings(max_examples=300, deadline=None)
@given(stream_and_events=hand_built_streams(), data=st.data())
def test_hand_built_streams_with_mixed_line_endings(
    stream_and_events: tuple[bytes, list[ServerSentEvent]], data: st.DataObject
) -> None:
    stream, expected = stream_and_events
    assert decode_all([stream]) == expected
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    assert decode_all(split_at(stream, cuts)) == expected
