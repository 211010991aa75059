"""The structural delta: apply(base, diff(base, new)) rebuilds new byte for byte, whatever the two values are."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.delta import (
    MISSING,
    DeltaError,
    apply,
    content_hash,
    diff,
    dumps,
    large_values,
    limit_passed,
    references,
    shallow,
)
from tether.protocol.json_values import survey

scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=6),
    max_leaves=40,
)


NOTHING: dict[str, Any] = {}


def holding(*values: Any, min_bytes: int = 16) -> dict[str, Any]:
    return {digest: value for base in values for digest, value, _ in large_values(base, min_bytes)}


def rebuilt(base: Any, new: Any, known: dict[str, Any], min_bytes: int = 16) -> Any:
    node = orjson.loads(dumps(diff(base, new, known, min_ref_bytes=min_bytes)))  # it crosses the wire as JSON
    return apply(base, node, known.__getitem__)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_apply_of_diff_rebuilds_the_new_value_exactly(base: Any, new: Any) -> None:
    assert dumps(rebuilt(base, new, {})) == dumps(new)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values, json_values)
def test_references_to_held_content_rebuild_exactly(base: Any, new: Any, other: Any) -> None:
    assert dumps(rebuilt(base, new, holding(base, other))) == dumps(new)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_a_value_without_a_base_rebuilds_exactly(new: Any) -> None:
    assert dumps(rebuilt(MISSING, new, holding(new))) == dumps(new)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=8), st.lists(json_values, max_size=4), st.data())
def test_edited_message_lists_rebuild_exactly(messages: list[Any], added: list[Any], data: st.DataObject) -> None:
    edited = list(messages)
    if edited:
        index = data.draw(st.integers(0, len(edited) - 1))
        edited[index] = data.draw(json_values)
    assert dumps(rebuilt({"messages": messages}, {"messages": edited + added}, {})) == dumps(
        {"messages": edited + added}
    )


def test_one_and_true_are_different_values() -> None:
    assert dumps(rebuilt([1, {"a": 1}], [True, {"a": True}], {})) == b'[true,{"a":true}]'


def test_a_new_value_built_from_references_replaces_its_base() -> None:
    base = {"": [1e13]}
    new = {"0": 1e13}
    assert dumps(rebuilt(base, new, holding(base))) == dumps(new)


def test_key_order_is_kept() -> None:
    assert dumps(rebuilt({"a": 1, "b": 2}, {"b": 2, "a": 1}, {})) == b'{"b":2,"a":1}'


def claude_request(messages: list[Any]) -> dict[str, Any]:
    tools = [{"name": f"tool{n}", "description": "d" * 2000, "input_schema": {"type": "object"}} for n in range(12)]
    return {
        "model": "claude",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "s" * 7000}],
        "tools": tools,
        "messages": messages,
        "stream": True,
    }


def test_a_continuation_sends_only_the_new_content_and_the_moved_breakpoint() -> None:
    env = {"role": "user", "content": "environment " * 50}
    first = claude_request(
        [
            env,
            {
                "role": "user",
                "content": [{"type": "text", "text": "fix the bug " * 40, "cache_control": {"type": "ephemeral"}}],
            },
        ]
    )
    second = claude_request(
        [
            {"role": "user", "content": [{"type": "text", "text": "environment " * 50}]},
            {"role": "user", "content": [{"type": "text", "text": "fix the bug " * 40}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "tool1", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "ok",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ]
    )
    node = diff(first, second, holding(first, min_bytes=256))
    wire = dumps(node)
    assert dumps(apply(first, orjson.loads(wire), holding(first, min_bytes=256).__getitem__)) == dumps(second)
    assert b"ddddd" not in wire
    assert b"sssss" not in wire
    assert b"fix the bug fix" not in wire
    assert b"environment environment" not in wire
    assert b"tool_result" in wire


def test_a_new_chain_refers_to_the_tools_and_system_of_another() -> None:
    previous = claude_request([{"role": "user", "content": "first task"}])
    fresh = claude_request([{"role": "user", "content": "second task"}])
    wire = dumps(diff(MISSING, fresh, holding(previous, min_bytes=256)))
    assert len(wire) < 600
    assert dumps(apply(MISSING, orjson.loads(wire), holding(previous, min_bytes=256).__getitem__)) == dumps(fresh)


def test_a_reference_the_gateway_lacks_is_reported() -> None:
    with pytest.raises(DeltaError) as caught:
        apply(MISSING, ["o", {"a": ["r", "abc"], "b": ["r", "def"]}, None], NOTHING.__getitem__)
    assert caught.value.missing == ("abc", "def")


@pytest.mark.parametrize(
    "node",
    [
        "x",
        [],
        [1],
        ["?"],
        ["v"],
        ["r", 1],
        ["o", [], None],
        ["o", {}, [1]],
        ["o", {}, ["absent"]],
        ["a", {}],
        ["a", [["c", 0, 1]]],
        ["a", [["p", 0, ["v", 1]]]],
        ["a", [["c", -1, 0]]],
        ["a", [["c", True, 0]]],
        ["a", [[]]],
        ["a", [["x"]]],
        ["="],
    ],
)
def test_malformed_deltas_are_refused(node: Any) -> None:
    with pytest.raises(DeltaError):
        apply(MISSING, node, NOTHING.__getitem__)


def test_deeply_nested_deltas_are_refused() -> None:
    node: Any = ["v", 1]
    for _ in range(200):
        node = ["a", [["n", node]]]
    with pytest.raises(DeltaError):
        apply(MISSING, node, NOTHING.__getitem__)


@settings(max_examples=200)
@given(json_values)
def test_the_limits_passed_are_the_serialised_values(value: Any) -> None:
    size, values, depth = len(dumps(value)), survey(dumps(value))[0], json_depth(value)
    assert limit_passed(value, max_bytes=size, max_values=values, max_depth=depth) is None
    assert limit_passed(value, max_bytes=1 << 30, max_values=values - 1, max_depth=depth) == "values"
    if depth > 0:
        assert limit_passed(value, max_bytes=1 << 30, max_values=values, max_depth=depth - 1) == "depth"


def json_depth(value: Any) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((json_depth(child) for child in children), default=0)
    return 0


def test_the_size_is_counted_in_utf8_bytes_not_characters() -> None:
    """The limit is max_body_bytes: a request of 3,000 'é' (6,000 bytes) is over 4,096, as over HTTP."""
    request = {"model": "m", "input": "\u00e9" * 3000, "\u00e9" * 1000: 1}
    assert len(dumps(request)) > 8000
    assert limit_passed(request, max_bytes=8000, max_values=1 << 30, max_depth=128) == "bytes"
    assert limit_passed(request, max_bytes=len(dumps(request)), max_values=1 << 30, max_depth=128) is None


def test_a_shared_subtree_is_counted_each_time_and_walked_once() -> None:
    blob = [{"k": "v" * 100}] * 1000  # one object a thousand times
    shared = [blob] * 1000  # serialised, about 100 MB
    assert limit_passed(shared, max_bytes=16 << 20, max_values=1 << 30, max_depth=128) == "bytes"
    assert limit_passed(shared, max_bytes=1 << 40, max_values=100_000, max_depth=128) == "values"
    deep: Any = []
    for _ in range(999):
        deep = [deep, deep]  # 2**999 paths, 1,000 levels
    assert limit_passed(deep, max_bytes=1 << 40, max_values=1 << 40, max_depth=128) == "depth"


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_a_value_stored_shallow_rebuilds_exactly_from_its_stored_parts(value: Any) -> None:
    stored = {digest: orjson.loads(dumps(shallow(part, 16))) for digest, part, _ in large_values(value, 16)}
    stored[content_hash(dumps(value))] = orjson.loads(dumps(shallow(value, 16)))

    def resolve(digest: str) -> Any:
        return apply(MISSING, stored[digest], resolve)

    assert dumps(resolve(content_hash(dumps(value)))) == dumps(value)
    for node in stored.values():  # each stored part names only its direct large children
        assert set(references(node)) <= set(stored)


def test_references_are_found_wherever_a_delta_names_them() -> None:
    node = ["o", {"a": ["r", "h1"], "b": ["a", [["c", 0, 1], ["n", ["r", "h2"]], ["p", 0, ["f", {"x": ["r", "h3"]}]]]]},
            None]  # fmt: skip
    assert sorted(references(node)) == ["h1", "h2", "h3"]
    assert references(["v", ["r", "not-a-reference"]]) == []
