import pytest

from tether.engine.context import Context
from tether.protocol.items import fingerprint
from tether.types import Item


def message(text: str) -> Item:
    return {"type": "message", "role": "user", "content": text}


def extend(context: Context, *items: Item) -> Context:
    return context.extend(list(items), [fingerprint(item) for item in items])


def test_extend_at_tip_shares_the_buffer_and_keeps_parents_intact() -> None:
    root = extend(Context(), message("a"))
    child = extend(root, message("b"))
    grandchild = extend(child, message("c"))
    assert [item["content"] for item in root.items] == ["a"]
    assert [item["content"] for item in child.items] == ["a", "b"]
    assert [item["content"] for item in grandchild.items] == ["a", "b", "c"]
    assert root._buffer is grandchild._buffer


def test_fork_from_a_non_tip_context_copies_and_leaves_the_other_branch_alone() -> None:
    root = extend(Context(), message("a"))
    left = extend(root, message("left"))
    right = extend(root, message("right"))
    assert [item["content"] for item in left.items] == ["a", "left"]
    assert [item["content"] for item in right.items] == ["a", "right"]
    assert left._buffer is not right._buffer


def test_tokens_are_cumulative_and_match_fingerprints() -> None:
    items = [message("x" * 100), message("y" * 10)]
    context = extend(Context(), *items)
    assert context.tokens == sum(fingerprint(item).tokens for item in items)
    assert extend(context).tokens == context.tokens
    assert Context().tokens == 0


def test_function_call_index_respects_the_view_length() -> None:
    call: Item = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    before = extend(Context(), message("a"))
    after = extend(before, call)
    assert after.has_function_call("call_1")
    assert not before.has_function_call("call_1")
    sibling = extend(before, message("no call"))
    assert not sibling.has_function_call("call_1")


def test_items_view_indexes_like_a_list_without_copying() -> None:
    context = extend(Context(), message("a"), message("b"), message("c"))
    view = context.items
    assert len(view) == 3
    assert view[-1]["content"] == "c"
    assert [item["content"] for item in view[1:]] == ["b", "c"]
    assert list(view) == list(context.items)
    shorter = Context(context._buffer, 2).items
    assert len(shorter) == 2
    with pytest.raises(IndexError):
        shorter[2]


def test_from_items_rebuilds_hashes_in_order() -> None:
    items = [message("a"), message("b")]
    context = Context.from_items(items)
    assert context.hashes() == [fingerprint(item).digest for item in items]
