"""The typed views of input items: each helper narrows a well-formed item of its type, keeps the same object (so
unknown fields are forwarded), and says ``None`` for anything else."""

from __future__ import annotations

import pytest

from tether.protocol.input_items import (
    as_compaction,
    as_function_call,
    as_function_call_output,
    as_item_reference,
    as_message,
    as_reasoning,
    known_item,
)
from tether.types import Item


def test_a_view_is_the_same_object_with_its_unknown_fields() -> None:
    item: Item = {"type": "function_call_output", "call_id": "c1", "output": "ok", "x_vendor": {"keep": True}}
    view = as_function_call_output(item)
    assert view is not None
    assert view["call_id"] == "c1"
    assert id(view) == id(item)  # the same object, x_vendor and all


@pytest.mark.parametrize(
    "item",
    [
        {"type": "function_call_output", "output": "ok"},
        {"type": "function_call_output", "call_id": 7, "output": "ok"},
        {"type": "function_call_output", "call_id": "c1", "output": 3},
        {"type": "function_call", "call_id": "c1", "output": "ok"},
    ],
)
def test_function_call_output_needs_its_type_and_fields(item: Item) -> None:
    assert as_function_call_output(item) is None


def test_function_call_needs_call_id_name_and_arguments() -> None:
    assert as_function_call({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}) is not None
    assert as_function_call({"type": "function_call", "call_id": "c", "name": "f"}) is None


def test_message_needs_a_known_role_and_content() -> None:
    assert as_message({"type": "message", "role": "user", "content": "hi"}) is not None
    assert as_message({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]})
    assert as_message({"type": "message", "role": "robot", "content": "hi"}) is None
    assert as_message({"type": "message", "role": "user"}) is None


def test_reasoning_compaction_and_reference() -> None:
    assert as_reasoning({"type": "reasoning", "summary": []}) is not None
    assert as_compaction({"type": "compaction", "encrypted_content": "tether:v1:"}) is not None
    assert as_compaction({"type": "compaction"}) is None
    assert as_item_reference({"type": "item_reference", "id": "msg_1"}) is not None
    assert as_item_reference({"type": "item_reference"}) is None


def test_known_item_dispatches_on_type_and_keeps_unknown_types_out() -> None:
    call: Item = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    view = known_item(call)
    assert view is call
    assert view is not None
    assert view["type"] == "function_call"
    assert known_item({"type": "web_search_call", "id": "ws_1"}) is None
    assert known_item({"type": 3}) is None
    assert known_item({"content": "no type, no role"}) is None


def test_a_message_may_leave_its_type_out() -> None:
    easy: Item = {"role": "user", "content": "no type"}
    assert as_message(easy) is not None
    assert known_item(easy) is not None
    assert as_message({"type": "function_call", "role": "user", "content": "x"}) is None
