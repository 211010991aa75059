"""The benchmark in the packet tier: the server and the client in namespaces of their own, each run records it.

Needs root and /dev/net/tun (CI has both); elsewhere it skips with the reason. Byte counts and behaviour only.
"""

from pathlib import Path

import pytest

from tether.bench.harness import BenchConfig, resolve_tiers, run_matrix
from tether.bench.report import cells, comparison_tables, tier_table
from tether.bench.workloads import make_task
from tether.netem import probe_packet_tier

pytestmark = pytest.mark.timeout(300)


def test_a_packet_tier_run_records_its_tier_and_the_links_counters(tmp_path: Path) -> None:
    support = probe_packet_tier()
    if not support.available:
        pytest.skip(f"packet tier unavailable here: {support.reason}")
    task = make_task("refactor", 5)
    config = BenchConfig(profiles=["loopback", "mobile-3g"], arms=["stateless-http", "ws"],
                         tasks=[task], repeats=1, seed=5, ttft_s=0.0, tokens_per_second=0.0, tier="both")  # fmt: skip
    runs = run_matrix(config, tmp_path)
    assert len(runs) == 2 * 2 * 2
    assert all(run.completed for run in runs), [run.error for run in runs if not run.completed]
    expected = runs[0].transcript
    for run in runs:
        assert run.transcript == expected, (run.tier, run.arm)
        assert run.connections >= 1
        if run.profile == "loopback":
            assert run.connections == 1, "the stateless baseline reuses its connection"
    packet = [run for run in runs if run.tier == "packet"]
    assert len(packet) == 4
    for run in packet:
        assert run.link is not None
        assert run.link["profile"] == run.profile
        assert run.payload_bytes_up >= run.app_bytes_up, "every request byte crossed the link (no compression)"
    lossy = [run for run in packet if run.profile == "mobile-3g"]
    drops = [run.link["down"]["dropped"]["loss"] + run.link["up"]["dropped"]["loss"] for run in lossy if run.link]
    assert sum(drops) > 0, "mobile-3g loses packets, and TCP recovers them"
    summary = cells(runs)
    assert "### `mobile-3g` (packet tier" in comparison_tables(summary)
    assert "| mobile-3g | refactor-5 | ws |" in tier_table(summary)


def test_the_proxy_tier_needs_no_probe() -> None:
    assert resolve_tiers("proxy") == (["proxy"], "proxy tier requested")


def test_without_the_packet_tier_auto_falls_back_to_the_proxy_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.bench import harness
    from tether.netem import PacketSupport

    monkeypatch.setattr(harness, "probe_packet_tier", lambda: PacketSupport(False, "no /dev/net/tun"))
    tiers, reason = resolve_tiers("auto")
    assert tiers == ["proxy"]
    assert reason == "packet tier unavailable (no /dev/net/tun): fell back to the proxy tier"
    with pytest.raises(RuntimeError, match="no /dev/net/tun"):
        resolve_tiers("packet")
