"""Operator logs of the real ``tether serve``: with stderr in a file they are JSON lines without ANSI codes, with one
access line per request, one line per turn, 4xx answers logged with their code, and no content or secrets."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx2 as httpx
from websockets.asyncio.client import connect

from tether.server.logs import MAX_VALUE_CHARS, clip_long_values, wants_json
from tether.testing import ServeProcess, serve_subprocess

API_KEY = "sk-observe-secret-0123456789"
MARKER = "CONTENT-MARKER-4242"
ENV = {"TETHER_API_KEYS": json.dumps({API_KEY: "acme"}), "TETHER_LOG_LEVEL": "info"}
AUTH = {"authorization": f"Bearer {API_KEY}"}


async def workload(server: ServeProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10, headers=AUTH) as client:
        done = await client.post("/responses", json={"model": "echo", "input": f"say {MARKER}"})
        assert done.status_code == 200
        missing = await client.post("/responses", json={"model": "echo", "previous_response_id": "resp_gone"})
        assert missing.status_code == 400
        failed = await client.post("/responses", json={"model": "fail", "input": MARKER})
        assert failed.status_code == 500
        assert (await client.get("/nowhere")).status_code == 404
    async with connect(server.ws_url, additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "response.create", "model": "echo", "previous_response_id": "resp_x"}))
        await ws.recv()


def lines_of(server: ServeProcess) -> list[dict[str, Any]]:
    text = server.log()
    assert "\x1b" not in text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def events(lines: list[dict[str, Any]], name: str, **fields: Any) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == name and fields.items() <= line.items()]


async def test_logs_in_a_file_are_json_lines_an_operator_can_use(tmp_path: Path) -> None:
    with serve_subprocess(tmp_path, ENV) as server:
        await workload(server)
    lines = lines_of(server)  # every line parsed as JSON

    (access,) = events(lines, "http.access", method="POST", status=200)
    assert access["path"] == "/v1/responses"
    assert access["bytes_in"] > 0
    assert access["bytes_out"] > 0
    assert access["duration_s"] >= 0
    assert events(lines, "http.access", status=400, code="previous_response_not_found")
    assert events(lines, "http.access", status=404, code="not_found")
    assert events(lines, "http.access", method="WEBSOCKET", status=101)

    (done,) = events(lines, "turn.done", outcome="completed")
    assert done["route"] == "default"
    assert done["provider"] == "scripted"
    assert done["transport"] == "http"
    assert done["input_tokens"] > 0
    assert done["output_tokens"] > 0
    assert done["latency_s"] >= 0
    assert done["key_id"].startswith("key_")
    (failed,) = events(lines, "turn.done", outcome="failed")
    assert failed["code"] == "server_error"
    assert "failed on purpose" in failed["reason"]
    rejected = events(lines, "turn.rejected", code="previous_response_not_found")
    assert {line["transport"] for line in rejected} == {"http", "websocket"}
    assert events(lines, "ws.error", code="previous_response_not_found", status=400)

    text = server.log()
    assert MARKER not in text
    assert API_KEY not in text


async def test_content_is_logged_only_when_the_operator_opts_in(tmp_path: Path) -> None:
    with serve_subprocess(tmp_path, {**ENV, "TETHER_LOG_CONTENT": "true"}) as server:
        await workload(server)
    (done,) = events(lines_of(server), "turn.done", outcome="completed")
    assert MARKER in json.dumps(done["input_items"])
    assert MARKER in json.dumps(done["output_items"])
    assert API_KEY not in server.log()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_json_off_a_terminal_and_console_on_one() -> None:
    assert wants_json("auto", io.StringIO())
    assert not wants_json("auto", _Terminal())
    assert wants_json("json", _Terminal())
    assert not wants_json("console", io.StringIO())


async def test_a_megabyte_model_name_or_path_makes_no_megabyte_log_line(tmp_path: Path) -> None:
    """Each was logged whole, once per request: a client could write a megabyte into the log with every call."""
    with serve_subprocess(tmp_path, ENV) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, headers=AUTH) as client:
            answered = await client.post("/responses", json={"model": "m" * 1_000_000, "input": "hi"})
            assert answered.status_code == 200
            assert (await client.get("/" + "p" * 30_000)).status_code == 404
    lines = server.log().splitlines()
    assert max(len(line) for line in lines) < 4 * MAX_VALUE_CHARS
    (done,) = events(lines_of(server), "turn.done", outcome="completed")
    assert done["model"] == "m" * MAX_VALUE_CHARS + "... (1,000,000 characters)"
    (missing,) = events(lines_of(server), "http.access", status=404)
    assert missing["path"].endswith("... (30,004 characters)")


def test_tracebacks_and_opted_in_content_are_not_clipped() -> None:
    long = "x" * (MAX_VALUE_CHARS * 3)
    event = clip_long_values(None, "info", {"exception": long, "input_items": [long], "model": long})
    assert event["exception"] == long
    assert event["input_items"] == [long]
    assert len(event["model"]) < len(long)
