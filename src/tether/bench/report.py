"""Summaries of benchmark runs: the terminal table, the markdown report and the charts."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from tether.bench.agent_arms import AGENT_ARMS
from tether.bench.agent_turns import APIS
from tether.bench.harness import Run

BASELINE = "stateless-http"
COMPARISON_ARMS = ("stateless-http", "ws", "tether-client")
"""The arms of each profile's comparison table: direct stateless HTTP, the openai SDK on WebSocket, tether's client.
Arms whose name starts with ``EDGE_PREFIX`` join them when they are run, but for the agent-API arms (``AGENT_ARMS``),
which play their own workload and are set against their own direct path in :func:`agent_api_tables`."""
EDGE_PREFIX = "edge-"


@dataclass(frozen=True, slots=True)
class Cell:
    """Medians over repeats of one (profile, task, arm)."""

    profile: str
    task: str
    arm: str
    tier: str
    runs: int
    completed: int
    task_s: float
    app_up: float
    wire_up: float
    wire_down: float
    ttft_s: float | None
    connections: float
    edge_up: float | None = None
    """The edge's frames to the gateway before compression (agent-API arms through the edge)."""


def cells(runs: Iterable[Run]) -> list[Cell]:
    groups: dict[tuple[str, str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.profile, run.task, run.arm, run.tier)].append(run)
    out = []
    for (profile, task, arm, tier), group in groups.items():
        done = [run for run in group if run.completed] or group
        ttfts = [t.ttft_s for run in done for t in run.turns if t.ttft_s is not None]
        edge_up = [run.edge["uplink_bytes"] for run in done if run.edge]
        out.append(
            Cell(
                profile, task, arm, tier, len(group), sum(run.completed for run in group),
                statistics.median(run.task_s for run in done),
                statistics.median(run.app_bytes_up for run in done),
                statistics.median(run.wire_bytes_up for run in done),
                statistics.median(run.wire_bytes_down for run in done),
                statistics.median(ttfts) if ttfts else None,
                statistics.median(run.connections for run in done),
                statistics.median(edge_up) if edge_up else None,
            )
        )  # fmt: skip
    return out


def _baseline(all_cells: list[Cell], cell: Cell) -> Cell | None:
    for other in all_cells:
        if (other.tier, other.profile, other.task, other.arm) == (cell.tier, cell.profile, cell.task, BASELINE):
            return other
    return None


def _kb(value: float) -> str:
    return f"{value / 1024:,.1f}"


def rows(all_cells: list[Cell]) -> list[list[str]]:
    out = []
    for cell in sorted(all_cells, key=lambda c: (c.tier, c.profile, c.task, c.arm != BASELINE, c.arm)):
        base = _baseline(all_cells, cell)
        both_done = base is not None and base.completed > 0 and cell.completed > 0
        less = f"{100 * (1 - cell.wire_up / base.wire_up):.1f}%" if base and both_done and base.wire_up else "–"
        speed = f"{base.task_s / cell.task_s:.2f}×" if base and both_done and cell.task_s else "–"
        out.append([
            cell.tier, cell.profile, cell.task, cell.arm, f"{cell.completed}/{cell.runs}", f"{cell.task_s:.2f}",
            _kb(cell.app_up), _kb(cell.wire_up), less, _kb(cell.wire_down),
            f"{cell.ttft_s * 1000:.0f}" if cell.ttft_s is not None else "–", speed, f"{cell.connections:g}",
        ])  # fmt: skip
    return out


HEADERS = ["tier", "profile", "task", "arm", "done", "task s", "payload up KiB", "wire up KiB", "up vs stateless",
           "wire down KiB", "TTFT ms", "speed-up", "conns"]  # fmt: skip


def table(all_cells: list[Cell]) -> Table:
    result = Table(title="tether bench (medians over repeats)")
    for header in HEADERS:
        result.add_column(header, justify="left" if header in ("tier", "profile", "task", "arm") else "right")
    for row in rows(all_cells):
        result.add_row(*row)
    return result


def markdown_table(all_cells: list[Cell]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(all_cells)]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ArmStyle:
    color: str
    marker: str
    linestyle: str
    linewidth: float


_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # fmt: skip
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
_LINESTYLES = ("-", "--", "-.", ":")


def arm_styles(arms: list[str]) -> dict[str, ArmStyle]:
    """One style per arm, the same in every chart. Arms that send the same bytes draw the same line, so each has
    its own marker and dash and a thinner line than the one before: lines that coincide stay visible."""
    ordered = sorted(arms, key=lambda arm: (arm != BASELINE, arm))
    return {
        arm: ArmStyle(
            _COLORS[index % len(_COLORS)],
            _MARKERS[index % len(_MARKERS)],
            _LINESTYLES[index % len(_LINESTYLES)],
            max(0.8, 3.0 - 0.45 * index),
        )
        for index, arm in enumerate(ordered)
    }


def charts(runs: list[Run], all_cells: list[Cell], out_dir: Path) -> list[Path]:
    """PNG charts: upload per turn by arm (per task), task time per profile by arm. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    styles = arm_styles(sorted({run.arm for run in runs} | {cell.arm for cell in all_cells}))
    tasks = sorted({run.task for run in runs})
    figure, axes = plt.subplots(1, len(tasks), figsize=(max(8, 5 * len(tasks)), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for arm in sorted({run.arm for run in runs}):
            chosen = [
                r for r in runs if r.task == task and r.arm == arm and r.completed and r.profile == runs[0].profile
            ]
            if chosen:
                style = styles[arm]
                axis.plot([t.turn + 1 for t in chosen[0].turns], [t.app_bytes_up / 1024 for t in chosen[0].turns],
                          color=style.color, marker=style.marker, markersize=4, linestyle=style.linestyle,
                          linewidth=style.linewidth, markerfacecolor="none", label=arm)  # fmt: skip
        axis.set_title(task)
        axis.set_xlabel("turn")
        axis.set_ylabel("request payload (KiB)")
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    figure.suptitle("Upload per turn by arm: linear growth (stateless) vs flat (stateful)")
    figure.tight_layout()
    path = out_dir / "upload-per-turn.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)

    profiles = list(dict.fromkeys(cell.profile for cell in all_cells))
    arms = sorted({cell.arm for cell in all_cells}, key=lambda arm: (arm != BASELINE, arm))
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(profiles)), 4))
    width = 0.8 / len(arms)
    for position, arm in enumerate(arms):
        totals = [sum(c.task_s for c in all_cells if c.profile == p and c.arm == arm) for p in profiles]
        axis.bar([i + position * width for i in range(len(profiles))], totals, width, label=arm,
                 color=styles[arm].color)  # fmt: skip
    axis.set_xticks([i + width * (len(arms) - 1) / 2 for i in range(len(profiles))], profiles)
    axis.set_ylabel("task time, sum over tasks (s)")
    axis.set_title("Task time per network profile by arm")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = out_dir / "task-time-per-profile.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)
    return written


def headline(all_cells: list[Cell]) -> str:
    """The figures the benchmark exists to show, computed from the cells (medians over repeats)."""
    tier = "packet" if any(c.tier == "packet" for c in all_cells) else "proxy"
    all_cells = [c for c in all_cells if c.tier == tier]
    index = {(c.profile, c.task, c.arm): c for c in all_cells}
    tasks = sorted({c.task for c in all_cells})
    profiles = list(dict.fromkeys(c.profile for c in all_cells))
    lines = [f"## Headline figures ({tier} tier)", ""]

    def pair(profile: str, task: str, arm: str) -> tuple[Cell, Cell] | None:
        base, cell = index.get((profile, task, BASELINE)), index.get((profile, task, arm))
        if base is None or cell is None or not base.completed or not cell.completed:
            return None
        return base, cell

    reference = "loopback" if "loopback" in profiles else profiles[0]
    lines += [f"Upload per task against `{BASELINE}` ({reference} profile; wire bytes, TCP payload + headers):", ""]
    lines += ["| task | arm | upload | less than stateless |", "|---|---|---|---|"]
    for task in tasks:
        for arm in ("http-previous-id", "ws", "ws-deflate", "ws-protocol-only", "tether-client"):
            found = pair(reference, task, arm)
            if found:
                base, cell = found
                lines.append(f"| {task} | {arm} | {_kb(cell.wire_up)} KiB of {_kb(base.wire_up)} KiB | "
                             f"{100 * (1 - cell.wire_up / base.wire_up):.1f}% |")  # fmt: skip
    lines.append("")
    lines += ["Task time, stateless HTTP ÷ WebSocket (higher is better for WebSocket):", ""]
    lines += ["| profile | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for profile in profiles:
        ratios = []
        for task in tasks:
            found = pair(profile, task, "ws")
            ratios.append(f"{found[0].task_s / found[1].task_s:.2f}×" if found else "–")
        lines.append(f"| {profile} | " + " | ".join(ratios) + " |")
    lines.append("")
    lines += ["Completion (runs that finished / runs):", "", "| profile | arm | done |", "|---|---|---|"]
    for profile in profiles:
        for arm in sorted({c.arm for c in all_cells if c.profile == profile}):
            done = sum(c.completed for c in all_cells if c.profile == profile and c.arm == arm)
            total = sum(c.runs for c in all_cells if c.profile == profile and c.arm == arm)
            lines.append(f"| {profile} | {arm} | {done}/{total} |")
    return "\n".join(lines) + "\n"


def _arms_compared(all_cells: list[Cell]) -> list[str]:
    """The compared arms present; the agent-API arms (their own workload, their own baseline) are in
    :func:`agent_api_tables` instead."""
    present = {cell.arm for cell in all_cells} - set(AGENT_ARMS)
    edge = sorted(arm for arm in present if arm.startswith(EDGE_PREFIX))
    return [arm for arm in COMPARISON_ARMS if arm in present] + edge


def comparison_tables(all_cells: list[Cell]) -> str:
    """One table per profile (and tier): upload, downlink, task time and completion for each compared arm.

    Upload and downlink are IP bytes on the link summed over the tasks (medians over repeats); task time is the sum
    of the tasks' median times; completion counts every run.
    """
    arms = _arms_compared(all_cells)
    sections: list[str] = []
    keys = sorted({(cell.tier, cell.profile) for cell in all_cells})
    for tier, profile in keys:
        chosen = [c for c in all_cells if (c.tier, c.profile) == (tier, profile) and c.arm in arms]
        if not chosen:
            continue
        tasks = sorted({c.task for c in chosen})
        lines = [f"### `{profile}` ({tier} tier; {len(tasks)} task{'s' * (len(tasks) != 1)})", "",
                 "| arm | upload KiB | downlink KiB | task time s | completed | upload ÷ stateless | "
                 "time ÷ stateless |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        base = [c for c in chosen if c.arm == BASELINE]
        base_up, base_s = sum(c.wire_up for c in base), sum(c.task_s for c in base)
        for arm in arms:
            mine = [c for c in chosen if c.arm == arm]
            if not mine:
                continue
            done, total = sum(c.completed for c in mine), sum(c.runs for c in mine)
            up, seconds = sum(c.wire_up for c in mine), sum(c.task_s for c in mine)
            # Ratios only between arms that completed every run: a failed run's time and bytes are not a task's.
            comparable = base and done == total and all(c.completed == c.runs for c in base)
            up_ratio = f"{up / base_up:.2f}" if comparable and base_up else "–"
            time_ratio = f"{seconds / base_s:.2f}" if comparable and base_s else "–"
            lines.append(f"| {arm} | {_kb(up)} | {_kb(sum(c.wire_down for c in mine))} | {seconds:.1f} | "
                         f"{done}/{total} ({done / total:.0%}) | {up_ratio} | {time_ratio} |")  # fmt: skip
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def tier_table(all_cells: list[Cell]) -> str:
    """The same cells in the proxy and the packet tier side by side (task time, upload, completion)."""
    index = {(c.tier, c.profile, c.task, c.arm): c for c in all_cells}
    pairs = sorted({(c.profile, c.task, c.arm) for c in all_cells if c.tier == "packet"})
    lines = ["| profile | task | arm | task s proxy | task s packet | upload KiB proxy | upload KiB packet | "
             "done proxy | done packet |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for profile, task, arm in pairs:
        proxy, packet = index.get(("proxy", profile, task, arm)), index.get(("packet", profile, task, arm))
        if proxy is None or packet is None:
            continue
        row = [profile, task, arm, f"{proxy.task_s:.2f}", f"{packet.task_s:.2f}", _kb(proxy.wire_up),
               _kb(packet.wire_up), f"{proxy.completed}/{proxy.runs}", f"{packet.completed}/{packet.runs}"]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def agent_api_tables(all_cells: list[Cell]) -> str:
    """Per profile and agent API: the direct path against ``tether edge`` (warm, cold), side by side.

    Upload and downlink are the bytes on the shaped link (as the proxy counts them) summed over the tasks, medians
    over repeats; ``frames`` is the edge's uplink before permessage-deflate; task time is the sum of the tasks'
    median times; ratios are against ``direct-<api>`` in the same run, and need every run of both to complete.
    """
    sections: list[str] = []
    for tier, profile in sorted({(c.tier, c.profile) for c in all_cells}):
        lines: list[str] = []
        for api in APIS:
            arms = [f"direct-{api}", f"edge-{api}", f"edge-{api}-cold"]
            groups = {arm: [c for c in all_cells if (c.tier, c.profile, c.arm) == (tier, profile, arm)] for arm in arms}
            base = groups[arms[0]]
            if not any(groups.values()):
                continue
            base_done = bool(base) and all(c.completed == c.runs for c in base)
            base_up, base_s = sum(c.wire_up for c in base), sum(c.task_s for c in base)
            for arm, mine in groups.items():
                if not mine:
                    continue
                done, total = sum(c.completed for c in mine), sum(c.runs for c in mine)
                up, seconds = sum(c.wire_up for c in mine), sum(c.task_s for c in mine)
                frames = [c.edge_up for c in mine if c.edge_up is not None]
                comparable = arm != arms[0] and base_done and done == total and base_up and seconds
                less = f"{100 * (1 - up / base_up):.1f}%" if comparable else "–"
                speed = f"{base_s / seconds:.2f}×" if comparable else "–"
                lines.append(f"| {api} | {arm} | {_kb(up)} | {less} | {_kb(sum(frames)) if frames else '–'} | "
                             f"{_kb(sum(c.wire_down for c in mine))} | {seconds:.1f} | {speed} | "
                             f"{done}/{total} ({done / total:.0%}) |")  # fmt: skip
        if lines:
            tasks = len({c.task for c in all_cells if (c.tier, c.profile) == (tier, profile)})
            sections.append("\n".join([
                f"### `{profile}` ({tier} tier; {tasks} task{'s' * (tasks != 1)})", "",
                "| API | arm | upload KiB | less than direct | edge frames KiB (before deflate) | downlink KiB | "
                "task time s | speed-up | completed |", "|---|---|---|---|---|---|---|---|---|", *lines]))  # fmt: skip
    return "\n\n".join(sections) + "\n"
