"""The cluster stores under load: per-turn latency and gateway CPU, and many concurrent sessions over 3 nodes.

``per-turn`` runs the long-chain workload of :mod:`tether.bench.cpu_per_turn` (one WebSocket, each turn
``previous_response_id`` plus a 4 KB ``function_call_output``) against one ``tether serve`` per store, all running
side by side, the chains interleaved (sqlite, postgres, redis, sqlite, …) so that the load of the machine weighs on
every store alike. It compares turns 1–10 with the last ten (the cost of a turn must not grow with the
conversation, on any store) and each store with SQLite.

``sessions`` starts 3 nodes on one PostgreSQL or Redis and runs ``--sessions`` concurrent WebSocket tool loops
spread over them: throughput, p50/p99 turn latency, errors (the target is 0) and the nodes' CPU.

    python -m tether.bench.cluster per-turn --stores sqlite,postgres,redis --turns 200 --repeats 3
    python -m tether.bench.cluster sessions --store postgres --sessions 300 --turns 20

PostgreSQL and Redis are those of the test suite (127.0.0.1:5432 database ``test``, 127.0.0.1:6379); every run uses
a fresh schema or key prefix and removes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect

from tether.bench.cpu_per_turn import SCRIPT_NAME, TOOLS, machine, tool_output, write_script
from tether.bench.procstat import process_cpu_ns
from tether.testing import ServeProcess, serve_subprocess

POSTGRES_URL = "postgresql://127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class TurnCost:
    latency_s: float
    cpu_ns: int


@dataclass
class SessionStats:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def store_url(kind: str, workdir: Path, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'tether.db'}"
    if kind == "postgres":
        return f"{POSTGRES_URL}?schema={name}"
    if kind == "redis":
        return f"{REDIS_URL}?prefix={name}:"
    raise ValueError(f"unknown store {kind!r}: sqlite, postgres or redis")


async def remove_store(kind: str, name: str) -> None:
    """Drop the benchmark's schema or keys."""
    if kind == "postgres":
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    elif kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{name}:*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start : start + 500])
        finally:
            await client.aclose()


@contextlib.contextmanager
def nodes_on(kind: str, workdir: Path, count: int, script_turns: int) -> Iterator[list[ServeProcess]]:
    name = f"bench_{kind}_{uuid.uuid4().hex[:12]}"
    write_script(workdir / "scripts.json", script_turns)
    env = {
        "TETHER_SCRIPTED__SCRIPTS_FILE": str(workdir / "scripts.json"),
        "TETHER_LOG_LEVEL": "warning",
        "TETHER_STORE_URL": store_url(kind, workdir, name),
    }
    try:
        with contextlib.ExitStack() as stack:
            yield [stack.enter_context(serve_subprocess(workdir, env)) for _ in range(count)]
    finally:
        asyncio.run(remove_store(kind, name))


async def turn(ws: ClientConnection, body: dict[str, Any]) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "response.create", **body}).decode())
    while True:
        event = orjson.loads(await ws.recv())
        if event["type"] == "response.completed":
            response: dict[str, Any] = event["response"]
            return response
        if event["type"] in ("error", "response.failed"):
            raise RuntimeError(f"turn failed: {event.get('error') or event.get('response', {}).get('error')}")


def turn_body(number: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": f"script:{SCRIPT_NAME}", "tools": TOOLS, "store": True}
    if previous is None:
        body["input"] = [{"type": "message", "role": "user", "content": "Read every module, one by one."}]
    else:
        call = previous["output"][-1]
        body["previous_response_id"] = previous["id"]
        body["input"] = [{"type": "function_call_output", "call_id": call["call_id"], "output": tool_output(number)}]
    return body


async def chain(url: str, pid: int, turns: int) -> list[TurnCost]:
    costs: list[TurnCost] = []
    async with connect(url, compression=None, max_size=None) as ws:
        previous: dict[str, Any] | None = None
        for number in range(turns):
            cpu, started = process_cpu_ns(pid), time.perf_counter()
            previous = await turn(ws, turn_body(number, previous))
            costs.append(TurnCost(time.perf_counter() - started, process_cpu_ns(pid) - cpu))
    return costs


@dataclass(frozen=True)
class WindowCost:
    latency_ms: float
    cpu_ms: float


def window_cost(runs: list[list[TurnCost]], indices: range) -> WindowCost:
    """Per turn of the window: the median over the chains, averaged over the window's turns."""
    latency = statistics.mean(statistics.median(run[i].latency_s for run in runs) for i in indices) * 1e3
    cpu = statistics.mean(statistics.median(run[i].cpu_ns for run in runs) for i in indices) / 1e6
    return WindowCost(latency, cpu)


def per_turn(args: argparse.Namespace, console: Console) -> list[str]:
    kinds = args.stores.split(",")
    runs: dict[str, list[list[TurnCost]]] = {kind: [] for kind in kinds}
    with contextlib.ExitStack() as stack:
        nodes = {}
        for kind in kinds:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            [nodes[kind]] = stack.enter_context(nodes_on(kind, workdir, 1, args.turns + args.warmup))
        for node in nodes.values():
            asyncio.run(chain(node.ws_url, node.process.pid, args.warmup))
        for _ in range(args.repeats):  # interleaved: a burst of load from elsewhere hits every store alike
            for kind, node in nodes.items():
                runs[kind].append(asyncio.run(chain(node.ws_url, node.process.pid, args.turns)))
    windows = {"1–10": range(10), f"{args.turns - 9}–{args.turns}": range(args.turns - 10, args.turns)}
    costs = {(kind, label): window_cost(runs[kind], indices) for kind in kinds for label, indices in windows.items()}
    baseline = kinds[0]
    first = next(iter(windows))
    columns = ["store", "turns", "latency (ms)", f"× {baseline}", f"× turns {first}"]
    columns += ["gateway CPU (ms)", f"× {baseline}", f"× turns {first}"]
    table = Table(title=f"per turn along a {args.turns}-turn WebSocket chain (median of {args.repeats} chains)")
    for column in columns:
        table.add_column(column, justify="left" if column == "store" else "right")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for (kind, label), cost in costs.items():
        base, early = costs[(baseline, label)], costs[(kind, first)]
        row = [
            kind,
            label,
            f"{cost.latency_ms:.2f}",
            f"{cost.latency_ms / base.latency_ms:.2f}",
            f"{cost.latency_ms / early.latency_ms:.2f}",
            f"{cost.cpu_ms:.2f}",
            f"{cost.cpu_ms / base.cpu_ms:.2f}",
            f"{cost.cpu_ms / early.cpu_ms:.2f}",
        ]
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    return lines


async def session(url: str, turns: int, stats: SessionStats, start: asyncio.Event) -> None:
    await start.wait()
    try:
        async with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
            previous: dict[str, Any] | None = None
            for number in range(turns):
                started = time.perf_counter()
                previous = await turn(ws, turn_body(number, previous))
                stats.latencies_s.append(time.perf_counter() - started)
    except Exception as error:  # counted, not raised: the figure is how many sessions failed and why
        stats.errors.append(f"{type(error).__name__}: {error}")


async def run_sessions(nodes: list[ServeProcess], sessions: int, turns: int) -> tuple[SessionStats, float]:
    stats = SessionStats()
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(session(nodes[index % len(nodes)].ws_url, turns, stats, start)) for index in range(sessions)
    ]
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return stats, time.perf_counter() - began


def sessions(args: argparse.Namespace, console: Console) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp, nodes_on(args.store, Path(tmp), args.nodes, args.turns + 1) as nodes:
        cpu_before = sum(process_cpu_ns(node.process.pid) for node in nodes)
        stats, wall_s = asyncio.run(run_sessions(nodes, args.sessions, args.turns))
        cpu_s = (sum(process_cpu_ns(node.process.pid) for node in nodes) - cpu_before) / 1e9
    latencies = sorted(stats.latencies_s)
    done = len(latencies)
    p50 = latencies[done // 2] * 1e3 if latencies else float("nan")
    p99 = latencies[min(done - 1, int(done * 0.99))] * 1e3 if latencies else float("nan")
    rows = [
        ("sessions × turns", f"{args.sessions} × {args.turns} over {args.nodes} nodes ({args.store})"),
        ("turns completed", str(done)),
        ("errors", f"{len(stats.errors)}" + (f" (first: {stats.errors[0]})" if stats.errors else "")),
        ("throughput", f"{done / wall_s:.1f} turns/s over {wall_s:.1f} s"),
        ("turn latency p50 / p99", f"{p50:.1f} ms / {p99:.1f} ms"),
        ("gateway CPU (3 nodes)", f"{cpu_s:.2f} s, {cpu_s / max(done, 1) * 1e3:.2f} ms per turn"),
    ]
    table = Table(title="concurrent WebSocket tool loops")
    table.add_column("measure")
    table.add_column("value")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return ["| measure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    chain_cmd = commands.add_parser("per-turn", help="latency and CPU per turn along a long chain, per store")
    chain_cmd.add_argument("--stores", default="sqlite,postgres,redis")
    chain_cmd.add_argument("--turns", type=int, default=200)
    chain_cmd.add_argument("--repeats", type=int, default=3)
    chain_cmd.add_argument("--warmup", type=int, default=20)
    many = commands.add_parser("sessions", help="concurrent WebSocket sessions over several nodes")
    many.add_argument("--store", choices=["postgres", "redis"], default="postgres")
    many.add_argument("--nodes", type=int, default=3)
    many.add_argument("--sessions", type=int, default=300)
    many.add_argument("--turns", type=int, default=20)
    for command in (chain_cmd, many):
        command.add_argument("--report", type=Path, help="append a markdown section to this file")
    args = parser.parse_args(argv)
    if args.command == "per-turn" and args.turns < 20:
        parser.error("--turns must be at least 20")
    console = Console()
    began, load_before = time.gmtime(), os.getloadavg()[0]
    lines = per_turn(args, console) if args.command == "per-turn" else sessions(args, console)
    if args.report:
        invocation = shlex.join(["python", "-m", "tether.bench.cluster", *(sys.argv[1:] if argv is None else argv)])
        header = [
            f"## `{args.command}` — {time.strftime('%Y-%m-%d %H:%M UTC', began)}",
            "",
            f"`{invocation}`",
            "",
            f"{machine()}; load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
            "",
        ]
        with args.report.open("a") as report:
            report.write("\n".join([*header, *lines, "", ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
