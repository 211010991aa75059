"""Gateway CPU time per turn along a long WebSocket chain.

Starts a real ``tether serve`` (subprocess, SQLite in a temporary directory, the scripted model), drives a chain of
``--turns`` turns over one WebSocket connection (each turn: ``previous_response_id`` plus one ~4 KB
``function_call_output``), and reads the server's CPU time around every turn. If a turn's cost grew with the
conversation, turns 191–200 would cost more than turns 1–10; the ratio of their means is the figure of merit.

    python -m tether.bench.cpu_per_turn --turns 200 --repeats 5 --report docs/bench-cpu-per-turn.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect

from tether.bench.procstat import process_cpu_ns
from tether.testing import serve_subprocess

SCRIPT_NAME = "long-loop"


def tool_output(turn: int, size: int = 4096) -> str:
    line = f"# turn {turn}: def handler_{turn}(request):  return compute(request.payload, retries=3)\n"
    return (line * (size // len(line) + 1))[:size]


def write_script(path: Path, turns: int) -> None:
    steps = [{"tool_calls": [{"name": "read_file", "arguments": {"path": f"src/module_{i}.py"}}]} for i in range(turns)]
    path.write_text(json.dumps({"scripts": {SCRIPT_NAME: steps}}))


TOOLS = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


async def run_turn(ws: ClientConnection, body: dict[str, Any]) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "response.create", **body}).decode())
    while True:
        event = orjson.loads(await ws.recv())
        if event["type"] == "response.completed":
            response: dict[str, Any] = event["response"]
            return response
        if event["type"] in ("error", "response.failed"):
            raise RuntimeError(f"turn failed: {event}")


async def run_chain(url: str, pid: int, turns: int) -> list[int]:
    """Run one chain; return the server CPU ns of each turn."""
    costs: list[int] = []
    async with connect(url, compression=None, max_size=None) as ws:
        previous: dict[str, Any] | None = None
        for turn in range(turns):
            body: dict[str, Any] = {"model": f"script:{SCRIPT_NAME}", "tools": TOOLS, "store": True}
            if previous is None:
                body["input"] = [{"type": "message", "role": "user", "content": "Read every module, one by one."}]
            else:
                call = previous["output"][-1]
                body["previous_response_id"] = previous["id"]
                body["input"] = [
                    {"type": "function_call_output", "call_id": call["call_id"], "output": tool_output(turn)}
                ]
            before = process_cpu_ns(pid)
            previous = await run_turn(ws, body)
            costs.append(process_cpu_ns(pid) - before)
    return costs


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.machine()}"
    return f"{system}, {os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=20, help="turns of a discarded chain run first")
    parser.add_argument("--report", type=Path, help="write a markdown report here")
    parser.add_argument("--store-url", default=None, help="store of the server (default: SQLite in a temp dir)")
    args = parser.parse_args()
    if args.turns < 20:
        parser.error("--turns must be at least 20")

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        write_script(workdir / "scripts.json", args.turns + args.warmup)
        env = {"TETHER_SCRIPTED__SCRIPTS_FILE": str(workdir / "scripts.json"), "TETHER_LOG_LEVEL": "warning"}
        if args.store_url:
            env["TETHER_STORE_URL"] = args.store_url
        with serve_subprocess(workdir, env) as server:
            pid = server.process.pid
            asyncio.run(run_chain(server.ws_url, pid, args.warmup))
            runs = []
            for repeat in range(args.repeats):
                runs.append(asyncio.run(run_chain(server.ws_url, pid, args.turns)))
                console.print(f"repeat {repeat + 1}/{args.repeats} done")

    per_turn = [statistics.median(run[turn] for run in runs) for turn in range(args.turns)]
    first = per_turn[:10]
    last = per_turn[-10:]
    ratio = statistics.mean(last) / statistics.mean(first)
    ratios = [statistics.mean(run[-10:]) / statistics.mean(run[:10]) for run in runs]

    table = Table(title=f"tether gateway CPU per turn, {args.turns}-turn WebSocket chain (median of {args.repeats})")
    table.add_column("turns")
    table.add_column("mean CPU per turn (ms)", justify="right")
    for label, values in (("1–10", first), (f"{args.turns - 9}–{args.turns}", last)):
        table.add_row(label, f"{statistics.mean(values) / 1e6:.3f}")
    table.add_row("ratio (last / first)", f"{ratio:.3f}")
    console.print(table)
    console.print("per-repeat ratios: " + ", ".join(f"{r:.3f}" for r in ratios))

    if args.report:
        write_report(args, per_turn, ratio, ratios)
        console.print(f"report written to {args.report}")
    return 0


def write_report(args: argparse.Namespace, per_turn: list[float], ratio: float, ratios: list[float]) -> None:
    buckets = []
    for start in range(0, args.turns, 20):
        chunk = per_turn[start : start + 20]
        buckets.append(f"| {start + 1}–{start + len(chunk)} | {statistics.mean(chunk) / 1e6:.3f} |")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Gateway CPU time per turn along a long chain",
        "",
        f"- Date: {now}",
        f"- Machine: {machine()}",
        f"- Command: `./dev bench-cpu --turns {args.turns} --repeats {args.repeats} --report {args.report}`",
        "- Setup: a real `tether serve` subprocess (SQLite store in a temporary directory, scripted model, log level"
        " warning); one WebSocket connection per chain; every turn sends `previous_response_id` plus one 4 KB"
        " `function_call_output`, `store=true`; the model answers each turn with a `read_file` call.",
        "- Measure: the server process's on-CPU time (all threads, `/proc/<pid>/task/*/schedstat`, ns) around each"
        f" turn; per-turn median over {args.repeats} chains after a discarded {args.warmup}-turn warm-up chain.",
        "",
        "| turns | mean CPU per turn (ms) |",
        "|---|---|",
        f"| 1–10 | {statistics.mean(per_turn[:10]) / 1e6:.3f} |",
        f"| {args.turns - 9}–{args.turns} | {statistics.mean(per_turn[-10:]) / 1e6:.3f} |",
        f"| **ratio** | **{ratio:.3f}** (target ≤ 1.2) |",
        "",
        "Per-repeat ratios: " + ", ".join(f"{r:.3f}" for r in ratios),
        "",
        "CPU per turn along the chain (means of 20-turn buckets of the per-turn medians):",
        "",
        "| turns | mean CPU per turn (ms) |",
        "|---|---|",
        *buckets,
        "",
    ]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
