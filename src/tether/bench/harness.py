"""Runs the benchmark matrix: profiles × tasks × arms × repeats, arms interleaved, through an emulated network.

Two tiers emulate the network. ``packet``: the server runs in a network namespace of its own and the client code in
another, joined by the packet emulator (``tether.netem.PacketLink``), so both ends' kernel TCP see the RTT and the
loss together and retransmit by themselves. ``proxy``: a shaping TCP proxy on 127.0.0.1 in front of the server
(loss is an RTO stall that TCP never sees). ``auto`` uses the packet tier where it can be set up and falls back to
the proxy with the reason; ``both`` runs every cell in each tier. Every run records its tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from rich.progress import Progress

from tether.bench.agent_arms import AGENT_ARMS, AgentPlaces, agent_upstreams, gateway_env
from tether.bench.agent_turns import previous_task
from tether.bench.arms import ARMS, ArmResult, TurnMetrics
from tether.bench.packet_tier import PacketServer, packet_server
from tether.bench.workloads import Task
from tether.netem import ShapingProxy, probe_packet_tier, profile_named
from tether.testing import ServeProcess, serve_subprocess

TierChoice: TypeAlias = Literal["auto", "packet", "proxy", "both"]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    profiles: list[str]
    arms: list[str]
    tasks: list[Task]
    repeats: int
    seed: int
    ttft_s: float
    tokens_per_second: float
    tier: TierChoice = "proxy"


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
    tier: str = "proxy"
    link: dict[str, Any] | None = None
    """The packet emulator's counters for the run (packet tier only): drops by reason, retransmitted payload."""
    edge: dict[str, Any] | None = None
    """The edge's own counters (the agent-API arms through ``tether edge``): ``uplink_bytes`` is its frames to the
    gateway before compression, ``request_bytes`` what the agent sent it."""


def run_seed(config: BenchConfig, profile: str, task: Task, repeat: int) -> int:
    """The seed of one cell's random draws, the same in every arm and tier (stable across processes)."""
    return zlib.crc32(f"{config.seed}/{profile}/{task.name}/{repeat}".encode())


async def run_one(server: ServeProcess, config: BenchConfig, profile: str, arm: str, task: Task, repeat: int,
                  places: AgentPlaces | None = None) -> Run:  # fmt: skip
    """One run in the proxy tier; an agent-API arm needs ``places`` (its shaped link may lead to a fake upstream)."""
    seed = run_seed(config, profile, task, repeat)
    agent = AGENT_ARMS.get(arm)
    if agent is not None and places is None:
        raise ValueError(f"the agent-API arm {arm!r} needs the places of its servers")
    target = agent.target(places) if agent is not None and places is not None else f"http://127.0.0.1:{server.port}"
    host, port = target.removeprefix("http://").rsplit(":", 1)
    async with ShapingProxy(host, int(port), profile_named(profile), seed=seed) as proxy:
        shaped = f"http://127.0.0.1:{proxy.port}"
        error: str | None = None
        result = None
        elapsed = 0.0
        try:
            async with contextlib.AsyncExitStack() as stack:
                if agent is not None and places is not None:
                    play = await stack.enter_async_context(agent.prepared(places, shaped, task))
                else:
                    play = functools.partial(ARMS[arm], shaped + "/v1", task)
                started = time.perf_counter()
                try:
                    result = await play()
                finally:
                    elapsed = time.perf_counter() - started
        except Exception as exc:  # a failed task is a data point, not a crash of the benchmark
            error = f"{type(exc).__name__}: {exc}"
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
        edge=result.edge if result else None,
    )


def write_scripts(path: Path, tasks: list[Task]) -> None:
    path.write_text(json.dumps({"scripts": {task.name: task.script() for task in tasks}}))


def run_packet(server: PacketServer, config: BenchConfig, profile: str, arm: str, task: Task, repeat: int) -> Run:
    """One run in the packet tier: the arm on a thread in the client namespace, the emulator's counters after it."""
    server.link.configure(profile_named(profile), seed=run_seed(config, profile, task, repeat))

    async def play() -> ArmResult:
        return await ARMS[arm](server.base_url, task)

    started = time.perf_counter()
    error: str | None = None
    result: ArmResult | None = None
    try:
        result = server.link.call("client", lambda: asyncio.run(play()))
    except Exception as exc:  # a failed task is a data point, not a crash of the benchmark
        error = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - started
    stats = server.link.stats()
    up, down = stats["up"], stats["down"]
    return Run(
        profile=profile,
        arm=arm,
        task=task.name,
        repeat=repeat,
        completed=error is None,
        task_s=elapsed,
        app_bytes_up=sum(t.app_bytes_up for t in result.turns) if result else 0,
        wire_bytes_up=up["bytes"],
        wire_bytes_down=down["bytes"],
        payload_bytes_up=up["tcp_payload_bytes"],
        payload_bytes_down=down["tcp_payload_bytes"],
        connections=stats["connections"],
        turns=result.turns if result else [],
        transcript=result.transcript if result else [],
        error=error,
        tier="packet",
        link=stats,
    )


def resolve_tiers(choice: TierChoice) -> tuple[list[str], str]:
    """The tiers to run for ``choice``, and a sentence on why (the reason the packet tier is unavailable, if so)."""
    if choice == "proxy":
        return ["proxy"], "proxy tier requested"
    support = probe_packet_tier()
    if support.available:
        return (["proxy", "packet"] if choice == "both" else ["packet"]), support.reason
    if choice == "packet":
        raise RuntimeError(f"the packet tier is unavailable: {support.reason}")
    return ["proxy"], f"packet tier unavailable ({support.reason}): fell back to the proxy tier"


def run_matrix(config: BenchConfig, workdir: Path, journal: Path | None = None) -> list[Run]:
    """Start ``tether serve`` and run every cell in each tier; arms are rotated per cell so none always goes first.

    Each finished run is appended to ``journal`` (JSON lines) at once, so an interrupted benchmark keeps its data.
    """
    tiers, _ = resolve_tiers(config.tier)
    return run_tiers(config, tiers, workdir, journal)


def run_tiers(config: BenchConfig, tiers: list[str], workdir: Path, journal: Path | None = None) -> list[Run]:
    """``run_matrix`` for tiers already resolved.

    With agent-API arms, the same-API fake upstreams run beside ``tether serve`` (which routes the agents' models
    to them) and the agents' previous tasks join the scripts.

    Raises:
        ValueError: agent-API arms in the packet tier (their fakes and edge run in this process's namespace).
    """
    agent = any(arm in AGENT_ARMS for arm in config.arms)
    if agent and "packet" in tiers:
        raise ValueError("the agent-API arms (direct-*, edge-*) run in the proxy tier only: pass --tier proxy")
    scripted = [*config.tasks, *(previous_task(task) for task in config.tasks if agent)]
    write_scripts(workdir / "scripts.json", scripted)
    env = {
        "TETHER_SCRIPTED__SCRIPTS_FILE": str(workdir / "scripts.json"),
        "TETHER_SCRIPTED__TTFT_S": str(config.ttft_s),
        "TETHER_SCRIPTED__TOKENS_PER_SECOND": str(config.tokens_per_second),
        "TETHER_LOG_LEVEL": "warning",
    }
    runs: list[Run] = []
    cells = [(r, p, t) for r in range(config.repeats) for p in config.profiles for t in config.tasks]
    with Progress() as progress, contextlib.ExitStack() as stack:
        upstreams = {}
        if agent:
            pace = {"ttft_s": config.ttft_s, "tokens_per_second": config.tokens_per_second}
            upstreams = stack.enter_context(agent_upstreams(scripted, **pace))
            env.update(gateway_env(upstreams))
        bar = progress.add_task("benchmark", total=len(cells) * len(config.arms) * len(tiers))
        for tier in tiers:
            server_context = (
                packet_server(workdir, env)
                if tier == "packet"
                else serve_subprocess(workdir, env, startup_timeout=120.0)
            )  # a loaded machine starts slowly
            with server_context as server:
                gateway = "" if isinstance(server, PacketServer) else f"http://127.0.0.1:{server.port}"
                places = AgentPlaces(gateway, upstreams, workdir)
                for index, (repeat, profile, task) in enumerate(cells):
                    shift = index % len(config.arms)
                    for arm in config.arms[shift:] + config.arms[:shift]:
                        progress.update(bar, description=f"{tier} · {profile} · {task.name} · {arm}")
                        if isinstance(server, PacketServer):
                            run = run_packet(server, config, profile, arm, task, repeat)
                        else:
                            run = asyncio.run(run_one(server, config, profile, arm, task, repeat, places))
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
