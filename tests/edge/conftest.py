"""A real gateway (``tether serve`` in a thread) and a real edge in front of it, on loopback sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.edge.app import EdgeConfig
from tether.edge.link import LinkOptions
from tether.edge.run import RunningEdge, edge_in_thread, link_url
from tether.netutil import free_port
from tether.protocol.edge_wire import PATH
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("gateway")
    settings = Settings(store_url=f"sqlite:///{directory / 'tether.db'}", log_level="warning")
    with serve_in_thread(settings) as running:
        yield running


def responses_settings(store: Path, provider: dict[str, Any], log_level: str = "warning") -> Settings:
    """A gateway with one OpenAI Responses upstream as two providers: ``http-*`` models over HTTP, ``ws-*`` ones over
    WebSocket mode."""
    return Settings.model_validate({
        "store_url": f"sqlite:///{store}", "log_level": log_level,
        "providers": {"up-http": provider, "up-ws": {**provider, "transport": "websocket"}},
        "routes": [{"model": "http-*", "provider": "up-http"}, {"model": "ws-*", "provider": "up-ws"}],
    })  # fmt: skip


def edge_config(gateway_base_url: str, journal: Path | None = None, **link: Any) -> EdgeConfig:
    ws_url, origin = link_url(gateway_base_url)
    options = LinkOptions(ws_url, http_url=origin + PATH, **link)
    return EdgeConfig(options, origin, journal=str(journal) if journal else None)


@pytest.fixture(scope="module")
def edge(gateway: RunningServer) -> Iterator[RunningEdge]:
    with edge_in_thread(edge_config(gateway.base_url), port=free_port()) as running:
        yield running
