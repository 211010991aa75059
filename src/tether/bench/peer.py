"""tether side by side with agentic-api (vllm-project, Rust), behind the same fake upstream, in one run.

Both gateways talk to the same stateless ``/v1/responses`` fake: agentic-api as it does by default, tether through
its openai-responses provider declared ``stateful = false``. tether also runs a chain through its chat-completions
provider and one through its openai-responses provider against a fake that keeps state. The direct path sends the
same chain straight to the stateless fake (the whole context every turn, as both gateways do), so each gateway's
added latency is its turn's time minus the direct turn's. Arms are interleaved turn by turn (and the concurrency
runs alternate), so every arm sees the same machine load. Writes ``docs/bench-peer.md``.

    ./dev bench-peer                     # the full run (installs agentic-api's pinned wheel into .bench-peer/venv)
    ./dev bench-peer --quick             # a structural run of a few seconds (the test suite's smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

from tether.bench import peer_profile, peer_report
from tether.bench.peer_load import Chain, DirectArm, Load, Timed, WSArm, http_sessions, idle_sockets, ws_sessions
from tether.bench.peer_procs import (
    DEFAULT_AGENTIC,
    Gateway,
    agentic_server,
    gc_tracked_objects,
    rss_bytes,
    tether_server,
    upstreams,
)

AGENTIC_VERSION = "0.9.0"
# The chain arms: the name in the tables, the gateway ("agentic-api" or "tether") and the model it is asked for.
ARMS = (
    ("agentic-api", "agentic-api", "bench-model"),
    ("tether", "tether", "peer-model"),
    ("tether via chat-completions", "tether", "chat-model"),
    ("tether, stateful upstream", "tether", "stateful-model"),
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How much the run does."""

    chains: int
    turns: int
    ws_sessions: tuple[int, ...]
    http_sessions: int
    loop_turns: int
    repeats: int
    idle: int
    grace_s: float


FULL = Plan(chains=3, turns=100, ws_sessions=(200, 500), http_sessions=200, loop_turns=10, repeats=3, idle=1000,
            grace_s=30.0)  # fmt: skip
QUICK = Plan(chains=1, turns=12, ws_sessions=(4, 8), http_sessions=4, loop_turns=3, repeats=3, idle=10, grace_s=0.5)


@dataclass(slots=True)
class Results:
    """Everything measured, by arm or gateway name."""

    plan: Plan
    walls: dict[str, dict[bool, list[list[int]]]] = field(default_factory=dict)  # arm → store → chain → turn ns
    cpus: dict[str, dict[bool, list[list[int]]]] = field(default_factory=dict)
    loads: dict[str, list[dict[str, Load]]] = field(default_factory=dict)  # gateway → repeat → kind → load
    idle_bytes: dict[str, float] = field(default_factory=dict)
    rss_fresh: dict[str, int] = field(default_factory=dict)
    rss_rest: dict[str, int] = field(default_factory=dict)
    profile: peer_profile.Profile | None = None
    profiled: str = ""
    gc_fresh: int | None = None
    gc_rest: int | None = None
    failures: list[str] = field(default_factory=list)

    def added_ms(self, arm: str, store: bool, turns: range) -> float:
        """Mean over ``turns`` of the per-turn median (over chains) of the arm's time minus the direct path's."""
        arm_walls, direct = self.walls[arm][store], self.walls["direct"][store]
        per_turn = [statistics.median(a[t] - d[t] for a, d in zip(arm_walls, direct, strict=True)) for t in turns]
        return statistics.mean(per_turn) / 1e6

    def cpu_ms(self, arm: str, store: bool, turns: range) -> float:
        chains = self.cpus[arm][store]
        return statistics.mean(statistics.median(chain[t] for chain in chains) for t in turns) / 1e6


async def chains(results: Results, gateways: dict[str, Gateway], stateless_url: str) -> None:
    """The latency and CPU arms, each store mode, interleaved turn by turn (the order rotates every turn)."""
    plan = results.plan
    async with httpx.AsyncClient(base_url=stateless_url + "/", timeout=60) as direct_client:
        for store in (False, True):
            for _ in range(plan.chains):
                arms: dict[str, WSArm | DirectArm] = {
                    name: WSArm(gateways[gateway].ws_url, gateways[gateway].pid, Chain(model, store))
                    for name, gateway, model in ARMS
                }
                arms["direct"] = DirectArm(direct_client, Chain("bench-model", store))
                timed: dict[str, list[Timed]] = {name: [] for name in arms}
                for arm in arms.values():
                    if isinstance(arm, WSArm):
                        await arm.__aenter__()
                try:
                    names = list(arms)
                    for turn in range(plan.turns):
                        shift = turn % len(names)
                        for name in names[shift:] + names[:shift]:
                            timed[name].append(await arms[name].turn())
                finally:
                    for arm in arms.values():
                        if isinstance(arm, WSArm):
                            await arm.__aexit__()
                for name, samples in timed.items():
                    results.walls.setdefault(name, {}).setdefault(store, []).append([s.wall_ns for s in samples])
                    results.cpus.setdefault(name, {}).setdefault(store, []).append([s.cpu_ns for s in samples])


async def concurrency(results: Results, gateways: dict[str, Gateway]) -> None:
    """The throughput runs, repeated on the same processes; the gateways alternate within each repeat."""
    plan = results.plan
    order = [("agentic-api", "bench-model"), ("tether", "peer-model")]
    for repeat in range(plan.repeats):
        for name, model in order[repeat % 2 :] + order[: repeat % 2]:
            gateway = gateways[name]
            runs: dict[str, Load] = {}
            for sessions in plan.ws_sessions:
                runs[f"ws{sessions}"] = await ws_sessions(gateway.ws_url, model, sessions, plan.loop_turns)
            runs[f"http{plan.http_sessions}"] = await http_sessions(
                gateway.http_url, model, plan.http_sessions, plan.loop_turns
            )
            results.loads.setdefault(name, []).append(runs)


async def profiled(results: Results, tether: Gateway, out: Path) -> None:
    """One more run of the largest WebSocket load, not counted, with py-spy sampling tether."""
    sessions = max(results.plan.ws_sessions)
    with peer_profile.sampling(tether.pid, out):
        await asyncio.sleep(1.0)  # py-spy takes a moment to attach; nothing to synchronise on from here
        started = time.monotonic()
        for _ in range(20):  # at least a few seconds of samples, even from a quick run's small load
            await ws_sessions(tether.ws_url, "peer-model", sessions, results.plan.loop_turns)
            if time.monotonic() - started > 3.0:
                break
    results.profile = peer_profile.summarise(out)
    results.profiled = f"{sessions} WebSocket sessions × {results.plan.loop_turns}-turn tool loops"


async def idle(results: Results, gateways: dict[str, Gateway]) -> None:
    """Memory per idle WebSocket: the RSS growth with ``plan.idle`` connections open, per connection."""
    for name, gateway in gateways.items():
        before = rss_bytes(gateway.pid)
        async with idle_sockets(gateway.ws_url, results.plan.idle) as opened:
            await asyncio.sleep(0.5)  # a measurement pause, not synchronisation: let each server settle its buffers
            grown = rss_bytes(gateway.pid) - before
        if opened < results.plan.idle:
            results.failures.append(f"{name}: {results.plan.idle - opened} idle WebSockets did not open")
        results.idle_bytes[name] = grown / max(1, opened)


def run(plan: Plan, agentic: Path, workdir: Path) -> Results:
    results = Results(plan)
    with upstreams(plan.turns) as urls:
        root = urls["stateless"].removesuffix("/v1")
        with (
            agentic_server(agentic, root, workdir) as peer,
            tether_server(urls, workdir, plan.grace_s) as tether,
        ):
            gateways = {peer.name: peer, tether.name: tether}
            results.rss_fresh = {name: rss_bytes(g.pid) for name, g in gateways.items()}
            results.gc_fresh = gc_tracked_objects(tether)
            asyncio.run(idle(results, gateways))
            asyncio.run(chains(results, gateways, urls["stateless"]))
            asyncio.run(concurrency(results, gateways))
            asyncio.run(profiled(results, tether, workdir / "tether.profile"))
            time.sleep(plan.grace_s + 1.0)  # the resume grace period has to pass: that is what is measured
            results.rss_rest = {name: rss_bytes(g.pid) for name, g in gateways.items()}
            results.gc_rest = gc_tracked_objects(tether)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a structural run of a few seconds")
    parser.add_argument("--report", type=Path, default=None, help="default: docs/bench-peer.md (full runs only)")
    parser.add_argument("--agentic-server", type=Path, default=DEFAULT_AGENTIC, help="agentic-api's binary")
    parser.add_argument("--chains", type=int, help="chains per store mode (default 3)")
    parser.add_argument("--turns", type=int, help="turns per chain (default 100, at least 20)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.chains:
        plan = dataclasses.replace(plan, chains=args.chains)
    if args.turns:
        plan = dataclasses.replace(plan, turns=args.turns)
    if not args.agentic_server.exists():
        parser.error(f"{args.agentic_server} not found: ./dev bench-peer installs agentic-api {AGENTIC_VERSION}")
    with tempfile.TemporaryDirectory(prefix="tether-bench-peer-") as tmp:
        results = run(plan, args.agentic_server, Path(tmp))
    report = args.report or (None if args.quick else Path("docs/bench-peer.md"))
    command = "./dev bench-peer" + (" --quick" if args.quick else "")
    page = peer_report.render(results, command=command, load=os.getloadavg(), version=AGENTIC_VERSION)
    print(page)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
