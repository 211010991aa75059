"""The JSON nesting limit: exactly MAX_JSON_DEPTH levels pass, one more is refused where it is parsed."""

from __future__ import annotations

import pytest

from tether.protocol.errors import ProtocolError
from tether.protocol.json_depth import MAX_JSON_DEPTH, too_deep
from tether.protocol.request import decode_json_object


def nested_object_text(depth: int) -> str:
    """A JSON object ``depth`` levels deep (the object itself is level 1)."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return '{"model":"m","x":' + inner + "}" if depth > 1 else '{"model":"m"}'


@pytest.mark.parametrize("depth", [1, 2, 64, MAX_JSON_DEPTH])
def test_up_to_the_limit_is_accepted(depth: int) -> None:
    body = decode_json_object(nested_object_text(depth))
    assert body["model"] == "m"
    assert not too_deep(body)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 254, 255, 1023])
def test_beyond_the_limit_is_a_400_at_parse_time(depth: int) -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_json_object(nested_object_text(depth))
    assert raised.value.status == 400
    assert raised.value.code == "json_too_deep"
    assert str(MAX_JSON_DEPTH) in raised.value.message


def test_objects_and_arrays_count_alike() -> None:
    value: object = 0
    for level in range(MAX_JSON_DEPTH):
        value = {"a": value} if level % 2 else [value]
    assert not too_deep(value)
    assert too_deep([value])
    assert too_deep(value, limit=MAX_JSON_DEPTH - 1)
