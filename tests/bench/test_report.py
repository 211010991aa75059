"""The report's per-profile comparison tables and the tier table, from runs built by hand."""

from tether.bench.harness import Run
from tether.bench.report import agent_api_tables, cells, comparison_tables, tier_table


def run(arm: str, *, tier: str = "packet", profile: str = "inflight-geo", completed: bool = True,
        task_s: float = 10.0, up: int = 10240) -> Run:  # fmt: skip
    return Run(profile=profile, arm=arm, task="t", repeat=0, completed=completed, task_s=task_s, app_bytes_up=up,
               wire_bytes_up=up, wire_bytes_down=2048, payload_bytes_up=up, payload_bytes_down=1024, connections=1,
               tier=tier)  # fmt: skip


def test_each_profile_gets_one_table_with_ratios_against_stateless() -> None:
    runs = [run("stateless-http", task_s=20.0, up=40960), run("ws", task_s=10.0), run("tether-client", task_s=5.0),
            run("edge-anthropic", task_s=8.0), run("http-previous-id")]  # fmt: skip
    text = comparison_tables(cells(runs))
    assert text.startswith("### `inflight-geo` (packet tier; 1 task)")
    assert "| ws | 10.0 | 2.0 | 10.0 | 1/1 (100%) | 0.25 | 0.50 |" in text
    assert "| edge-anthropic |" in text, "tether edge arms join the comparison when they run"
    assert "http-previous-id" not in text


def test_failed_runs_get_no_ratio() -> None:
    text = comparison_tables(cells([run("stateless-http"), run("ws", completed=False)]))
    assert "| ws | 10.0 | 2.0 | 10.0 | 0/1 (0%) | – | – |" in text


def test_the_tier_table_pairs_the_same_cell() -> None:
    runs = [run("ws", tier="proxy", task_s=4.0), run("ws", tier="packet", task_s=6.0), run("ws", profile="x")]
    table = tier_table(cells(runs))
    assert "| inflight-geo | t | ws | 4.00 | 6.00 | 10.0 | 10.0 | 1/1 | 1/1 |" in table
    assert "| x |" not in table, "a cell run in one tier only is left out"


def test_agent_api_arms_are_compared_with_their_own_direct_path_only() -> None:
    # They play the task with the agent's own tools and system prompt: a ratio against stateless-http would set two
    # different workloads side by side.
    runs = [run("stateless-http", up=40960), run("direct-responses", up=81920), run("edge-responses", up=2048)]
    assert "responses" not in comparison_tables(cells(runs))
    table = agent_api_tables(cells(runs))
    assert "| responses | edge-responses | 2.0 | 97.5% |" in table
