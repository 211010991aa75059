"""The peer benchmark's quick run: every arm and every row of the page, with the processes it starts ended.

It asserts the page's structure and the error counts, never a timing or a ratio.
"""

from pathlib import Path

import pytest

from tether.bench import peer, peer_profile
from tether.bench.peer_procs import DEFAULT_AGENTIC

pytestmark = pytest.mark.timeout(120)
AGENTIC = Path(__file__).parents[2] / DEFAULT_AGENTIC


@pytest.mark.skipif(not AGENTIC.exists(), reason="agentic-api is not installed (./dev test installs it)")
def test_the_quick_run_writes_every_row(tmp_path: Path) -> None:
    report = tmp_path / "bench-peer.md"
    assert peer.main(["--quick", "--agentic-server", str(AGENTIC), "--report", str(report)]) == 0
    page = report.read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    measures = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert sum(m.startswith("added latency per WebSocket turn, store=") for m in measures) == 2
    assert sum(m.startswith("gateway CPU per turn, store=") for m in measures) == 2
    assert sum(m.startswith("throughput, ") and "sessions" in m for m in measures) == 3
    assert any(m.startswith("memory per idle WebSocket") for m in measures)
    assert any(m.startswith("RSS fresh") for m in measures)
    assert any(m.startswith("GC-tracked objects") for m in measures)
    assert any(m.startswith("throughput, third repeat") for m in measures)
    for row in rows:
        cells = row.split(" | ")
        if "sessions ×" in cells[0]:
            assert cells[1].endswith(", 0 errors"), row  # both gateways answered every turn
            assert cells[2].endswith(", 0 errors"), row
    assert "| store=false |" in page  # the stateful upstream's table
    assert "| store=true |" in page
    assert "## Failures" not in page
    assert "Machine: " in page
    assert "Date: " in page
    if peer_profile.py_spy() is not None:  # the dev extras pin it; the page says where tether's time goes
        assert "## Where tether's time goes" in page
        assert "| upstream HTTP client" in page
