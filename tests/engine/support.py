"""Helpers for engine tests in process: a gated model for turns held open, requests, following."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from tether.engine.engine import Engine
from tether.engine.live import LiveResponse
from tether.protocol.model_events import Finish, ModelEvent, TextDelta, Usage
from tether.protocol.request import CreateRequest, Transport, parse_create
from tether.providers.base import ProviderRequest
from tether.types import Item, JSONObject

TENANT = "alice"


class GatedProvider:
    """A model that answers ``"ok"`` only once its gate is opened, so a test can hold a turn in flight."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.requests: list[ProviderRequest] = []
        self.abandoned = 0  # streams closed before the gate opened: their generation was stopped
        self._arrived = asyncio.Condition()

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ModelEvent]:
        async with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
        try:
            await self.gate.wait()
        except BaseException:
            self.abandoned += 1
            raise
        yield TextDelta("ok")
        yield Finish(usage=Usage(input_tokens=request.context_tokens, output_tokens=1))

    async def arrived(self, count: int) -> None:
        """Wait until ``count`` turns have reached the model (each then waits for the gate)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def aclose(self) -> None:
        """Nothing to release."""


def request(**fields: object) -> CreateRequest:
    body: JSONObject = {"model": "echo", **fields}
    return parse_create(body, Transport.HTTP)


async def events_of(engine: Engine, live: LiveResponse, after: int = -1) -> list[JSONObject]:
    """A response's events after ``after``, as plain JSON objects (tests look at any key of any event)."""
    return [dict(event) async for event in engine.follow(live, after)]


async def run(engine: Engine, **fields: object) -> list[JSONObject]:
    """Create a turn over HTTP semantics (no connection) and follow it to its end."""
    return await events_of(engine, await engine.create(request(**fields), tenant=TENANT))


def user(text: str) -> JSONObject:
    return {"type": "message", "role": "user", "content": text}


def call(call_id: str, name: str = "lookup") -> JSONObject:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": "{}"}


def call_output(call_id: str, output: str = "42") -> JSONObject:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def texts(items: Sequence[Item]) -> list[str]:
    """The text of each message item (string content or the text of its parts), in order."""
    result: list[str] = []
    for item in items:
        content = item.get("content")
        if isinstance(content, str):
            result.append(content)
        elif isinstance(content, list):
            result.append("".join(part.get("text", "") for part in content))
    return result


def terminal(events: list[JSONObject]) -> JSONObject:
    final = events[-1]
    assert final["type"] in ("response.completed", "response.failed", "response.incomplete"), final["type"]
    response: JSONObject = final["response"]
    return response
