"""Running the edge: its configuration from ``Settings``, under uvicorn (the command, tests, benchmarks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import uvicorn

from tether.edge.app import EdgeConfig, create_edge_app
from tether.edge.link import LinkOptions
from tether.netutil import ThreadedServer
from tether.protocol.edge_wire import PATH
from tether.settings import Settings


def link_url(gateway: str) -> tuple[str, str]:
    """The edge endpoint's WebSocket URL and the gateway's HTTP origin, from its base URL (``http://host/v1``).

    Raises:
        ValueError: the URL is not http(s) or ws(s).
    """
    parts = urlsplit(gateway)
    schemes = {"http": ("ws", "http"), "https": ("wss", "https"), "ws": ("ws", "http"), "wss": ("wss", "https")}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"the gateway URL must be http(s)://host[:port][/v1], got {gateway!r}")
    ws, http = schemes[parts.scheme]
    return f"{ws}://{parts.netloc}{PATH}", f"{http}://{parts.netloc}"


def edge_config(settings: Settings) -> EdgeConfig:
    """The edge's configuration from ``settings.edge``.

    Raises:
        ValueError: no gateway is configured, or its URL is not usable.
    """
    edge = settings.edge
    if not edge.gateway:
        raise ValueError("no gateway configured: pass --gateway URL or set TETHER_EDGE__GATEWAY")
    ws_url, http_origin = link_url(edge.gateway)
    options = LinkOptions(
        ws_url, edge.gateway_key, hold_s=edge.offline_hold_s, keepalive_s=edge.keepalive_s,
        http_url=http_origin + PATH, transport=edge.transport, hold_answers=edge.hold_answers,
    )  # fmt: skip
    return EdgeConfig(options, http_origin, journal=str(edge.journal), max_chains=edge.max_chains,
                      max_body_bytes=settings.max_body_bytes)  # fmt: skip


def edge_uvicorn_config(config: EdgeConfig, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        create_edge_app(config),
        host=host,
        port=port,
        ws="websockets-sansio",
        log_level=log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@dataclass(frozen=True, slots=True)
class RunningEdge:
    host: str
    port: int
    server: ThreadedServer

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def edge_in_thread(config: EdgeConfig, *, port: int, host: str = "127.0.0.1") -> Iterator[RunningEdge]:
    """Run an edge on ``host:port`` in a background thread (tests, benchmarks)."""
    with ThreadedServer(edge_uvicorn_config(config, host, port, "warning"), name="tether-edge") as server:
        yield RunningEdge(host, port, server)
