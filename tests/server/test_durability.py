"""``tether serve`` killed with SIGKILL between turns and started again: a store=true session continues from SQLite."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
from websockets.asyncio.client import connect

from tether.testing import serve_subprocess

from .wire import TERMINAL_EVENTS, ServerFactory

SCRIPT = [{"tool_calls": [{"name": "read_file", "arguments": {"path": f"src/m{i}.py"}}]} for i in range(6)] + [
    {"text": "All files read."}
]
PATH_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
TOOLS = [{"type": "function", "name": "read_file", "description": "Read a file.", "parameters": PATH_SCHEMA}]


async def ws_turn(url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with connect(url) as ws:
        await ws.send(orjson.dumps({"type": "response.create", **body}).decode())
        while True:
            event = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["type"] in TERMINAL_EVENTS or event["type"] == "error":
                assert event["type"] == "response.completed", event
                response: dict[str, Any] = event["response"]
                return response


def output_call(response: dict[str, Any], index: int) -> dict[str, Any]:
    call = response["output"][0]
    assert call["type"] == "function_call"
    return {"type": "function_call_output", "call_id": call["call_id"], "output": f"contents of file {index}"}


def test_a_stored_session_continues_after_sigkill_and_restart(tmp_path: Path) -> None:
    (tmp_path / "scripts.json").write_text(json.dumps({"scripts": {"loop": SCRIPT}}))
    env = {"TETHER_SCRIPTED__SCRIPTS_FILE": str(tmp_path / "scripts.json"), "TETHER_LOG_LEVEL": "warning"}
    model = "script:loop"
    with serve_subprocess(tmp_path, env) as first:
        response = asyncio.run(ws_turn(first.ws_url, {"model": model, "input": "Read every file.", "tools": TOOLS}))
        ids = [response["id"]]
        for index in range(2):
            body = {"model": model, "tools": TOOLS, "previous_response_id": response["id"],
                    "input": [output_call(response, index)]}  # fmt: skip
            response = asyncio.run(ws_turn(first.ws_url, body))
            ids.append(response["id"])
        first.process.send_signal(signal.SIGKILL)  # no shutdown hook runs: only what was committed survives
        first.process.wait(10)
    assert (tmp_path / ".tether" / "tether.db").exists()

    with serve_subprocess(tmp_path, env) as second:
        # over HTTP, from the durable store (the new process's caches are empty)
        with httpx.Client(base_url=second.base_url, timeout=10) as client:
            body = {"model": model, "tools": TOOLS, "previous_response_id": response["id"],
                    "input": [output_call(response, 2)]}  # fmt: skip
            reply = client.post("/responses", json=body)
            assert reply.status_code == 200, reply.text
            continued = reply.json()
            # the script resumed at the right step: its 4th call, so the whole context was rebuilt in order
            assert continued["output"][0]["arguments"] == json.dumps({"path": "src/m3.py"}, separators=(",", ":"))
            assert continued["usage"]["input_tokens"] > response["usage"]["input_tokens"]
            for response_id in ids:
                assert client.get(f"/responses/{response_id}").json()["status"] == "completed"
            older = client.get(f"/responses/{ids[1]}").json()
        # and over WebSocket, from an older response of the same chain (a fork after the restart)
        fork_body = {"model": model, "tools": TOOLS, "previous_response_id": ids[1], "input": [output_call(older, 1)]}
        forked = asyncio.run(ws_turn(second.ws_url, fork_body))
        assert forked["previous_response_id"] == ids[1]
        assert forked["output"][0]["arguments"] == json.dumps({"path": "src/m2.py"}, separators=(",", ":"))


def test_a_row_damaged_inside_its_page_is_a_500_and_one_log_line_not_a_traceback(tmp_path: Path) -> None:
    """quick_check at start-up does not read row contents, so a byte flipped inside a stored item is found only
    when it is read: that read is 500 server_error and one error line naming the file, never a traceback."""
    database = tmp_path / "tether.db"
    env = {"TETHER_LOG_FORMAT": "json", "TETHER_STORE_URL": f"sqlite:///{database}"}
    marker = "damaged-by-the-disk-" * 4
    with serve_subprocess(tmp_path, env) as server:
        first = httpx.post(f"{server.base_url}/responses", json={"model": "echo", "input": marker}, timeout=20)
        assert first.status_code == 200
        damaged = first.json()["id"]
        whole = httpx.post(f"{server.base_url}/responses", json={"model": "echo", "input": "intact"}, timeout=20)
    data = bytearray(database.read_bytes())  # the server closed the store: everything is in the main file
    at = data.index(marker.encode())
    data[at] = 0xFF  # not UTF-8, so the item's JSON cannot be read back
    database.write_bytes(bytes(data))

    with serve_subprocess(tmp_path, env) as server:
        reads = [
            httpx.get(f"{server.base_url}/responses/{damaged}", timeout=20),
            httpx.get(f"{server.base_url}/responses/{damaged}/input_items", timeout=20),
        ]
        intact = httpx.get(f"{server.base_url}/responses/{whole.json()['id']}", timeout=20)
        log = server.log()
    for read in reads:
        assert read.status_code == 500
        assert read.json()["error"]["code"] == "server_error"
    assert intact.status_code == 200
    assert "Traceback" not in log
    records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [r for r in records if r["level"] in ("error", "critical") and r["event"] != "http.access"]
    assert [r["event"] for r in errors] == ["store.damaged", "store.damaged"]  # beside the 500s' access lines
    assert all(f"database {database} is damaged" in r["problem"] and "tether check" in r["problem"] for r in errors)


async def ws_exchange(url: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each message's last event (its error or terminal event), all on one socket, which must stay open."""
    last: list[dict[str, Any]] = []
    async with connect(url) as ws:
        for message in messages:
            await ws.send(orjson.dumps(message).decode())
            while True:
                event = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if event["type"] in TERMINAL_EVENTS or event["type"] == "error":
                    last.append(event)
                    break
    return last


def test_a_damaged_row_read_over_websocket_and_in_the_background_is_an_error_and_one_log_line(
    tmp_path: Path,
) -> None:
    """The same damage as above, reached by a WebSocket continuation, a WebSocket resume, an HTTP background or
    streamed continuation, and a stored stream's replay: each gets server_error, the socket stays open for the next
    turn, and the log has one store.damaged line per read, never ws.turn.crashed or a traceback."""
    database = tmp_path / "tether.db"
    env = {"TETHER_LOG_FORMAT": "json", "TETHER_STORE_URL": f"sqlite:///{database}"}
    marker = "damaged-by-the-disk-" * 4
    with serve_subprocess(tmp_path, env) as server:
        first = httpx.post(f"{server.base_url}/responses", json={"model": "echo", "input": marker}, timeout=20)
        damaged = first.json()["id"]
    data = bytearray(database.read_bytes())
    data[data.index(marker.encode())] = 0xFF
    database.write_bytes(bytes(data))

    more = [{"type": "message", "role": "user", "content": "and then?"}]
    with serve_subprocess(tmp_path, env) as server:
        events = asyncio.run(
            ws_exchange(
                server.ws_url,
                [
                    {"type": "response.create", "model": "echo", "previous_response_id": damaged, "input": more},
                    {"type": "tether:response.resume", "response_id": damaged, "starting_after": 0},
                    {"type": "response.create", "model": "echo", "input": "still here"},
                ],
            )
        )
        background = httpx.post(
            f"{server.base_url}/responses",
            json={"model": "echo", "previous_response_id": damaged, "input": more, "background": True},
            timeout=20,
        )
        streamed = httpx.post(
            f"{server.base_url}/responses",
            json={"model": "echo", "previous_response_id": damaged, "input": more, "stream": True},
            timeout=20,
        )
        replayed = httpx.get(f"{server.base_url}/responses/{damaged}?stream=true&starting_after=0", timeout=20)
        log = server.log()
    assert [e["type"] for e in events] == ["error", "error", "response.completed"], events
    assert [e["error"]["code"] for e in events[:2]] == ["server_error", "server_error"]
    for answer in (background, streamed, replayed):
        assert answer.status_code == 500, answer.text
        assert answer.json()["error"]["code"] == "server_error"
    assert "Traceback" not in log
    records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [r for r in records if r["level"] in ("error", "critical") and r["event"] != "http.access"]
    assert [r["event"] for r in errors] == ["store.damaged"] * 5, errors
    assert all(f"database {database} is damaged" in r["problem"] and "tether check" in r["problem"] for r in errors)


def test_a_response_ttl_of_zero_means_stored_responses_never_expire(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(response_ttl_s=0)
    created = httpx.post(f"{server.base_url}/responses", json={"model": "echo", "input": "keep me"}, timeout=20)
    assert httpx.get(f"{server.base_url}/responses/{created.json()['id']}", timeout=20).status_code == 200
    with sqlite3.connect(tmp_path / "tether.db") as conn:
        assert conn.execute("SELECT expires_at FROM responses").fetchall() == [(None,)]
