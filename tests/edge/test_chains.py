"""Chain finding by content: the base is the request sharing the longest message prefix, whatever moved in it."""

from __future__ import annotations

from typing import Any

from tether.edge.chains import ChainBook, message_keys
from tether.protocol.delta import MISSING, apply, dumps

SYSTEM = [{"type": "text", "text": "system prompt " * 500}]
NOTHING: dict[str, Any] = {}
TOOLS = [{"name": f"tool{n}", "description": "describe " * 300, "input_schema": {"type": "object"}} for n in range(6)]


def request(messages: list[Any]) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 1024, "system": SYSTEM, "tools": TOOLS, "messages": messages}


def user(text: str, cached: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if cached:
        block["cache_control"] = {"type": "ephemeral"}
    return {"role": "user", "content": [block]}


def test_moved_breakpoints_and_string_forms_compare_equal() -> None:
    assert message_keys("anthropic-messages", request([user("hi", cached=True)])) == message_keys(
        "anthropic-messages", request([{"role": "user", "content": "hi"}])
    )


def test_two_agents_keep_separate_chains() -> None:
    book = ChainBook()
    first_a = request([user("agent A: " + "a" * 400, cached=True)])
    first_b = request([user("agent B: " + "b" * 400, cached=True)])
    book.accepted("anthropic-messages", "/v1/messages", first_a)
    book.accepted("anthropic-messages", "/v1/messages", first_b)
    next_a = request([user("agent A: " + "a" * 400), {"role": "assistant", "content": "ok"}, user("go", cached=True)])
    delta = book.delta("anthropic-messages", "/v1/messages", next_a)
    assert delta.base == book.delta("anthropic-messages", "/v1/messages", first_a).digest
    assert delta.shared == 1
    wire = dumps(delta.patch)
    assert b"aaaa" not in wire
    assert b"describe" not in wire
    assert dumps(apply(first_a, delta.patch, NOTHING.__getitem__)) == dumps(next_a)


def test_a_new_task_refers_to_the_tools_and_system_already_held() -> None:
    book = ChainBook()
    book.accepted("anthropic-messages", "/v1/messages", request([user("first task")]))
    delta = book.delta("anthropic-messages", "/v1/messages", request([user("an unrelated task")]))
    assert delta.shared == 0
    assert len(dumps(delta.patch)) < 300


def test_a_heal_is_the_whole_request_without_references() -> None:
    book = ChainBook()
    book.accepted("chat-completions", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 999}]})
    whole = book.whole({"messages": [{"role": "user", "content": "x" * 999}]})
    assert whole.base is None
    assert apply(MISSING, whole.patch, NOTHING.__getitem__) == {"messages": [{"role": "user", "content": "x" * 999}]}
