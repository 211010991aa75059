"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One default server for a whole module, for the many cases that only need a fresh socket, not a fresh server."""
    directory = tmp_path_factory.mktemp("shared")
    settings = Settings(store_url=f"sqlite:///{directory / 'tether.db'}", log_level="warning")
    with serve_in_thread(settings) as running:
        yield running
