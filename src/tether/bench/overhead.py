"""Gateway overhead per turn for each upstream: tether in front of a fake upstream against the fake alone.

For every turn of a tool loop, the client (the official ``openai`` SDK, streaming) runs the turn through tether;
then the exact request tether sent upstream is replayed straight to the same fake, and both are timed to the last
byte. The difference is what tether adds: parsing, context resolution, translation, the stream log, the commit.
Turns are interleaved, so both sides see the same machine load.

    python -m tether.bench.overhead --turns 60 --report docs/bench-overhead.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
from rich.console import Console
from rich.table import Table

from tether.bench.cpu_per_turn import machine
from tether.cli import configure_logging
from tether.protocol.sse import SSEDecoder
from tether.providers.fakes import FakeAnthropic, FakeChatCompletions, FakeResponsesUpstream
from tether.settings import Settings
from tether.testing import serve_subprocess

PATH_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
TOOLS = [{"type": "function", "name": "read_file", "description": "Read a file.", "parameters": PATH_SCHEMA}]
OUTPUT = "def handler(request):\n    return compute(request.payload)\n" * 40  # ~2 KB of tool output per turn


def script(turns: int) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": f"src/m{i}.py"}}]} for i in range(turns - 1)
    ]
    return [*steps, {"text": "Done."}]


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    kind: str
    fake: Callable[[list[dict[str, Any]]], AbstractContextManager[Any]]
    replay_path: Callable[[Any], str]


UPSTREAMS = [
    Upstream("chat-completions", "chat-completions", lambda s: FakeChatCompletions(script=s), lambda r: r.path),
    Upstream("anthropic", "anthropic", lambda s: FakeAnthropic(script=s), lambda r: r.path),
    Upstream("openai-responses (http)", "openai-responses", lambda s: FakeResponsesUpstream(script=s),
             lambda r: "/v1/responses"),
]  # fmt: skip


async def measure(upstream: Upstream, turns: int) -> list[tuple[float, float]]:
    samples: list[tuple[float, float]] = []
    with upstream.fake(script(turns)) as fake:
        env = {
            "TETHER_STORE_URL": "memory://",
            "TETHER_LOG_LEVEL": "warning",
            "TETHER_PROVIDERS": json.dumps({"up": {"kind": upstream.kind, "base_url": fake.base_url}}),
            "TETHER_ROUTES": json.dumps([{"model": "up-*", "provider": "up"}]),
        }
        origin = fake.base_url.split("/v1")[0]
        with tempfile.TemporaryDirectory() as workdir, serve_subprocess(Path(workdir), env) as server:
            async with (
                httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
                httpx.AsyncClient(base_url=origin, timeout=30) as raw,
            ):
                previous: dict[str, Any] | None = None
                for _ in range(turns):
                    body: dict[str, Any] = {"model": "up-model", "tools": TOOLS, "stream": True}
                    if previous is None:
                        body["input"] = "Read every module."
                    else:
                        call = previous["output"][0]
                        body["previous_response_id"] = previous["id"]
                        body["input"] = [{"type": "function_call_output", "call_id": call["call_id"], "output": OUTPUT}]
                    started = time.perf_counter()
                    received = bytearray()
                    async with client.stream("POST", "/responses", json=body) as reply:
                        async for chunk in reply.aiter_bytes():
                            received += chunk
                    through_tether = time.perf_counter() - started
                    previous = _completed(bytes(received))
                    sent = fake.requests[-1]
                    started = time.perf_counter()
                    async with raw.stream("POST", upstream.replay_path(sent), json=sent.body) as direct:
                        async for _chunk in direct.aiter_bytes():
                            pass
                    alone = time.perf_counter() - started
                    samples.append((through_tether, alone))
    return samples


def _completed(stream: bytes) -> dict[str, Any]:
    for message in SSEDecoder().decode(stream):
        if message.data != "[DONE]":
            event = orjson.loads(message.data)
            if event["type"] == "response.completed":
                response: dict[str, Any] = event["response"]
                return response
    raise RuntimeError("the turn did not complete")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    console = Console(width=140)
    configure_logging(Settings(log_level="warning"))  # as a production deployment would run: no per-turn log lines
    rows = []
    for upstream in UPSTREAMS:
        samples = asyncio.run(measure(upstream, args.turns))[1:]  # the first turn warms up connections
        overhead = [(t - a) * 1000 for t, a in samples]
        alone = [a * 1000 for _, a in samples]
        rows.append((upstream.name, statistics.median(alone), statistics.median(overhead), p99(overhead), len(samples)))
    table = Table(title=f"tether overhead per turn ({args.turns}-turn tool loop, streamed, ms)")
    for column in ("upstream", "fake alone, median", "overhead, median", "overhead, p99", "turns"):
        table.add_column(column, justify="left" if column == "upstream" else "right")
    for name, alone_ms, median_ms, p99_ms, count in rows:
        table.add_row(name, f"{alone_ms:.2f}", f"{median_ms:.2f}", f"{p99_ms:.2f}", str(count))
    console.print(table)
    if args.report:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            "# Gateway overhead per turn, by upstream",
            "",
            f"- Date: {now}",
            f"- Machine: {machine()}",
            f"- Command: `python -m tether.bench.overhead --turns {args.turns} --report {args.report}`",
            "- Method: a tool loop (streaming SSE read as raw bytes on both paths, `previous_response_id` + one ~2 KB"
            " `function_call_output` per turn) through a real `tether serve` process (memory store) to a"
            " fake upstream; after each turn the exact request tether sent upstream is replayed straight to the same"
            " fake. Overhead = time through tether − time of the replay, both to the last byte; the first turn"
            " (connection warm-up) is dropped. The client and the fake share one process; tether runs in its own;"
            " all share this machine's 2 cores.",
            "",
            "| upstream | fake alone, median (ms) | overhead, median (ms) | overhead, p99 (ms) | turns |",
            "|---|---|---|---|---|",
            *(f"| {n} | {a:.2f} | {m:.2f} | {p:.2f} | {c} |" for n, a, m, p, c in rows),
            "",
        ]
        args.report.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
