"""The peer benchmark's page: the issue's table with tether ÷ agentic-api ratios and their targets, as measured."""

from __future__ import annotations

import datetime
import statistics
from typing import TYPE_CHECKING

from tether.bench.cpu_per_turn import machine

if TYPE_CHECKING:
    from tether.bench.peer import Results
    from tether.bench.peer_profile import Profile

KIB = 1024
MIB = 1024 * 1024


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("inf")


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _buckets(turns: int) -> tuple[range, range, str]:
    first = range(min(10, turns))
    last = range(max(0, turns - 10), turns)
    return first, last, f"turns 1–{len(first)} / {last.start + 1}–{last.stop}"


def _throughput(results: Results, gateway: str, kind: str) -> tuple[float, int]:
    """The median over repeats of turns per second, and the errors summed over repeats."""
    loads = [repeat[kind] for repeat in results.loads[gateway]]
    return statistics.median(load.per_second for load in loads), sum(load.errors for load in loads)


def _drift(results: Results, gateway: str) -> float:
    """The third repeat's throughput over the first's (all runs of a repeat together)."""
    repeats = results.loads[gateway]

    def rate(repeat: int) -> float:
        loads = repeats[repeat].values()
        seconds = sum(load.seconds for load in loads)
        return sum(load.turns for load in loads) / seconds if seconds else 0.0

    return _ratio(rate(min(2, len(repeats) - 1)), rate(0))


def render(results: Results, *, command: str, load: tuple[float, float, float], version: str) -> str:
    plan = results.plan
    first, last, label = _buckets(plan.turns)
    peer, us = "agentic-api", "tether"
    rows: list[str] = []

    def row(measure: str, theirs: str, ours: str, ratio: str, chat: str, target: str) -> None:
        rows.append(f"| {measure} | {theirs} | {ours} | {ratio} | {chat} | {target} |")

    for store in (False, True):
        parts = [(results.added_ms(arm, store, first), results.added_ms(arm, store, last)) for arm in (peer, us)]
        chat = (results.added_ms("tether via chat-completions", store, first),
                results.added_ms("tether via chat-completions", store, last))  # fmt: skip
        ratios = (_ratio(parts[1][0], parts[0][0]), _ratio(parts[1][1], parts[0][1]))
        row(
            f"added latency per WebSocket turn, store={str(store).lower()}, {label}",
            f"{parts[0][0]:+.2f} / {parts[0][1]:+.2f} ms",
            f"{parts[1][0]:+.2f} / {parts[1][1]:+.2f} ms",
            f"{ratios[0]:.2f} / {ratios[1]:.2f}",
            f"{chat[0]:+.2f} / {chat[1]:+.2f} ms",
            f"≤ 1.0: {_verdict(max(ratios) <= 1.0)}",
        )
    for store in (False, True):
        cpu = [(results.cpu_ms(arm, store, first), results.cpu_ms(arm, store, last)) for arm in (peer, us)]
        chat = (results.cpu_ms("tether via chat-completions", store, first),
                results.cpu_ms("tether via chat-completions", store, last))  # fmt: skip
        ratios = (_ratio(cpu[1][0], cpu[0][0]), _ratio(cpu[1][1], cpu[0][1]))
        row(
            f"gateway CPU per turn, store={str(store).lower()}, {label}",
            f"{cpu[0][0]:.2f} / {cpu[0][1]:.2f} ms",
            f"{cpu[1][0]:.2f} / {cpu[1][1]:.2f} ms",
            f"{ratios[0]:.2f} / {ratios[1]:.2f}",
            f"{chat[0]:.2f} / {chat[1]:.2f} ms",
            f"≤ 1.0: {_verdict(max(ratios) <= 1.0)}",
        )
    kinds = [(f"ws{n}", f"{n} WebSocket sessions") for n in plan.ws_sessions]
    kinds.append((f"http{plan.http_sessions}", f"{plan.http_sessions} HTTP/SSE sessions"))
    for kind, what in kinds:
        (theirs, their_errors), (ours, our_errors) = (_throughput(results, g, kind) for g in (peer, us))
        ratio = _ratio(ours, theirs)
        row(
            f"throughput, {what} × {plan.loop_turns}-turn tool loops (median of {plan.repeats} repeats)",
            f"{theirs:,.0f} turns/s, {their_errors} errors",
            f"{ours:,.0f} turns/s, {our_errors} errors",
            f"{ratio:.2f}",
            "—",
            f"≥ 1.0, 0 errors: {_verdict(ratio >= 1.0 and our_errors == 0)}",
        )
    idle_theirs, idle_ours = results.idle_bytes[peer] / KIB, results.idle_bytes[us] / KIB
    row(
        f"memory per idle WebSocket ({plan.idle:,} open)",
        f"{idle_theirs:.0f} KB",
        f"{idle_ours:.0f} KB",
        f"{_ratio(idle_ours, idle_theirs):.2f}",
        "—",
        f"≤ 40 KB: {_verdict(idle_ours <= 40)}",
    )
    rest = {g: results.rss_rest[g] / MIB for g in (peer, us)}
    fresh = {g: results.rss_fresh[g] / MIB for g in (peer, us)}
    growth = _ratio(rest[us], fresh[us])
    row(
        f"RSS fresh → at rest after the run plus the {plan.grace_s:g} s resume grace",
        f"{fresh[peer]:.0f} → {rest[peer]:.0f} MB",
        f"{fresh[us]:.0f} → {rest[us]:.0f} MB ({growth:.2f}× fresh)",
        f"{_ratio(rest[us], rest[peer]):.2f}",
        "—",
        f"≤ 2× fresh: {_verdict(growth <= 2.0)}",
    )
    if results.gc_fresh is not None and results.gc_rest is not None:
        objects = _ratio(results.gc_rest, results.gc_fresh)
        row(
            "GC-tracked objects, fresh → at rest",
            "—",
            f"{results.gc_fresh:,} → {results.gc_rest:,} ({objects:.2f}×)",
            "—",
            "—",
            f"within 10% of fresh: {_verdict(objects <= 1.1)}",
        )
    drifts = {g: _drift(results, g) for g in (peer, us)}
    row(
        "throughput, third repeat ÷ first",
        f"{drifts[peer]:.2f}",
        f"{drifts[us]:.2f}",
        "—",
        "—",
        f"≥ 0.9: {_verdict(drifts[us] >= 0.9)}",
    )

    stateful = []
    for store in (False, True):
        added = (results.added_ms("tether, stateful upstream", store, first),
                 results.added_ms("tether, stateful upstream", store, last))  # fmt: skip
        spent = (results.cpu_ms("tether, stateful upstream", store, first),
                 results.cpu_ms("tether, stateful upstream", store, last))  # fmt: skip
        stateful.append(
            f"| store={str(store).lower()} | {added[0]:+.2f} / {added[1]:+.2f} ms"
            f" | {spent[0]:.2f} / {spent[1]:.2f} ms |"
        )

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# tether side by side with agentic-api",
        "",
        f"- Date: {now}",
        f"- Machine: {machine()}; load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
        " (1 / 5 / 15 min): other work shared the cores",
        f"- Command: `{command}`",
        f"- Peer: vllm-project/agentic-api {version} (its PyPI wheel's `agentic-server`, SQLite store,"
        " `RUST_LOG=warn`)",
        "- tether: `tether serve` with its defaults (SQLite store, info logs), `resume_grace_s = "
        f"{plan.grace_s:g}`; the openai-responses provider declared `stateful = false`",
        "- Upstream: tether's fake Responses server that keeps no state, in a process of its own, no delay; both"
        " gateways and the direct path talk to it. The chat-completions column is tether through its"
        " chat-completions provider to the fake Chat Completions server in the same process.",
        f"- Latency and CPU: {plan.chains} chain(s) of {plan.turns} turns per store mode, each turn a"
        " `function_call_output` of 1 KB with `previous_response_id` over one WebSocket per chain; the arms"
        " (both gateways, both other tether paths, the direct path) take turns, the order rotating every turn."
        " Added latency = a turn's time to `response.completed` minus the direct path's same turn (the whole"
        " context over HTTP/SSE), median over chains, mean over the turns named. CPU = the gateway process's"
        " on-CPU time (all threads) over the turn.",
        "- Throughput: every session its own connection, all at once, each running the tool loop; the gateways"
        f" alternate, {plan.repeats} repeats on the same processes. Client, gateways and upstream share the cores.",
        "",
        "| measure | agentic-api | tether | tether ÷ agentic-api | tether via chat-completions | target |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "## A stateful upstream",
        "",
        "tether's openai-responses provider (stateful, the default) against the fake that keeps state: deltas with"
        " the upstream's `previous_response_id` where it holds the parent (store=true), the whole context otherwise."
        " Added latency against the same direct path as above.",
        "",
        f"| store | added latency per WebSocket turn, {label} | gateway CPU per turn, {label} |",
        "|---|---|---|",
        *stateful,
        "",
    ]
    if results.profile is not None:
        total = results.profile.samples
        lines += [
            "## Where tether's time goes",
            "",
            f"py-spy's samples of the tether process during one more run of {results.profiled} (not counted"
            f" above), {total:,} samples. *Self* charges a sample to the component of the innermost frame that"
            " has one (library code of no component, such as h11, counts for its caller; the column adds up to 100%);"
            " *inclusive* charges it to every component on its stack (the columns"
            " overlap: the server calls the whole turn). py-spy samples wall time while a thread is runnable, so on"
            " loaded cores a frame where the process is often preempted (a socket write that wakes the reader) is"
            " overcounted.",
            "",
            "| component | self | inclusive |",
            "|---|---|---|",
            *(
                f"| {name} | {100 * n / total:.1f}% | {_inclusive(results.profile, name, total)} |"
                for name, n in results.profile.self_by_component.items()
            ),
            "",
            "Busiest functions (self time, a function's lines together):",
            "",
            *(f"- {100 * n / total:.1f}% `{frame}`" for frame, n in results.profile.top_self),
            "",
        ]
    if results.failures:
        lines += ["## Failures", "", *(f"- {failure}" for failure in results.failures), ""]
    return "\n".join(lines)


def _inclusive(profile: Profile, name: str, total: int) -> str:
    samples = profile.inclusive_by_component.get(name)
    return "—" if samples is None else f"{100 * samples / total:.0f}%"
