"""The ways of talking to tether that the benchmark compares, each driven by the official ``openai`` SDK.

- ``stateless-http``: re-send the whole history every turn (``store: false``) over one kept-alive HTTP connection;
- ``http-previous-id``: ``previous_response_id`` + only the new items over HTTP (SSE);
- ``ws``: WebSocket mode, ``previous_response_id`` + only the new items, one socket per task;
- ``ws-deflate``: the same with permessage-deflate negotiated.

The stateful arms use ``tether:inherit_params`` so instructions and tool schemas cross the link once per task;
``ws-protocol-only`` is the WebSocket arm without it (what any Responses server allows), for comparison.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI

from tether.bench.workloads import Task
from tether.client import AsyncSession, RetryPolicy

DELTA_EVENTS = frozenset({"response.output_text.delta", "response.function_call_arguments.delta"})


@dataclass(slots=True)
class TurnMetrics:
    turn: int
    app_bytes_up: int
    ttft_s: float | None
    turn_s: float


@dataclass(slots=True)
class ArmResult:
    turns: list[TurnMetrics] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    reconnects: int = 0
    edge: dict[str, Any] | None = None
    """The edge's own counters for the task (the agent-API arms through ``tether edge``)."""


SendTurn = Callable[[dict[str, Any]], Awaitable[tuple[dict[str, Any], float | None]]]


class TaskDriver:
    """Plays a task's tools: sends each turn through ``send``, answers the model's calls from the workload."""

    def __init__(self, task: Task) -> None:
        self.task = task

    async def play(self, first: Callable[[list[dict[str, Any]]], dict[str, Any]],
                   next_: Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]],
                   send: SendTurn) -> ArmResult:  # fmt: skip
        result = ArmResult()
        new_items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": self.task.prompt}]
        body = first(new_items)
        for index, step in enumerate(self.task.steps):
            started = time.perf_counter()
            response, ttft = await send(body)
            result.turns.append(TurnMetrics(index, len(json.dumps(body)), ttft, time.perf_counter() - started))
            if response.get("status") != "completed":
                raise RuntimeError(f"turn {index} ended {response.get('status')}: {response.get('error')}")
            calls = [item for item in response["output"] if item["type"] == "function_call"]
            result.transcript += [f"{c['name']}:{c['arguments']}" for c in calls] or [_text(response)]
            if len(calls) != len(step.calls):
                raise RuntimeError(f"turn {index}: expected {len(step.calls)} calls, got {len(calls)}")
            new_items = [
                {"type": "function_call_output", "call_id": call["call_id"], "output": planned.output}
                for call, planned in zip(calls, step.calls, strict=True)
            ]
            body = next_(response, new_items)
        return result


def _text(response: dict[str, Any]) -> str:
    return "".join(
        part.get("text", "") for item in response["output"] if item["type"] == "message" for part in item["content"]
    )


def _as_input(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as the stateless arm re-sends it."""
    if item["type"] == "function_call":
        return {k: item[k] for k in ("type", "call_id", "name", "arguments")}
    if item["type"] == "message":
        return {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": _text({"output": [item]})}],
        }
    return item


def _base(task: Task) -> dict[str, Any]:
    return {"model": f"script:{task.name}", "instructions": task.instructions, "tools": task.tools}


async def stateless_http(client: AsyncOpenAI, task: Task) -> ArmResult:
    history: list[dict[str, Any]] = []

    def first(new: list[dict[str, Any]]) -> dict[str, Any]:
        history.extend(new)
        return {**_base(task), "input": list(history), "store": False}

    def next_(response: dict[str, Any], new: list[dict[str, Any]]) -> dict[str, Any]:
        history.extend(_as_input(item) for item in response["output"])
        history.extend(new)
        return {**_base(task), "input": list(history), "store": False}

    return await TaskDriver(task).play(first, next_, lambda body: _http_turn(client, body))


async def http_previous_id(client: AsyncOpenAI, task: Task) -> ArmResult:
    return await TaskDriver(task).play(
        lambda new: {**_base(task), "input": new},
        lambda response, new: _continuation(task, response, new, inherit=True),
        lambda body: _http_turn(client, body),
    )


def _continuation(task: Task, response: dict[str, Any], new: list[dict[str, Any]], *, inherit: bool) -> dict[str, Any]:
    if inherit:
        return {"model": f"script:{task.name}", "previous_response_id": response["id"], "input": new,
                "tether:inherit_params": True}  # fmt: skip
    return {**_base(task), "previous_response_id": response["id"], "input": new}


async def _http_turn(client: AsyncOpenAI, body: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    started = time.perf_counter()
    ttft: float | None = None
    known = {"model", "input", "instructions", "tools", "store", "previous_response_id"}
    extra = {k: v for k, v in body.items() if k not in known}
    stream = await client.responses.create(
        **{k: v for k, v in body.items() if k in known}, stream=True, extra_body=extra or None
    )
    final: dict[str, Any] | None = None
    async for event in stream:
        if ttft is None and event.type in DELTA_EVENTS:
            ttft = time.perf_counter() - started
        if event.type in ("response.completed", "response.failed", "response.incomplete"):
            final = event.response.model_dump(mode="json")
    if final is None:
        raise RuntimeError("the stream ended without a terminal event")
    return final, ttft


async def websocket(client: AsyncOpenAI, task: Task, *, deflate: bool, inherit: bool = True) -> ArmResult:
    options: dict[str, Any] = {"max_size": 64 * 1024 * 1024} if deflate else {}
    if not deflate:
        options["compression"] = None
    async with client.responses.connect(websocket_connection_options=options) as connection:  # type: ignore[arg-type]

        async def send(body: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
            started = time.perf_counter()
            ttft: float | None = None
            await connection.send({"type": "response.create", **body})  # type: ignore[arg-type]  # extensions
            async for event in connection:
                if ttft is None and event.type in DELTA_EVENTS:
                    ttft = time.perf_counter() - started
                if event.type in ("response.completed", "response.failed", "response.incomplete"):
                    return event.response.model_dump(mode="json"), ttft
                if event.type == "error":
                    raise RuntimeError(f"error event: {event.to_dict()}")
            raise RuntimeError("the socket closed before the turn ended")

        return await TaskDriver(task).play(
            lambda new: {**_base(task), "input": new},
            lambda response, new: _continuation(task, response, new, inherit=inherit),
            send,
        )


async def tether_client(base_url: str, task: Task) -> ArmResult:
    """tether's own client SDK: resumes cut streams, replays by idempotency key, falls back to HTTP when needed."""
    result = ArmResult()
    retry = RetryPolicy(max_attempts=1000, max_elapsed_s=600.0)  # ride out outages: bounded by time, not tries
    async with AsyncSession(base_url, model=f"script:{task.name}", tools=task.tools, instructions=task.instructions,
                            retry=retry) as session:  # fmt: skip
        items: Any = task.prompt
        for index, step in enumerate(task.steps):
            sent_before = session.stats.bytes_sent
            started = time.perf_counter()
            ttft: float | None = None
            turn = session.stream(items)
            async for _delta in turn:
                if ttft is None:
                    ttft = time.perf_counter() - started
            outcome = turn.result
            result.turns.append(TurnMetrics(index, session.stats.bytes_sent - sent_before, ttft,
                                            time.perf_counter() - started))  # fmt: skip
            calls = outcome.function_calls
            result.transcript += [f"{c.name}:{c.arguments}" for c in calls] or [outcome.text]
            if len(calls) != len(step.calls):
                raise RuntimeError(f"turn {index}: expected {len(step.calls)} calls, got {len(calls)}")
            items = [call.output(planned.output) for call, planned in zip(calls, step.calls, strict=True)]
        result.reconnects = session.stats.reconnects
    return result


def _with_sdk(arm: Callable[[AsyncOpenAI, Task], Awaitable[ArmResult]]) -> Arm:
    async def run(base_url: str, task: Task) -> ArmResult:
        # The SDK's own retries (2, with backoff) for failed requests; it does not retry a stream cut midway.
        async with AsyncOpenAI(base_url=base_url, api_key="bench", timeout=300.0, max_retries=2) as client:
            return await arm(client, task)

    return run


Arm = Callable[[str, Task], Awaitable[ArmResult]]

ARMS: dict[str, Arm] = {
    "stateless-http": _with_sdk(stateless_http),
    "http-previous-id": _with_sdk(http_previous_id),
    "ws": _with_sdk(lambda client, task: websocket(client, task, deflate=False)),
    "ws-deflate": _with_sdk(lambda client, task: websocket(client, task, deflate=True)),
    "ws-protocol-only": _with_sdk(lambda client, task: websocket(client, task, deflate=False, inherit=False)),
    "tether-client": tether_client,
}
