"""Helpers of the client tests: an upgrade gate in front of a server, event recording, server-side checks."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar

import httpx2 as httpx
import pytest

from tether.client import ConnectionEvent, Delta, SentRequest, TextDelta, TurnReset
from tether.netem.proxy import ShapingProxy
from tether.server.runner import RunningServer
from tether.testing import settled
from tether.types import JSONObject

ServerFactory = Callable[..., RunningServer]
E = TypeVar("E")

TEST_TIMEOUT_S = 20.0
MODEL = "gpt-test"
SLOW = {"ttft_s": 0.05, "tokens_per_second": 400.0}
WEATHER_TOOL: JSONObject = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
# The scripted model's answer to a tool output of 9 characters ("18C clear").
TOOL_SUMMARY = "The tool returned 9 characters."


def long_message(words: int = 300) -> str:
    """A user message the ``echo`` model repeats: long enough that its answer spans many events and some time."""
    return " ".join(f"word{index:04d}" for index in range(words))


@dataclass
class Recorder:
    """Collects what a session reports: connection events and sent requests."""

    events: list[ConnectionEvent] = field(default_factory=list)
    requests: list[SentRequest] = field(default_factory=list)

    def on_event(self, event: ConnectionEvent) -> None:
        self.events.append(event)

    def on_request(self, request: SentRequest) -> None:
        self.requests.append(request)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    def creates(self) -> list[JSONObject]:
        """The bodies of every create request sent (WebSocket ``response.create`` or HTTP POST)."""
        return [
            request.body
            for request in self.requests
            if request.body is not None and request.body.get("type", "response.create") == "response.create"
        ]


def text_of(deltas: list[Delta]) -> str:
    """The text the caller saw, honouring resets (a reset discards what came before it)."""
    text = ""
    for delta in deltas:
        if isinstance(delta, TurnReset):
            text = ""
        elif isinstance(delta, TextDelta):
            text += delta.text
    return text


def assert_no_extensions(value: Any) -> None:
    """Nothing named ``tether:...`` anywhere in a JSON value."""
    if isinstance(value, dict):
        for key, inner in value.items():
            assert not str(key).startswith("tether:"), key
            assert_no_extensions(inner)
    elif isinstance(value, list):
        for inner in value:
            assert_no_extensions(inner)


def stored_response_count(database: Path) -> int:
    """How many responses the server stored (each ``store=true`` generation is one row)."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM responses").fetchone()
    return int(count)


async def stored_text(server: RunningServer, response_id: str) -> str:
    """The output text of a stored response, read back from the server."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        answer = await client.get(f"{server.base_url}/responses/{response_id}")
    assert answer.status_code == 200, answer.text
    return "".join(
        part["text"]
        for item in answer.json()["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


async def settled_generations(server: RunningServer, timeout_s: float = TEST_TIMEOUT_S) -> int:
    """The server's generation count once every request it is handling and every turn it started have ended."""
    await settled(server, timeout_s)
    return server.engine.stats.generations


class Summary(Protocol):
    """A report for the end of the session (``pytest_terminal_summary`` in conftest.py prints it)."""

    def lines(self) -> list[str]: ...


SUMMARIES = pytest.StashKey[dict[str, Summary]]()


def session_summaries(config: pytest.Config) -> dict[str, Summary]:
    """The reports tests of this session filed, by name (kept in the config's stash, not in a module global)."""
    return config.stash.setdefault(SUMMARIES, {})


def proxy_url(proxy: ShapingProxy) -> str:
    """The API base URL through a proxy."""
    return f"http://{proxy.host}:{proxy.port}/v1"


GateMode = Literal["pass", "refuse", "ignore", "hang_up"]


class UpgradeGate:
    """A TCP forwarder to a server that can refuse (HTTP 403), ignore, hang up on, or keep cutting WebSocket upgrades.

    Plain HTTP always passes. ``drop_upgrades_after`` cuts each upgraded connection after that many bytes from the
    server.
    """

    def __init__(self, target: RunningServer) -> None:
        self.target = target
        self.mode: GateMode = "pass"
        self.refusal = b"403 Forbidden"
        self.drop_upgrades_after: int | None = None
        self.upgrades = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            upgrade = b"upgrade: websocket" in head.lower()
            if upgrade:
                self.upgrades += 1
                if self.mode == "refuse":
                    writer.write(b"HTTP/1.1 " + self.refusal + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    await writer.drain()
                    return
                if self.mode == "hang_up":
                    return
                if self.mode == "ignore":
                    await reader.read()  # until the client gives up
                    return
            up_reader, upstream = await asyncio.open_connection(self.target.host, self.target.port)
            self._writers.add(upstream)
            upstream.write(head)
            limit = self.drop_upgrades_after if upgrade else None
            await asyncio.gather(_pipe(reader, upstream, None), _pipe(up_reader, writer, limit))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, limit: int | None) -> None:
    sent = 0
    try:
        while chunk := await source.read(16384):
            if limit is not None and sent + len(chunk) >= limit:
                sink.write(chunk[: limit - sent])
                await sink.drain()
                sink.transport.abort()
                return
            sink.write(chunk)
            sent += len(chunk)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.transport.abort()
