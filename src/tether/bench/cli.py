"""``tether bench``: what tether saves, measured side by side on emulated networks."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import json
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from tether.bench.agent_arms import AGENT_ARMS
from tether.bench.arms import ARMS, TurnMetrics
from tether.bench.cpu_per_turn import machine
from tether.bench.harness import BenchConfig, Run, resolve_tiers, run_tiers, save_runs
from tether.bench.report import (
    agent_api_tables,
    cells,
    charts,
    comparison_tables,
    headline,
    markdown_table,
    table,
    tier_table,
)
from tether.bench.workloads import TASK_KINDS, long_session, make_task, standard_tasks
from tether.netem import ALIASES, PROFILES

QUICK_PROFILES = ["loopback", "mobile-4g"]
STANDARD_ARMS = ["stateless-http", "http-previous-id", "ws", "ws-deflate"]


def _whole_number(minimum: int, *, or_zero: bool = False) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (or 0, meaning none): a smaller one ran the bench and
    then failed with a traceback drawing its charts (or building a task), or ran the full matrix for 0 repeats."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum and not (or_zero and value == 0):
            raise argparse.ArgumentTypeError(
                f"{value} is too small: at least {minimum}" + (" (or 0)" if or_zero else "")
            )
        return value

    return parse


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tether bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (2 profiles, fast model, 1 repeat)")
    parser.add_argument(
        "--profiles", default=None, help=f"comma list of {', '.join(PROFILES)} (or the old names {', '.join(ALIASES)})"
    )
    parser.add_argument("--tier", choices=["auto", "packet", "proxy", "both"], default="auto",
                        help="network emulation: packet (namespaces + packet emulator), proxy (shaping TCP proxy), "
                             "both (every cell in each), auto (packet where it can be set up, else proxy)")  # fmt: skip
    parser.add_argument("--arms", default=",".join(STANDARD_ARMS),
                        help=f"comma list of {', '.join([*ARMS, *AGENT_ARMS])}; 'agents' for every agent-API arm "
                             "(direct-<api>, edge-<api>, edge-<api>-cold: the proxy tier only)")  # fmt: skip
    parser.add_argument("--repeats", type=_whole_number(1), default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--long-session", type=_whole_number(2, or_zero=True), default=0, metavar="TURNS",
                        help="add a long task (≥ 50 turns)")  # fmt: skip
    parser.add_argument("--tasks", default=None, help="comma list of fix-failing-test, add-feature, refactor; none")
    parser.add_argument("--ttft", type=float, default=None, help="model time to first token, seconds")
    parser.add_argument("--tps", type=float, default=None, help="model output tokens per second")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench-results/<time>)")
    parser.add_argument("--from-results", type=Path, default=None, metavar="JSON",
                        help="do not run: write the report and charts of a saved results.json into --out")  # fmt: skip
    return parser.parse_args(argv)


def bench_console() -> Console:
    """The terminal's own width (``COLUMNS`` when not a terminal): rich wraps the table's cells to fit it."""
    return Console()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = bench_console()
    if args.from_results is not None:
        out = args.out or args.from_results.parent
        out.mkdir(parents=True, exist_ok=True)
        meta, runs = load_runs(args.from_results)
        write_report(console, out, meta, runs)
        return 0
    quick = args.quick
    profiles = args.profiles.split(",") if args.profiles else (QUICK_PROFILES if quick else list(PROFILES))
    tasks = standard_tasks(args.seed)
    if args.tasks:
        kinds = [kind for kind in args.tasks.split(",") if kind != "none"]
        for kind in kinds:
            if kind not in TASK_KINDS:
                close = difflib.get_close_matches(kind, TASK_KINDS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                console.print(f"[red]unknown task {kind!r}: choose from {', '.join(TASK_KINDS)}{hint}", soft_wrap=True)
                return 2
        tasks = [make_task(kind, args.seed) for kind in kinds]
    if args.long_session:
        tasks.append(long_session(args.seed, args.long_session))
    if not tasks:
        console.print("[red]no task to run: --tasks none needs --long-session TURNS", soft_wrap=True)
        return 2
    config = BenchConfig(
        profiles=profiles,
        arms=[name for arm in args.arms.split(",") for name in (list(AGENT_ARMS) if arm == "agents" else [arm])],
        tasks=tasks,
        repeats=args.repeats or (1 if quick else 3),
        seed=args.seed,
        ttft_s=args.ttft if args.ttft is not None else (0.02 if quick else 0.4),
        tokens_per_second=args.tps if args.tps is not None else (2000.0 if quick else 150.0),
        tier=args.tier,
    )
    known = {*PROFILES, *ALIASES}
    unknown = [p for p in config.profiles if p not in known]
    unknown += [a for a in config.arms if a not in ARMS and a not in AGENT_ARMS]
    if unknown:
        console.print(f"[red]unknown profile or arm: {', '.join(unknown)}")
        return 2
    agents = [arm for arm in config.arms if arm in AGENT_ARMS]
    if agents and config.tier in ("packet", "both"):
        console.print(f"[red]the agent-API arms ({', '.join(agents)}) run in the proxy tier only: use --tier proxy")
        return 2
    if agents:
        config = dataclasses.replace(config, tier="proxy")
    stamp = datetime.datetime.now(datetime.UTC)
    out = args.out or Path("bench-results") / stamp.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    try:
        tiers, tier_reason = resolve_tiers(config.tier)
        if agents and args.tier == "auto":
            tier_reason = "the agent-API arms run in the proxy tier only"
    except RuntimeError as exc:
        console.print(f"[red]{exc}")
        return 2
    meta = {
        "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "tether bench " + " ".join(sys.argv[2:] if argv is None else argv),
        "emulation_tier": ", ".join(TIER_NAMES[tier] for tier in tiers),
        "tier_reason": tier_reason,
        "python": platform.python_version(),
    }
    console.print(f"tether bench → {out}  (tier: {', '.join(tiers)}; {tier_reason})")
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_tiers(config, tiers, Path(tmp), journal=out / "runs.jsonl")
    save_runs(runs, config, out / "results.json", meta)
    failed = write_report(console, out, meta, runs)
    return 1 if failed else 0


TIER_NAMES = {
    "packet": "packet (client and server in network namespaces, packet emulator on TUN devices: delay, jitter, "
              "rate, loss, loss bursts, outages; kernel TCP retransmits)",
    "proxy": "proxy (Python shaping proxy: delay, rate, loss stalls, outages; no loss bursts)",
}  # fmt: skip


def write_report(console: Console, out: Path, meta: dict[str, Any], runs: list[Run]) -> list[Run]:
    """Print the table, draw the charts, write report.md; returns the runs that failed."""
    summary = cells(runs)
    console.print(table(summary))
    failed = [run for run in runs if not run.completed]
    for run in failed:
        console.print(f"[red]failed: {run.profile} {run.task} {run.arm}: {run.error}")
    images = []
    try:
        tier = "packet" if any(run.tier == "packet" for run in runs) else "proxy"
        images = charts([run for run in runs if run.tier == tier], [c for c in summary if c.tier == tier], out)
    except ImportError:
        console.print("matplotlib is not installed: no charts (pip install 'tether-gateway[bench]')")
    for image in images:
        console.print(f"chart: {image}", soft_wrap=True)
    both = {"proxy", "packet"} <= {cell.tier for cell in summary}
    agents = any(cell.arm in AGENT_ARMS for cell in summary)
    report = [f"# tether bench — {meta['date']}", "", *(f"- {k}: {v}" for k, v in meta.items()), "",
              headline(summary), "## Per profile", "", comparison_tables(summary),
              *(["## The same cells in both tiers", "", tier_table(summary)] if both else []),
              *(["## Agent APIs: direct vs `tether edge`", "", agent_api_tables(summary)] if agents else []),
              "## All cells", "", markdown_table(summary), "",
              *(f"![{p.stem}]({p.name})" for p in images), ""]  # fmt: skip
    (out / "report.md").write_text("\n".join(report))
    console.print(f"report: {out / 'report.md'}")
    return failed


def load_runs(path: Path) -> tuple[dict[str, Any], list[Run]]:
    document = json.loads(path.read_text())
    runs = [Run(**{**run, "turns": [TurnMetrics(**turn) for turn in run["turns"]]}) for run in document["runs"]]
    return document["meta"], runs


if __name__ == "__main__":
    raise SystemExit(main())
