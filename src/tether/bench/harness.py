"""Runs the benchmark matrix: profiles × tasks × arms × repeats, arms interleaved, through the shaping proxy."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from tether.bench.arms import ARMS, TurnMetrics
from tether.bench.workloads import Task
from tether.netem import PROFILES, ShapingProxy
from tether.testing import ServeProcess, serve_subprocess


@dataclass(frozen=True, slots=True)
class BenchConfig:
    profiles: list[str]
    arms: list[str]
    tasks: list[Task]
    repeats: int
    seed: int
    ttft_s: float
    tokens_per_second: float


@dataclass(slots=True)
class Run:
    profile: str
    arm: str
    task: str
    repeat: int
    completed: bool
    task_s: float
    app_bytes_up: int
    wire_bytes_up: int
    wire_bytes_down: int
    payload_bytes_up: int
    payload_bytes_down: int
    connections: int
    turns: list[TurnMetrics] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    error: str | None = None


async def run_one(server: ServeProcess, config: BenchConfig, profile: str, arm: str, task: Task, repeat: int) -> Run:
    seed = zlib.crc32(f"{config.seed}/{profile}/{task.name}/{repeat}".encode())  # stable across processes
    async with ShapingProxy("127.0.0.1", server.port, PROFILES[profile], seed=seed) as proxy:
        started = time.perf_counter()
        error: str | None = None
        result = None
        try:
            result = await ARMS[arm](f"http://127.0.0.1:{proxy.port}/v1", task)
        except Exception as exc:  # a failed task is a data point, not a crash of the benchmark
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
    connections = proxy.connections
    return Run(
        profile=profile,
        arm=arm,
        task=task.name,
        repeat=repeat,
        completed=error is None,
        task_s=elapsed,
        app_bytes_up=sum(t.app_bytes_up for t in result.turns) if result else 0,
        wire_bytes_up=sum(c.up.wire_bytes for c in connections),
        wire_bytes_down=sum(c.down.wire_bytes for c in connections),
        payload_bytes_up=sum(c.up.bytes for c in connections),
        payload_bytes_down=sum(c.down.bytes for c in connections),
        connections=len(connections),
        turns=result.turns if result else [],
        transcript=result.transcript if result else [],
        error=error,
    )


def write_scripts(path: Path, tasks: list[Task]) -> None:
    path.write_text(json.dumps({"scripts": {task.name: task.script() for task in tasks}}))


def run_matrix(config: BenchConfig, workdir: Path, journal: Path | None = None) -> list[Run]:
    """Start ``tether serve`` and run every cell; arms are rotated per cell so no arm always goes first.

    Each finished run is appended to ``journal`` (JSON lines) at once, so an interrupted benchmark keeps its data.
    """
    write_scripts(workdir / "scripts.json", config.tasks)
    env = {
        "TETHER_SCRIPTED__SCRIPTS_FILE": str(workdir / "scripts.json"),
        "TETHER_SCRIPTED__TTFT_S": str(config.ttft_s),
        "TETHER_SCRIPTED__TOKENS_PER_SECOND": str(config.tokens_per_second),
        "TETHER_LOG_LEVEL": "warning",
    }
    runs: list[Run] = []
    cells = [(r, p, t) for r in range(config.repeats) for p in config.profiles for t in config.tasks]
    with serve_subprocess(workdir, env) as server, Progress() as progress:
        bar = progress.add_task("benchmark", total=len(cells) * len(config.arms))
        for index, (repeat, profile, task) in enumerate(cells):
            shift = index % len(config.arms)
            for arm in config.arms[shift:] + config.arms[:shift]:
                progress.update(bar, description=f"{profile} · {task.name} · {arm}")
                run = asyncio.run(run_one(server, config, profile, arm, task, repeat))
                runs.append(run)
                if journal is not None:
                    with journal.open("a") as handle:
                        handle.write(json.dumps(asdict(run)) + "\n")
                progress.advance(bar)
    return runs


def save_runs(runs: list[Run], config: BenchConfig, path: Path, meta: dict[str, Any]) -> None:
    document = {
        "meta": meta,
        "config": {**asdict(config), "tasks": [_task_summary(task) for task in config.tasks]},
        "runs": [asdict(run) for run in runs],
    }
    path.write_text(json.dumps(document, indent=1))


def _task_summary(task: Task) -> dict[str, Any]:
    return {
        "name": task.name,
        "turns": task.turns,
        "tool_calls": task.tool_calls,
        "instructions_bytes": len(task.instructions.encode()),
        "tools": len(task.tools),
        "tool_output_bytes": sum(len(call.output.encode()) for step in task.steps for call in step.calls),
    }
