"""Counting JSON values without decoding: the exact count is a decode's, the cheap bound is never below it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import json_values
from tether.protocol.json_values import MAX_FOUND_CHARS, MAX_KEY_CANDIDATES, serve, survey, values_upper_bound

# Strings with what makes counting hard: quotes, backslashes (escaped and escaping), brackets and commas, whitespace,
# control characters (escaped by every writer), non-ASCII.
TRICKY_TEXT = st.text(st.sampled_from('a"\\,{}[]: \t\n\r\x00\x1féü\u2028😀'), max_size=12) | st.text(max_size=8)
NUMBERS = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.none() | st.booleans() | NUMBERS | TRICKY_TEXT
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TRICKY_TEXT, children, max_size=5),
    max_leaves=40,
)


def walked(value: Any) -> int:
    """Every object, array, string, number and literal of a decoded value; keys are not values."""
    if isinstance(value, dict):
        return 1 + sum(walked(child) for child in value.values())
    if isinstance(value, list):
        return 1 + sum(walked(child) for child in value)
    return 1


def spellings(value: Any) -> list[bytes]:
    """The same value as different writers put it: compact, spaced, indented, ASCII-escaped."""
    return [
        orjson.dumps(value),
        json.dumps(value).encode(),
        json.dumps(value, indent=2, ensure_ascii=False).encode(),
        json.dumps(value, separators=(" , ", " : ")).encode(),
        b" \r\n\t" + orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n",
    ]


@settings(max_examples=400, deadline=None)
@given(VALUES, st.integers(min_value=1, max_value=9))
def test_the_count_is_a_walk_of_the_decoded_value_however_written_and_chunked(value: Any, chunk: int) -> None:
    for raw in spellings(value):
        count, _ = survey(raw, chunk_bytes=chunk)
        assert count == walked(orjson.loads(raw)), raw
        assert count == survey(raw)[0]


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_the_upper_bound_is_never_below_the_count(value: Any) -> None:
    for raw in spellings(value):
        exact = walked(orjson.loads(raw))
        assert values_upper_bound(raw) >= exact
        assert values_upper_bound(raw.decode()) >= exact


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["type", "stream_id", "input", "x"]),
        VALUES | st.sampled_from(["lane-1", "a.b_c", 'q"uote', "back\\slash"]),
        max_size=4,
    ),
    st.integers(min_value=1, max_value=9),
)
def test_the_top_level_string_is_the_one_a_decode_finds(body: dict[str, Any], chunk: int) -> None:
    decoded = body.get("stream_id")
    expected = decoded if isinstance(decoded, str) else None
    for raw in spellings(body):
        assert survey(raw, chunk_bytes=chunk)[1] == expected, raw


def test_nested_and_quoted_keys_are_not_the_top_level_one() -> None:
    raw = (
        b'{"input": [{"stream_id": "inner"}], "note": "\\"stream_id\\": \\"quoted\\"", '
        b'"x": {"stream_id": "nested"}, "text": "stream_id"}'
    )
    assert survey(raw) == (walked(orjson.loads(raw)), None)
    assert survey(b'["stream_id", {"stream_id": "in an array"}]')[1] is None


def test_the_last_of_duplicate_keys_wins_as_in_orjson() -> None:
    for raw in (b'{"stream_id": "a", "stream_id": "b"}', b'{"stream_id": 1, "stream_id": "b"}'):
        assert survey(raw)[1] == orjson.loads(raw)["stream_id"] == "b"
    assert survey(b'{"stream_id": "a", "stream_id": null}')[1] is None


def test_escaped_long_and_repeated_values_are_read_or_left_alone() -> None:
    assert survey(b'{"stream_id": "l\\u0061ne"}')[1] == "lane"
    assert survey(orjson.dumps({"stream_id": "x" * MAX_FOUND_CHARS}))[1] == "x" * MAX_FOUND_CHARS
    assert survey(orjson.dumps({"stream_id": "x" * (MAX_FOUND_CHARS + 1)}))[1] is None
    many = orjson.dumps({"stream_id": "lane", "input": [{"stream_id": "n"}] * MAX_KEY_CANDIDATES})
    assert survey(many) == (walked(orjson.loads(many)), None)  # counted all the same


@pytest.mark.parametrize(
    ("raw", "values"),
    [(b"0", 1), (b"[]", 1), (b"{}", 1), (b'""', 1), (b"[[]]", 2), (b'[""]', 2), (b'{"a":{}}', 2), (b"[ 1 , [ ] ]", 3)],
)
def test_small_texts(raw: bytes, values: int) -> None:
    assert survey(raw)[0] == values
    assert values_upper_bound(raw) >= values


def test_the_bound_of_strings_full_of_commas_is_high_and_the_count_is_not() -> None:
    raw = orjson.dumps(
        {"model": "m", "input": [{"type": "message", "role": "user", "content": "f(a, b[0], {c});" * 999}]}
    )
    assert values_upper_bound(raw) > 3 * 999
    assert survey(raw)[0] == 7


def framed(text: bytes, limit: int, pieces: int = 2, key: bytes = b"stream_id") -> bytes:
    """A text as the worker reads it: the limit, the key after its length, the text in ``pieces`` chunks, each after
    its length, then 0."""

    def number(value: int) -> bytes:
        return value.to_bytes(json_values.WORKER_HEADER_BYTES, "big")

    step = max(1, len(text) // pieces)
    chunks = [text[begin : begin + step] for begin in range(0, len(text), step)]
    head = number(limit) + number(len(key)) + key
    return head + b"".join(number(len(chunk)) + chunk for chunk in chunks) + number(0)


def test_the_worker_loop_answers_each_text_in_order() -> None:
    texts = [b'{"stream_id": "s", "input": [1, 2]}', b"[{}, {}]", b"", b'{"stream_id": "line\\nbreak"}']
    source = io.BytesIO(b"".join(framed(text, 1, pieces) for pieces, text in enumerate(texts, 1)))
    sink = io.BytesIO()
    serve(source, sink)
    assert sink.getvalue().splitlines() == [b'5 "s"', b"3 null", b"0 null", b'2 "line\\nbreak"']


def test_the_worker_finds_the_key_it_is_asked_for() -> None:
    text = b'{"type": "tether:edge.turn", "turn": "t-1", "patch": ["v", {"stream_id": "s", "turn": "inner"}]}'
    source = io.BytesIO(framed(text, 1, key=b"turn") + framed(text, 1))
    sink = io.BytesIO()
    serve(source, sink)
    assert sink.getvalue().splitlines() == [b'8 "t-1"', b"8 null"]


def test_the_worker_counts_exactly_only_over_the_cheap_bound() -> None:
    text = orjson.dumps({"stream_id": "s", "input": "[1, 2, 3]"})
    source = io.BytesIO(framed(text, 100) + framed(text, 6) + framed(text, 5))
    sink = io.BytesIO()
    serve(source, sink)
    # Within the limit by the bound (6): the bound, unread; over the bound: the exact count (3), and the lane.
    assert sink.getvalue().splitlines() == [b"6 null", b"6 null", b'3 "s"']


def test_the_worker_script_imports_nothing_of_tether() -> None:
    ran = subprocess.run(
        [sys.executable, "-P", "-X", "importtime", json_values.__file__],
        input=framed(b"[1, 2]", 1),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert ran.stdout == b"3 null\n"
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in ran.stderr.decode().splitlines()}
    assert "orjson" in imported
    assert not imported & {"tether", "pydantic", "starlette", "structlog"}
