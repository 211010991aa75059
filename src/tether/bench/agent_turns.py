"""What a stateless agent of each API sends every turn and how it reads the answer (sans-I/O).

Claude Code (Anthropic Messages), Chat Completions tools and a stateless Responses client all send the whole
history, the tool schemas and the system prompt on every request of a tool loop. ``AgentConversation`` builds
those requests for a benchmark task and reads each answer's stream bytes; the caller does the I/O (raw HTTP in
``edge_upload``, the official SDKs in ``agent_arms``). The tool schemas and the system prompt are made the size
Claude Code and Codex send (``claude_code_sized``, ``with_agent_kit``).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable
from functools import cache
from typing import Any, Literal, TypeAlias

import orjson

from tether.bench.workloads import TOOLS, Step, Task, instructions, make_task
from tether.protocol.agent_apis import ChatStreamChecker, MessagesStreamChecker
from tether.protocol.sse import SSEDecoder
from tether.providers.fakes.base import as_script
from tether.providers.scripted import Script

AgentAPI: TypeAlias = Literal["anthropic-messages", "chat-completions", "responses"]
APIS: tuple[AgentAPI, ...] = ("anthropic-messages", "chat-completions", "responses")
PATHS: dict[AgentAPI, str] = {
    "anthropic-messages": "/v1/messages",
    "chat-completions": "/v1/chat/completions",
    "responses": "/v1/responses",
}
TOOLS_BYTES = 32_000
SYSTEM_BYTES = 7_000


def claude_code_sized(task: Task) -> Task:
    """The task with tool schemas of about 32 KB and a system prompt of about 7 KB, as Claude Code sends."""
    per_tool = TOOLS_BYTES // len(task.tools)
    tools = []
    for tool in task.tools:
        description = (tool["description"] + " ") * (per_tool // (len(tool["description"]) + 1) + 1)
        tools.append({**tool, "description": description[:per_tool]})
    instructions = (task.instructions * (SYSTEM_BYTES // max(1, len(task.instructions)) + 1))[:SYSTEM_BYTES]
    return Task(task.name, instructions, tools, task.prompt, task.steps)


@cache
def _kit() -> Task:
    """An agent's tools and system prompt at Claude Code's and Codex's sizes, in prose and examples as long tool
    descriptions are (not one sentence repeated, which would compress far better than a real schema)."""
    rng = random.Random("agent-kit")
    per_tool = TOOLS_BYTES // len(TOOLS)
    tools = []
    for tool in TOOLS:
        usage = instructions(rng, per_tool - len(tool["description"]) - 2)
        tools.append({**tool, "description": f"{tool['description']}\n\n{usage}"})
    return Task("agent-kit", instructions(rng, SYSTEM_BYTES), tools, "", ())


def with_agent_kit(task: Task) -> Task:
    """The task as one agent plays it: the same ~32 KB of tool schemas and ~7 KB of system prompt in every task
    (an agent's tools and prompt do not change between tasks), the task's own prompt and steps."""
    kit = _kit()
    return dataclasses.replace(task, instructions=kit.instructions, tools=kit.tools)


def previous_task(task: Task) -> Task:
    """The agent's task before ``task`` (a short one of its own content, with the same kit): what warms a gateway."""
    seed = 1_000 + sum(task.name.encode()) % 1_000
    return with_agent_kit(dataclasses.replace(make_task("add-feature", seed, turns=2), name=f"{task.name}-previous"))


def model_for(api: AgentAPI, task: Task) -> str:
    """The model an agent asks for: the fakes and the scripted model pick the task's script by it."""
    return {"anthropic-messages": "claude-bench-", "chat-completions": "gpt-bench-", "responses": "script:"}[api] + (
        task.name
    )


def scripts_by_model(api: AgentAPI, tasks: Iterable[Task]) -> dict[str, Script]:
    """Each task's steps as the script a fake upstream plays for the model its agent asks for (``scripts``)."""
    return {model_for(api, task): as_script(task.script()) for task in tasks}


class AgentConversation:
    """One task played as an agent of ``api``: ``request()`` for the next turn, ``read(stream bytes)`` after it."""

    def __init__(self, api: AgentAPI, task: Task, model: str | None = None) -> None:
        self.api = api
        self.task = task
        self.model = model or model_for(api, task)
        self.tools = _tools(api, task)
        self.history: list[Any] = [{"role": "user", "content": task.prompt}]
        self.turn = 0
        self.done = False
        self.transcript: list[str] = []

    @property
    def path(self) -> str:
        return PATHS[self.api]

    def request(self) -> dict[str, Any]:
        """The body of the next turn's request: everything, every time."""
        task = self.task
        if self.api == "anthropic-messages":
            return {"model": self.model, "max_tokens": 32000, "stream": True, "tools": self.tools,
                    "system": [{"type": "text", "text": task.instructions}],
                    "messages": list(self.history)}  # fmt: skip
        if self.api == "chat-completions":
            return {"model": self.model, "stream": True, "tools": self.tools,
                    "messages": [{"role": "system", "content": task.instructions}, *self.history]}  # fmt: skip
        return {"model": self.model, "stream": True, "tools": self.tools, "instructions": task.instructions,
                "input": list(self.history), "store": False}  # fmt: skip

    def read(self, stream: bytes) -> None:
        """Take the turn's answer (its SSE bytes) into the history; answer its tool calls from the task's step.

        Raises:
            RuntimeError: the answer is not the step's (another number of calls).
            ProtocolError: the stream breaks its API's rules.
        """
        step = self.task.steps[self.turn]
        if self.api == "anthropic-messages":
            checker = MessagesStreamChecker()
            checker.feed(stream)
            message = checker.close()
            self.history.append({"role": "assistant", "content": message["content"]})
            calls = [(b["name"], b["input"], b["id"]) for b in message["content"] if b["type"] == "tool_use"]
            text = "".join(b.get("text", "") for b in message["content"] if b["type"] == "text")
            if calls:
                self.history.append({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": call_id, "content": _output(step, n)}
                    for n, (_, _, call_id) in enumerate(calls)]})  # fmt: skip
        elif self.api == "chat-completions":
            chat = ChatStreamChecker()
            chat.feed(stream)
            message = chat.close()["message"]
            self.history.append(message)
            tool_calls = message.get("tool_calls") or []
            calls = [(c["function"]["name"], c["function"]["arguments"], c["id"]) for c in tool_calls]
            text = message.get("content") or ""
            self.history += [{"role": "tool", "tool_call_id": call_id, "content": _output(step, n)}
                             for n, (_, _, call_id) in enumerate(calls)]  # fmt: skip
        else:
            events = [orjson.loads(e.data) for e in SSEDecoder().decode(stream) if e.data != "[DONE]"]
            final = events[-1].get("response") if events else None
            if not isinstance(final, dict) or final.get("status") != "completed":
                raise RuntimeError(f"turn {self.turn}: the stream ended without a completed response")
            output = final["output"]
            self.history += output
            calls = [(i["name"], i["arguments"], i["call_id"]) for i in output if i["type"] == "function_call"]
            text = "".join(p.get("text", "") for i in output if i["type"] == "message" for p in i["content"])
            self.history += [{"type": "function_call_output", "call_id": call_id, "output": _output(step, n)}
                             for n, (_, _, call_id) in enumerate(calls)]  # fmt: skip
        if len(calls) != len(step.calls):
            raise RuntimeError(f"turn {self.turn}: expected {len(step.calls)} calls, got {len(calls)}")
        self.transcript += [f"{name}:{_arguments(arguments)}" for name, arguments, _ in calls] or [text]
        self.turn += 1
        self.done = not step.calls or self.turn == len(self.task.steps)


def _arguments(arguments: Any) -> str:
    """Call arguments in one form for every API (Anthropic gives an object, the OpenAI APIs a JSON string)."""
    value = json.loads(arguments) if isinstance(arguments, str) else arguments
    return json.dumps(value, sort_keys=True)


def _output(step: Step, index: int) -> str:
    """The tool output the agent answers the ``index``-th call of a step with (the step's own, cycled)."""
    outputs = [call.output for call in step.calls] or ["ok"]
    return str(outputs[index % len(outputs)])


def _tools(api: AgentAPI, task: Task) -> list[Any]:
    if api == "anthropic-messages":
        return [
            {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in task.tools
        ]
    if api == "chat-completions":
        return [{"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters")}}
                for t in task.tools]  # fmt: skip
    return list(task.tools)
