"""The peer benchmark's client side: tool-loop chains over WebSocket and HTTP/SSE, the direct path, idle sockets.

A chain's first turn sends a user message; every later turn answers the previous turn's ``read_file`` call with
one ``function_call_output`` and ``previous_response_id`` (through a gateway), or resends the whole context (the
direct path, as a gateway in front of a stateless upstream does). Every loop is bounded by its turn count and
every wait by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tether.bench.procstat import process_cpu_ns
from tether.protocol.sse import SSEDecoder

TURN_TIMEOUT_S = 60.0
READ_FILE = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file of the repository.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


def tool_output(turn: int, size: int = 1024) -> str:
    line = f"# turn {turn}: def handler_{turn}(request):  return compute(request.payload, retries=3)\n"
    return (line * (size // len(line) + 1))[:size]


class TurnFailedError(RuntimeError):
    """A turn ended in anything but ``response.completed``."""


@dataclass(slots=True)
class Chain:
    """One conversation's state, as the client sees it."""

    model: str
    store: bool
    turn: int = 0
    previous: dict[str, Any] | None = None
    context: list[Any] = field(default_factory=list)

    def next_input(self) -> list[Any]:
        if self.previous is None:
            return [{"type": "message", "role": "user", "content": "Read every module, one by one."}]
        call = self.previous["output"][-1]
        return [{"type": "function_call_output", "call_id": call["call_id"], "output": tool_output(self.turn)}]

    def delta_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "tools": [READ_FILE], "store": self.store}
        body["input"] = self.next_input()
        if self.previous is not None:
            body["previous_response_id"] = self.previous["id"]
        return body

    def full_body(self) -> dict[str, Any]:
        self.context.extend(self.next_input())
        return {"model": self.model, "tools": [READ_FILE], "input": list(self.context), "stream": True}

    def done(self, response: dict[str, Any], *, keep_context: bool = False) -> None:
        if keep_context:
            self.context.extend(response["output"])
        self.previous = response
        self.turn += 1


async def ws_turn(ws: ClientConnection, chain: Chain) -> None:
    """One turn of ``chain`` over an open WebSocket."""
    await ws.send(orjson.dumps({"type": "response.create", **chain.delta_body()}).decode())
    async with asyncio.timeout(TURN_TIMEOUT_S):
        while True:
            event = orjson.loads(await ws.recv())
            if event["type"] in _TERMINAL:
                if event["type"] != "response.completed":
                    raise TurnFailedError(str(event.get("error") or event["type"])[:200])
                chain.done(event["response"])
                return


async def sse_turn(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a streamed turn and read its SSE to the end; the completed response."""
    completed: dict[str, Any] | None = None
    decoder = SSEDecoder()
    async with asyncio.timeout(TURN_TIMEOUT_S), client.stream("POST", path, json=body) as reply:
        async for chunk in reply.aiter_bytes():
            for message in decoder.decode(chunk):
                if message.data == "[DONE]":
                    continue
                event = orjson.loads(message.data)
                if event.get("type") == "response.completed":
                    completed = event["response"]
                elif event.get("type") in _TERMINAL:
                    raise TurnFailedError(str(event)[:200])
    if completed is None:
        raise TurnFailedError(f"no response.completed (HTTP {reply.status_code})")
    return completed


@dataclass(frozen=True, slots=True)
class Timed:
    """One turn's wall time and the gateway's CPU time over it (ns)."""

    wall_ns: int
    cpu_ns: int


class WSArm:
    """A chain over one WebSocket to a gateway, turn by turn, timed."""

    def __init__(self, url: str, pid: int, chain: Chain) -> None:
        self.url, self.pid, self.chain = url, pid, chain
        self._stack = contextlib.AsyncExitStack()
        self._ws: ClientConnection | None = None

    async def __aenter__(self) -> WSArm:
        self._ws = await self._stack.enter_async_context(connect(self.url, compression=None, max_size=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def turn(self) -> Timed:
        assert self._ws is not None
        cpu = process_cpu_ns(self.pid)
        started = time.perf_counter_ns()
        await ws_turn(self._ws, self.chain)
        return Timed(time.perf_counter_ns() - started, process_cpu_ns(self.pid) - cpu)


class DirectArm:
    """A chain sent straight to the stateless fake: the whole context every turn, over HTTP/SSE."""

    def __init__(self, client: httpx.AsyncClient, chain: Chain) -> None:
        self.client, self.chain = client, chain

    async def turn(self) -> Timed:
        body = self.chain.full_body()
        started = time.perf_counter_ns()
        response = await sse_turn(self.client, "responses", body)
        wall = time.perf_counter_ns() - started
        self.chain.done(response, keep_context=True)
        return Timed(wall, 0)


@dataclass(slots=True)
class Load:
    """What a concurrency run did."""

    turns: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.turns / self.seconds if self.seconds else 0.0


async def ws_sessions(url: str, model: str, sessions: int, turns: int, *, store: bool = True) -> Load:
    """``sessions`` WebSocket connections at once, each running a ``turns``-turn tool loop."""
    load = Load()

    async def session() -> None:
        chain = Chain(model, store=store)
        try:
            async with connect(url, compression=None, max_size=None, open_timeout=TURN_TIMEOUT_S) as ws:
                for _ in range(turns):
                    await ws_turn(ws, chain)
                    load.turns += 1
        except Exception:  # every failure is counted, whatever it is
            load.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(sessions)))
    load.seconds = time.perf_counter() - started
    return load


async def http_sessions(base_url: str, model: str, sessions: int, turns: int) -> Load:
    """``sessions`` clients at once over HTTP/SSE, each running a ``turns``-turn tool loop."""
    load = Load()
    limits = httpx.Limits(max_connections=sessions, max_keepalive_connections=sessions)
    async with httpx.AsyncClient(base_url=base_url + "/", timeout=TURN_TIMEOUT_S, limits=limits) as client:

        async def session() -> None:
            chain = Chain(model, store=True)
            try:
                for _ in range(turns):
                    chain.done(await sse_turn(client, "responses", {**chain.delta_body(), "stream": True}))
                    load.turns += 1
            except Exception:  # every failure is counted, whatever it is
                load.errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(session() for _ in range(sessions)))
        load.seconds = time.perf_counter() - started
    return load


@contextlib.asynccontextmanager
async def idle_sockets(url: str, count: int) -> AsyncIterator[int]:
    """``count`` open, idle WebSocket connections (opened 50 at a time); how many opened."""
    async with contextlib.AsyncExitStack() as stack:
        opened = 0
        for start in range(0, count, 50):
            batch = min(50, count - start)
            results = await asyncio.gather(
                *(stack.enter_async_context(connect(url, compression=None)) for _ in range(batch)),
                return_exceptions=True,
            )
            opened += sum(1 for result in results if not isinstance(result, BaseException))
        yield opened
