"""``tether serve`` killed with SIGKILL between turns and started again: a store=true session continues from SQLite."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
from websockets.asyncio.client import connect

from tether.testing import serve_subprocess

from .wire import TERMINAL_EVENTS

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
