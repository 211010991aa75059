"""The benchmark's agent-API arms: a stateless agent straight to its upstream, or through ``tether edge``.

For each API (``anthropic-messages``, ``chat-completions``, ``responses``) the agent is the official SDK
(``anthropic`` or ``openai``, default retries) playing the task as ``agent_turns`` says: the whole history, ~32 KB
of tool schemas and ~7 KB of system prompt on every request.

- ``direct-<api>``: the agent talks to the upstream across the shaped link: a same-API fake upstream for Messages
  and Chat Completions (``FakeAnthropic``, ``FakeChatCompletions``, paced like the scripted model), ``tether
  serve``'s scripted model for stateless Responses.
- ``edge-<api>``: the agent talks to a ``tether edge`` on loopback; the shaped link is between the edge and
  ``tether serve``, which forwards Messages and Chat untouched to the same fakes and runs Responses itself. The
  gateway is warm: the agent's previous task (same tools and system prompt) ran through an edge on the same journal
  first, unshaped and not counted, as on an agent's machine where the edge outlives a task.
- ``edge-<api>-cold``: the same with a new journal: the edge believes the gateway holds nothing, so the first
  request crosses whole (what a fresh gateway costs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx2 as httpx
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from tether.bench.agent_turns import APIS, AgentAPI, AgentConversation, previous_task, scripts_by_model, with_agent_kit
from tether.bench.arms import ArmResult, TurnMetrics
from tether.bench.workloads import Task
from tether.edge.app import EdgeConfig
from tether.edge.link import LinkOptions
from tether.edge.run import RunningEdge, edge_in_thread, link_url
from tether.netutil import free_port
from tether.protocol.edge_wire import PATH
from tether.providers.fakes import FakeAnthropic, FakeChatCompletions

TIMEOUT_S = 300.0
EDGE_STATS = ("request_bytes", "uplink_bytes", "downlink_bytes", "connects", "drops", "resumes", "heals")


@dataclass(frozen=True, slots=True)
class AgentPlaces:
    """Where the agent arms' servers listen, unshaped: ``tether serve`` and the same-API fake upstreams."""

    gateway: str
    """``http://127.0.0.1:PORT`` of ``tether serve``."""
    upstreams: Mapping[AgentAPI, str]
    """The origin of the fake upstream of ``anthropic-messages`` and ``chat-completions``."""
    workdir: Path


Play = Callable[[], Awaitable[ArmResult]]


@dataclass(frozen=True, slots=True)
class AgentArm:
    api: AgentAPI
    edge: Literal["warm", "cold"] | None = None

    def target(self, places: AgentPlaces) -> str:
        """The origin at the far end of the shaped link."""
        return places.gateway if self.edge or self.api == "responses" else places.upstreams[self.api]

    @contextlib.asynccontextmanager
    async def prepared(self, places: AgentPlaces, shaped: str, task: Task) -> AsyncIterator[Play]:
        """Set the arm up (warm-up, edge start: not timed, not on the shaped link), then yield the task's play.

        ``shaped`` is the origin of the shaped link to :meth:`target`.
        """
        agent_task = with_agent_kit(task)
        if self.edge is None:
            yield lambda: play(self.api, agent_task, shaped)
            return
        journal = places.workdir / f"edge-{uuid.uuid4().hex}.db"
        try:
            if self.edge == "warm":
                async with _edge(places.gateway, journal) as warming:
                    await play(self.api, previous_task(task), warming.base_url)
            async with _edge(shaped, journal) as edge:

                async def measured() -> ArmResult:
                    result = await play(self.api, agent_task, edge.base_url)
                    result.edge = await _stats(edge)
                    return result

                yield measured
        finally:
            for path in places.workdir.glob(f"{journal.name}*"):
                path.unlink(missing_ok=True)


AGENT_ARMS: dict[str, AgentArm] = {
    name: arm
    for api in APIS
    for name, arm in (
        (f"direct-{api}", AgentArm(api)),
        (f"edge-{api}", AgentArm(api, "warm")),
        (f"edge-{api}-cold", AgentArm(api, "cold")),
    )
}


async def play(api: AgentAPI, task: Task, origin: str) -> ArmResult:
    """Play ``task`` with ``api``'s official SDK against ``origin``; each turn's request bytes and timings."""
    conversation = AgentConversation(api, task)
    result = ArmResult()
    async with _sender(api, origin) as send:
        while not conversation.done:
            body = conversation.request()
            started = time.perf_counter()
            stream, ttft = await send(body)
            elapsed = time.perf_counter() - started
            result.turns.append(TurnMetrics(conversation.turn, len(json.dumps(body)), ttft, elapsed))
            conversation.read(stream)
    result.transcript = conversation.transcript
    return result


Send = Callable[[dict[str, Any]], Awaitable[tuple[bytes, float | None]]]


@contextlib.asynccontextmanager
async def _sender(api: AgentAPI, origin: str) -> AsyncIterator[Send]:
    """The SDK's streamed call of ``api`` (its default retries), read as raw SSE bytes."""
    if api == "anthropic-messages":
        async with AsyncAnthropic(base_url=origin, api_key="bench", timeout=TIMEOUT_S) as anthropic:
            yield lambda body: _read(anthropic.messages.with_streaming_response.create(**body))
        return
    async with AsyncOpenAI(base_url=origin + "/v1", api_key="bench", timeout=TIMEOUT_S) as openai:
        if api == "chat-completions":
            yield lambda body: _read(openai.chat.completions.with_streaming_response.create(**body))
        else:
            yield lambda body: _read(openai.responses.with_streaming_response.create(**body))


async def _read(manager: Any) -> tuple[bytes, float | None]:
    """The whole streamed body, and the time to its first delta."""
    started = time.perf_counter()
    ttft: float | None = None
    chunks: list[bytes] = []
    async with manager as response:
        async for chunk in response.iter_bytes():
            if ttft is None and b"delta" in chunk:
                ttft = time.perf_counter() - started
            chunks.append(chunk)
    return b"".join(chunks), ttft


@contextlib.asynccontextmanager
async def _edge(gateway_origin: str, journal: Path) -> AsyncIterator[RunningEdge]:
    """An edge in a thread of its own, started and stopped off this loop (the shaping proxy runs on it)."""
    ws_url, origin = link_url(gateway_origin + "/v1")
    config = EdgeConfig(LinkOptions(ws_url, http_url=origin + PATH), origin, journal=str(journal))
    manager = edge_in_thread(config, port=free_port())
    edge = await asyncio.to_thread(manager.__enter__)
    try:
        yield edge
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


async def _stats(edge: RunningEdge) -> dict[str, Any]:
    """The edge's own counters (``tether edge status``): what the agent sent it, the frames before compression."""
    async with httpx.AsyncClient(timeout=30) as client:
        status = (await client.get(edge.base_url + "/tether/edge/status")).json()
    return {key: status[key] for key in EDGE_STATS}


@contextlib.contextmanager
def agent_upstreams(tasks: Iterable[Task], *, ttft_s: float, tokens_per_second: float) -> Iterator[dict[AgentAPI, str]]:
    """The same-API fake upstreams, each playing every task by its model, paced like the scripted model."""
    chosen = list(tasks)
    with FakeAnthropic() as anthropic, FakeChatCompletions() as chat:
        anthropic.scripts = scripts_by_model("anthropic-messages", chosen)
        chat.scripts = scripts_by_model("chat-completions", chosen)
        for fake in (anthropic, chat):
            fake.latency_s, fake.tokens_per_second = ttft_s, tokens_per_second
        yield {"anthropic-messages": anthropic.base_url, "chat-completions": chat.base_url.removesuffix("/v1")}


def gateway_env(upstreams: Mapping[AgentAPI, str]) -> dict[str, str]:
    """``tether serve``'s settings that route the agents' models to their fake upstreams (the rest: scripted)."""
    providers = {
        "bench-anthropic": {"kind": "anthropic", "base_url": upstreams["anthropic-messages"]},
        "bench-chat": {"kind": "chat-completions", "base_url": upstreams["chat-completions"] + "/v1"},
    }
    routes = [{"model": "claude-bench-*", "provider": "bench-anthropic"},
              {"model": "gpt-bench-*", "provider": "bench-chat"}, {"model": "*", "provider": "scripted"}]  # fmt: skip
    return {"TETHER_PROVIDERS": json.dumps(providers), "TETHER_ROUTES": json.dumps(routes)}
