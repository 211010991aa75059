"""A turn whose durable commit fails ends with response.failed on every transport, is never a parent, and an
idempotent retry generates it again.

With the shared stream log (every store), the commit is the lease's ``finish_turn``; when it fails the turn ends as
``generation_interrupted`` (503), the code the cluster documents for a turn nothing of which was kept.

The failure is a real SQLite one, made deterministic: a trigger in the server's own database file refuses every
insert into ``responses``, as a damaged or full disk would refuse the write.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tether.server.runner import RunningServer

from .wire import ServerFactory, error_turn, expect_http_error, http_client, receive_turn, send_create, sse_events

REFUSE = "CREATE TRIGGER refuse_puts BEFORE INSERT ON responses BEGIN SELECT RAISE(ABORT, 'disk says no'); END"


def database_sql(path: Path, statement: str) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute(statement)
        connection.commit()
    finally:
        connection.close()


@pytest.fixture
def failing(make_server: ServerFactory, tmp_path: Path) -> tuple[RunningServer, Path]:
    database = tmp_path / "tether.db"
    server = make_server(store_url=f"sqlite:///{database}")
    database_sql(database, REFUSE)
    return server, database


async def test_json_turn_is_an_error_and_nothing_can_continue_it(failing: tuple[RunningServer, Path]) -> None:
    server, database = failing
    async with http_client(server) as client:
        reply = await client.post("/responses", json={"model": "echo", "input": "hi", "tether:idempotency_key": "k1"})
        error = expect_http_error(reply, 503, "generation_interrupted")
        assert "x-should-retry" not in reply.headers  # a retry can fix it
        assert error["type"] == "server_error"
        metrics = (await client.get(f"http://{server.host}:{server.port}/metrics")).text
        turns = [line for line in metrics.splitlines() if line.startswith("tether_turns_total{")]
        assert any('outcome="failed"' in line for line in turns), turns
        assert not any('outcome="completed"' in line for line in turns), "the log and metrics must not say completed"
        database_sql(database, "DROP TRIGGER refuse_puts")
        retried = await client.post("/responses", json={"model": "echo", "input": "hi", "tether:idempotency_key": "k1"})
        assert retried.status_code == 200, "the idempotent retry generates again: nothing was kept"
        assert retried.json()["status"] == "completed"


async def test_sse_ends_with_response_failed_and_the_id_is_not_a_parent(failing: tuple[RunningServer, Path]) -> None:
    server, _ = failing
    async with http_client(server) as client:
        async with client.stream("POST", "/responses", json={"model": "echo", "input": "hi", "stream": True}) as r:
            events = sse_events(await r.aread())
        types = [event["type"] for event in events]
        assert types[-2:] == ["error", "response.failed"]
        assert "response.completed" not in types
        numbers = [event["sequence_number"] for event in events]
        assert numbers == sorted(set(numbers))
        assert events[-2]["code"] == "generation_interrupted"
        failed = events[-1]["response"]
        assert failed["status"] == "failed"
        child = await client.post(
            "/responses", json={"model": "echo", "input": "more", "previous_response_id": failed["id"]}
        )
        expect_http_error(child, 400, "previous_response_not_found")


async def test_websocket_gets_response_failed_and_stays_usable(failing: tuple[RunningServer, Path]) -> None:
    server, _ = failing
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input="hi")
        events = await receive_turn(ws)
        assert events[-1]["type"] == "response.failed"
        assert events[-1]["response"]["status"] == "failed"
        failed_id = events[-1]["response"]["id"]
        error = await error_turn(ws, model="echo", input="more", previous_response_id=failed_id)
        assert error["error"]["code"] == "previous_response_not_found"
        await send_create(ws, model="echo", input="unstored", store=False)
        assert (await receive_turn(ws))[-1]["type"] == "response.completed"
