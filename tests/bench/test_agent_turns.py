"""The stateless agent's turns: everything on every request, the task's steps checked, one kit per agent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tether.bench.agent_turns import (
    SYSTEM_BYTES,
    TOOLS_BYTES,
    AgentConversation,
    model_for,
    previous_task,
    with_agent_kit,
)
from tether.bench.workloads import make_task
from tether.protocol.agent_apis import encode_messages_event


def test_the_kit_is_claude_code_s_size_and_the_same_in_every_task() -> None:
    first, second = (with_agent_kit(make_task(kind, 3)) for kind in ("refactor", "add-feature"))
    assert first.tools == second.tools
    assert first.instructions == second.instructions
    assert abs(len(json.dumps(first.tools)) - TOOLS_BYTES) < 0.15 * TOOLS_BYTES
    assert len(first.instructions) == SYSTEM_BYTES
    previous = previous_task(first)
    assert previous.tools == first.tools
    assert previous.name != first.name
    assert {c.output for s in previous.steps for c in s.calls}.isdisjoint(
        {c.output for s in first.steps for c in s.calls}
    )


def _anthropic_answer(*tool_uses: tuple[str, str]) -> bytes:
    usage = {"input_tokens": 1, "output_tokens": 0}
    message: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
                               "stop_reason": None, "stop_sequence": None, "usage": usage}  # fmt: skip
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    for index, (name, call_id) in enumerate(tool_uses):
        blocks: list[dict[str, Any]] = [
            {"type": "content_block_start", "index": index,
             "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}}},
            {"type": "content_block_delta", "index": index,
             "delta": {"type": "input_json_delta", "partial_json": "{}"}},
            {"type": "content_block_stop", "index": index},
        ]  # fmt: skip
        events += blocks
    events += [{"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 1}}, {"type": "message_stop"}]  # fmt: skip
    return b"".join(encode_messages_event(event) for event in events)


def test_every_request_carries_tools_system_and_the_whole_history() -> None:
    task = with_agent_kit(make_task("refactor", 3, turns=3))
    conversation = AgentConversation("anthropic-messages", task)
    first = conversation.request()
    assert first["model"] == model_for("anthropic-messages", task)
    names = [call.name for call in task.steps[0].calls]
    conversation.read(_anthropic_answer(*((name, f"toolu_{n}") for n, name in enumerate(names))))
    second = conversation.request()
    assert second["tools"] == first["tools"]
    assert second["system"] == first["system"]
    assert second["messages"][:1] == first["messages"]
    results = second["messages"][2]["content"]
    assert [r["content"] for r in results] == [call.output for call in task.steps[0].calls]
    assert conversation.transcript == [f"{name}:{{}}" for name in names]


def test_an_answer_that_is_not_the_step_s_is_an_error() -> None:
    task = with_agent_kit(make_task("refactor", 3, turns=3))
    conversation = AgentConversation("anthropic-messages", task)
    extra = [("grep", f"toolu_{n}") for n in range(len(task.steps[0].calls) + 1)]
    with pytest.raises(RuntimeError, match="expected"):
        conversation.read(_anthropic_answer(*extra))
