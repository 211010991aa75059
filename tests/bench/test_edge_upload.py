"""The edge upload arm on a short task: through the edge, the bad link carries a fraction of the direct upload."""

from __future__ import annotations

import pytest

from tether.bench.agent_turns import AgentAPI, claude_code_sized
from tether.bench.edge_upload import measure
from tether.bench.workloads import make_task


@pytest.mark.parametrize("api", ["anthropic-messages", "responses"])
def test_the_edge_uploads_less_than_the_direct_path(api: AgentAPI) -> None:
    tasks = [claude_code_sized(make_task("fix-failing-test", seed, turns=3)) for seed in (1, 2)]
    direct = measure(api, tasks, "loopback", through_edge=False, warm=False)
    edge = measure(api, tasks, "loopback", through_edge=True, warm=True)
    assert direct.requests == edge.requests == 3
    assert 0 < edge.up < direct.up / 2
