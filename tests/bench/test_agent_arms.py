"""The agent-API arms in a short run: every arm plays the task, and the edge's upload is real bytes, far less.

Byte counts and transcripts only, never timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tether.bench.agent_arms import AGENT_ARMS
from tether.bench.agent_turns import APIS, with_agent_kit
from tether.bench.cli import main
from tether.bench.harness import BenchConfig, run_matrix
from tether.bench.report import agent_api_tables, cells
from tether.bench.workloads import make_task

pytestmark = pytest.mark.timeout(400)


def test_through_the_edge_each_api_uploads_a_fraction_and_the_tools_cross_once(tmp_path: Path) -> None:
    task = make_task("refactor", 5, turns=3)
    config = BenchConfig(profiles=["loopback"], arms=list(AGENT_ARMS), tasks=[task], repeats=1, seed=5, ttft_s=0.0,
                         tokens_per_second=0.0, tier="proxy")  # fmt: skip
    runs = run_matrix(config, tmp_path)
    assert all(run.completed for run in runs), [(run.arm, run.error) for run in runs if not run.completed]
    by_arm = {run.arm: run for run in runs}
    kit = with_agent_kit(task)
    kit_bytes = len(json.dumps(kit.tools)) + len(kit.instructions)
    for api in APIS:
        direct, warm, cold = by_arm[f"direct-{api}"], by_arm[f"edge-{api}"], by_arm[f"edge-{api}-cold"]
        assert len(direct.transcript) == task.tool_calls + 1
        assert warm.transcript == cold.transcript == direct.transcript  # the same model turns either way
        assert len(direct.turns) == len(warm.turns) == task.turns
        # Every request carries the kit and the history: the agent sends the edge what it sends the upstream.
        assert direct.app_bytes_up > task.turns * kit_bytes
        assert warm.app_bytes_up == direct.app_bytes_up
        assert direct.connections == warm.connections == 1  # one kept-alive HTTP connection; one link
        assert warm.wire_bytes_up < direct.wire_bytes_up / 5  # counted by the proxy, not computed
        assert warm.wire_bytes_down < direct.wire_bytes_down
        assert warm.edge is not None
        assert cold.edge is not None
        assert warm.edge["uplink_bytes"] < warm.edge["request_bytes"] / 2
        # Cold, the first request crosses whole; warm, the gateway already holds the tools and the system prompt.
        assert cold.edge["uplink_bytes"] - warm.edge["uplink_bytes"] > 0.8 * kit_bytes
        assert warm.wire_bytes_up < cold.wire_bytes_up
    table = agent_api_tables(cells(runs))
    assert table.count("| edge-") == 6
    assert "| direct-responses |" in table


def test_agent_arms_are_refused_in_the_packet_tier(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--arms", "agents", "--tier", "packet", "--out", "unused"]) == 2
    out = capsys.readouterr().out
    assert "proxy tier only" in out
    assert "Traceback" not in out
