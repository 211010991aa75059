"""The soak: tool loops over WebSocket and HTTP against a fresh ``tether serve`` for a while, with RSS sampled.

``python -m tether.bench.soak --minutes 10`` (not in CI). It reports turns, errors and the server's RSS over time;
flat RSS and zero errors are what a healthy run shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
from websockets.asyncio.client import connect

from tether.testing import ServeProcess, serve_subprocess

TOOL = {
    "type": "function",
    "name": "read_file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}


@dataclass
class Tally:
    turns: int = 0
    errors: int = 0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def ws_loop(server: ServeProcess, tally: Tally, until: float, lane: int) -> None:
    async with connect(server.ws_url, max_size=None) as ws:
        pending: tuple[str, str] | None = None  # (response id, call id) to answer next
        while time.monotonic() < until:
            body: dict[str, Any] = {"type": "response.create", "model": "gpt-soak", "tools": [TOOL]}
            body["store"] = lane % 2 == 0
            if pending is None:
                body["input"] = "Read the file, then summarise it."
            else:
                body["previous_response_id"] = pending[0]
                body["input"] = [{"type": "function_call_output", "call_id": pending[1], "output": "x" * 200}]
            await ws.send(json.dumps(body))
            while True:
                event = json.loads(await ws.recv())
                if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
                    break
            pending = None
            if event["type"] != "response.completed":
                tally.errors += 1
                continue
            tally.turns += 1
            calls = [item for item in event["response"]["output"] if item["type"] == "function_call"]
            if calls:
                pending = (event["response"]["id"], calls[0]["call_id"])


async def http_loop(server: ServeProcess, tally: Tally, until: float) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        while time.monotonic() < until:
            reply = await client.post("/responses", json={"model": "echo", "input": "soak"})
            if reply.status_code == 200:
                tally.turns += 1
            else:
                tally.errors += 1


async def sample(server: ServeProcess, tally: Tally, until: float, every_s: float) -> None:
    started = time.monotonic()
    while time.monotonic() < until:
        tally.rss_mb.append((time.monotonic() - started, rss_mb(server.process.pid)))
        await asyncio.sleep(every_s)


async def soak(server: ServeProcess, minutes: float, sessions: int) -> Tally:
    tally = Tally()
    until = time.monotonic() + minutes * 60
    await asyncio.gather(
        *(ws_loop(server, tally, until, lane) for lane in range(sessions)),
        http_loop(server, tally, until),
        sample(server, tally, until, every_s=10.0),
    )
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether.bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=8, help="concurrent WebSocket tool loops")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        env = {"TETHER_LOG_LEVEL": "warning", "TETHER_STORE_URL": f"sqlite:///{Path(workdir) / 'soak.db'}"}
        with serve_subprocess(Path(workdir), env) as server:
            tally = asyncio.run(soak(server, args.minutes, args.sessions))
            log = server.log()
    rss = [value for _, value in tally.rss_mb]
    print(f"soak: {args.minutes:g} min, {tally.turns} turns, {tally.errors} errors")
    if rss:
        print(f"rss: first {rss[0]:.0f} MB, last {rss[-1]:.0f} MB, max {max(rss):.0f} MB ({len(rss)} samples)")
        every = max(1, len(tally.rss_mb) // 10)
        series = ", ".join(f"{at:.0f}s {value:.0f}" for at, value in tally.rss_mb[::every])
        print(f"rss over time (MB): {series}")
    print(f"tracebacks in the log: {log.count('Traceback')}")
    return 0 if tally.errors == 0 and "Traceback" not in log else 1


if __name__ == "__main__":
    raise SystemExit(main())
