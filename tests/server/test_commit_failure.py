"""A turn whose durable commit fails ends with ``response.failed`` on every transport, is never a parent, says so in
the log, and an idempotent retry generates it again (issue 9, point 1).

The commit is refused two ways: at the ``Store`` seam (a layer over the server's SQLite store that raises what SQLite
raises on a full disk, for an in-process server), and by a real full disk under the real ``tether serve``: its
file-size limit (``RLIMIT_FSIZE``) is lowered to the size its database files have, so SQLite's next write fails
with ``database or disk is full``. The documented answer (README's error table) is ``generation_interrupted``, 503:
with the shared stream log (every store), the commit is the lease's ``finish_turn``, and a turn nothing of which was
kept ends as the cluster documents it.
"""

from __future__ import annotations

import json
import resource
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import pytest
import structlog
from websockets.asyncio.client import connect

from tether.server.app import create_app
from tether.server.runner import GatewayAddress, RunningServer, serve_in_thread
from tether.settings import Settings
from tether.store.base import ResponseRecord, Store
from tether.store.turns import Lease
from tether.testing import ServeProcess, serve_subprocess, settled
from tether.types import JSONObject

from .wire import RESPONSE_KEYS, expect_http_error, expect_ws_error, http_client, receive_turn, send_create, sse_events

Transport = Literal["json", "sse", "websocket"]
TRANSPORTS: tuple[Transport, ...] = ("json", "sse", "websocket")
INTERRUPTED = "generation_interrupted"


class RefusingStore:
    """The server's store, except that while ``refusing`` every write of a response raises as a full disk does."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.refusing = False

    def _refuse(self) -> None:
        if self.refusing:
            raise sqlite3.OperationalError("database or disk is full")

    async def put(self, record: ResponseRecord) -> None:
        self._refuse()
        await self.inner.put(record)

    async def finish_turn(self, lease: Lease, record: ResponseRecord | None, events: list[JSONObject]) -> bool:
        if record is not None:
            self._refuse()
        return await self.inner.finish_turn(lease, record, events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Answer:
    """One turn as a transport delivered it: ``failed`` with its error code, or ``completed`` with its id."""

    outcome: Literal["completed", "failed"]
    code: str | None
    response_id: str | None  # a JSON error body carries no response id


def _terminal(events: list[JSONObject]) -> Answer:
    last = events[-1]
    if last["type"] == "response.completed":
        return Answer("completed", None, last["response"]["id"])
    assert last["type"] == "response.failed", events[-3:]
    assert "response.completed" not in [event["type"] for event in events]
    failed = last["response"]
    assert failed["status"] == "failed"
    assert set(failed) >= RESPONSE_KEYS, "a whole response object, though the client never saw response.created"
    assert failed["error"]["code"] == "server_error", "the API's closed set; tether's own code rides beside it"
    numbers = [event["sequence_number"] for event in events]
    assert numbers == sorted(set(numbers)), "the failed stream still counts up"
    if events[-2:-1] and events[-2]["type"] == "error":  # SSE: the error event, flat, before response.failed
        assert events[-2]["code"] == failed["error"]["tether:code"]
    # WebSocket: a create ends with one terminal event, so the code travels in response.failed alone
    return Answer("failed", failed["error"]["tether:code"], failed["id"])


async def run_turn(server: GatewayAddress, transport: Transport, **body: Any) -> Answer:
    """Run a turn over ``transport``; a request-scoped refusal is returned as a failure with its code."""
    body.setdefault("model", "echo")
    if transport == "websocket":
        async with connect(server.ws_url) as ws:
            await send_create(ws, **body)
            events = await receive_turn(ws)
            if events[-1]["type"] == "error":
                return Answer("failed", expect_ws_error(events[-1])["error"]["code"], None)
            answer = _terminal(events)
            await send_create(ws, model="echo", input="still here", store=False)
            assert (await receive_turn(ws))[-1]["type"] == "response.completed", "the socket stays usable"
            return answer
    async with http_client(server) as client:
        if transport == "sse":
            async with client.stream("POST", "/responses", json={**body, "stream": True}) as reply:
                raw = await reply.aread()
            if reply.status_code != 200:
                return Answer("failed", json.loads(raw)["error"]["code"], None)
            return _terminal(sse_events(raw))  # ends with data: [DONE], after the terminal event
        reply = await client.post("/responses", json=body)
        if reply.status_code == 200:
            return Answer("completed", None, reply.json()["id"])
        return Answer("failed", expect_http_error(reply, reply.status_code)["code"], None)


def turn_lines(lines: list[JSONObject]) -> list[JSONObject]:
    return [line for line in lines if line.get("event") == "turn.done"]


async def check_commit_failure(
    server: GatewayAddress,
    transport: Transport,
    refuse: Callable[[], None],
    heal: Callable[[], None],
    logged_turns: Callable[[int], Awaitable[list[JSONObject]]],
    generations: Callable[[], int] | None = None,
) -> None:
    """The scenario on one transport. ``logged_turns(n)`` waits for ``n`` ``turn.done`` lines and returns them."""
    key = f"key-{transport}"
    before = len(await logged_turns(0))
    refuse()
    answer = await run_turn(server, transport, input="hi", **{"tether:idempotency_key": key})
    assert (answer.outcome, answer.code) == ("failed", INTERRUPTED), answer
    line = (await logged_turns(before + 1))[before]
    assert line["outcome"] == "failed", line  # before the fix: completed
    assert line.get("level", line.get("log_level")) == "warning"
    failed_id = str(line["response_id"])
    assert answer.response_id in (None, failed_id)
    child = await run_turn(server, transport, input="more", previous_response_id=failed_id)
    assert (child.outcome, child.code) == ("failed", "previous_response_not_found"), child
    heal()
    before_retry = generations() if generations else 0
    retried = await run_turn(server, transport, input="hi", **{"tether:idempotency_key": key})
    assert retried.outcome == "completed", retried
    if generations is not None:
        extra = 1 if transport == "websocket" else 0  # run_turn's check that the socket stays usable
        assert generations() == before_retry + 1 + extra, "the retry generated once more, not replayed"
    assert retried.response_id is not None
    assert retried.response_id != failed_id, "the retry generated a new response: the failed one was not kept"
    continued = await run_turn(server, transport, input="more", previous_response_id=retried.response_id)
    assert continued.outcome == "completed", continued


# -- at the Store seam, in process ------------------------------------------------------------------------------


@contextmanager
def refusing_server(tmp_path: Path) -> Iterator[tuple[RunningServer, RefusingStore]]:
    layers: list[RefusingStore] = []

    def layer(store: Store) -> Store:
        layers.append(RefusingStore(store))
        return cast(Store, layers[-1])

    settings = Settings(store_url=f"sqlite:///{tmp_path / 'tether.db'}", log_level="warning")
    with serve_in_thread(settings, app=create_app(settings, store_layer=layer)) as server:
        yield server, layers[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_commit_fails_the_turn_on_every_transport(tmp_path: Path, transport: Transport) -> None:
    with refusing_server(tmp_path) as (server, store), structlog.testing.capture_logs() as logs:

        def refuse() -> None:
            store.refusing = True

        def heal() -> None:
            store.refusing = False

        async def logged_turns(n: int) -> list[JSONObject]:
            await settled(server)  # every turn has ended, so has its log line
            lines = turn_lines(cast(list[JSONObject], logs))
            assert len(lines) >= n, lines
            return lines

        await check_commit_failure(
            server, transport, refuse, heal, logged_turns, generations=lambda: server.engine.stats.generations
        )
        assert server.engine.stats.idempotent_replays == 0


# -- a full disk under the real tether serve ----------------------------------------------------------------------


def _limit_file_size(pid: int, limit: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Path]]:
    """One real ``tether serve`` for the three transports (each test uses its own idempotency key)."""
    directory = tmp_path_factory.mktemp("full-disk")
    env = {"TETHER_LOG_LEVEL": "info", "TETHER_STORE_URL": f"sqlite:///{directory / 'tether.db'}"}
    with serve_subprocess(directory, env) as server:
        yield server, directory


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_full_disk_fails_the_turn_on_the_real_tether_serve(
    real_server: tuple[ServeProcess, Path], transport: Transport
) -> None:
    server, directory = real_server
    assert (await run_turn(server, transport, input="warm up")).outcome == "completed"

    def refuse() -> None:  # every database file is as large as it may get: SQLite's next append fails
        largest = max(path.stat().st_size for path in directory.glob("tether.db*"))
        assert server.log_path.stat().st_size < largest, "the log file must stay writable"
        _limit_file_size(server.process.pid, largest)

    def heal() -> None:
        _limit_file_size(server.process.pid, resource.RLIM_INFINITY)

    def logs() -> list[JSONObject]:
        return [json.loads(line) for line in server.log().splitlines() if line.strip()]

    async def logged_turns(n: int) -> list[JSONObject]:
        # A turn's line is written as its task ends, before a failed turn's terminal events are published (that
        # takes the store's answer), so it is in the file by the time the client has its answer.
        lines = turn_lines(logs())
        assert len(lines) >= n, lines
        return lines

    await check_commit_failure(server, transport, refuse, heal, logged_turns)
    assert any(line["event"] == "turn.commit_failed" for line in logs())
    assert "Traceback" not in server.log()
