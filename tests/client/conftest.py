"""Fixtures of the client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tether.netem.proxy import ShapingProxy
from tether.server.runner import RunningServer

from .support import SLOW, ServerFactory, session_summaries


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the reports the client tests filed (the fault-injection totals), after the results."""
    for name, summary in sorted(session_summaries(config).items()):
        terminalreporter.section(name)
        for line in summary.lines():
            terminalreporter.write_line(line)


@pytest.fixture
def slow_server(make_server: ServerFactory) -> RunningServer:
    """A server whose scripted model takes time (50 ms to the first token, then 400 tokens/s)."""
    return make_server(scripted=SLOW)


@pytest.fixture
async def proxy(slow_server: RunningServer) -> AsyncIterator[ShapingProxy]:
    """A loopback proxy in front of ``slow_server`` that tests cut."""
    async with ShapingProxy(slow_server.host, slow_server.port, "loopback", seed=1) as running:
        yield running
