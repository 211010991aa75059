"""The benchmark's CI smoke run: a small workload, two profiles, a fixed seed, a hard time limit.

It asserts behaviour and byte counts, never timings.
"""

from pathlib import Path

import pytest

from tether.bench import cluster
from tether.bench.harness import BenchConfig, run_matrix
from tether.bench.report import cells, markdown_table
from tether.bench.workloads import make_task

pytestmark = pytest.mark.timeout(300)


def test_smoke_run_saves_upload_and_every_arm_plays_the_same_task(tmp_path: Path) -> None:
    task = make_task("refactor", 5)
    config = BenchConfig(
        profiles=["loopback", "4g"],
        arms=["stateless-http", "http-previous-id", "ws", "ws-deflate", "ws-protocol-only", "tether-client"],
        tasks=[task],
        repeats=1,
        seed=5,
        ttft_s=0.0,
        tokens_per_second=0.0,
    )
    runs = run_matrix(config, tmp_path)
    assert len(runs) == 2 * 6
    assert all(run.completed for run in runs), [run.error for run in runs if not run.completed]
    by_key = {(run.profile, run.arm): run for run in runs}
    expected = by_key[("loopback", "stateless-http")].transcript
    assert len(expected) == task.tool_calls + 1
    for run in runs:
        assert run.transcript == expected, run.arm  # the same model turns through every arm and profile
        assert len(run.turns) == task.turns
        assert run.connections == 1  # the HTTP baseline really reuses its connection; WS uses one socket
    for profile in config.profiles:
        stateless = by_key[(profile, "stateless-http")]
        ws = by_key[(profile, "ws")]
        deflate = by_key[(profile, "ws-deflate")]
        plain = by_key[(profile, "ws-protocol-only")]
        client = by_key[(profile, "tether-client")]
        assert client.app_bytes_up < 0.3 * stateless.app_bytes_up  # tether's SDK sends deltas too
        # The stateless request payload grows every turn; continuations only carry the new items.
        sizes = [turn.app_bytes_up for turn in stateless.turns]
        assert sizes == sorted(sizes)
        for turn, step in zip(ws.turns[1:], task.steps, strict=False):
            new_bytes = sum(len(call.output) for call in step.calls)
            assert turn.app_bytes_up < 1.3 * new_bytes + 2_000  # JSON escaping and ids, nothing of the history
        assert ws.app_bytes_up < 0.3 * stateless.app_bytes_up
        assert ws.wire_bytes_up < 0.3 * stateless.wire_bytes_up
        assert deflate.wire_bytes_up < 0.5 * ws.wire_bytes_up  # source code and logs compress
        # Inheriting instructions and tools saves their size on every turn after the first.
        assert plain.app_bytes_up - ws.app_bytes_up >= (task.turns - 1) * len(task.instructions)
    assert "stateless-http" in markdown_table(cells(runs))


def test_the_cluster_benchmark_runs_a_short_chain_on_sqlite(tmp_path: Path) -> None:
    report = tmp_path / "bench-cluster.md"
    assert cluster.main(["per-turn", "--stores", "sqlite", "--turns", "20", "--repeats", "1", "--warmup", "1",
                         "--report", str(report)]) == 0  # fmt: skip
    text = report.read_text()
    assert "| sqlite | 1–10 |" in text
    assert "| sqlite | 11–20 |" in text
