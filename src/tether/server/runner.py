"""Running the app under uvicorn: one configuration for ``tether serve``, tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from tether.engine.engine import Engine
from tether.netutil import ThreadedServer, free_port
from tether.server.app import create_app
from tether.server.http_timeouts import timed_h11_protocol
from tether.server.state import ServerState
from tether.server.ws_protocol import GatewayWebSocketProtocol
from tether.settings import Settings


def uvicorn_config(settings: Settings, *, port: int | None = None, app: Starlette | None = None) -> uvicorn.Config:
    ws = settings.websocket
    return uvicorn.Config(
        app or create_app(settings),
        host=settings.host,
        port=settings.port if port is None else port,
        http=timed_h11_protocol(
            settings.http.header_timeout_s, settings.http.body_timeout_s, settings.http.body_min_rate
        ),
        timeout_keep_alive=settings.http.idle_timeout_s,  # type: ignore[arg-type]  # uvicorn passes it to call_later
        ws=GatewayWebSocketProtocol,
        loop="auto",  # uvloop (a dependency): 0.84x the gateway CPU per turn of asyncio's loop in docs/bench-peer.md
        # Twice the message limit, so the gateway itself sees an oversized message and answers it with an error
        # event before closing with 1009; beyond that the WebSocket library closes with 1009 on its own.
        ws_max_size=2 * settings.max_body_bytes,
        ws_ping_interval=ws.ping_interval_s,
        ws_ping_timeout=ws.ping_timeout_s,
        ws_per_message_deflate=ws.per_message_deflate,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


class GatewayAddress:
    """The URLs of a gateway listening on ``host:port`` (for a server in a thread or in a process)."""

    __slots__ = ()
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/responses"


@dataclass(frozen=True, slots=True)
class RunningServer(GatewayAddress):
    host: str
    port: int
    server: uvicorn.Server
    app: Starlette
    loop: asyncio.AbstractEventLoop | None = None  # the server thread's event loop

    @property
    def engine(self) -> Engine:
        """The running engine (its state exists while the server runs)."""
        state: ServerState = self.app.state.tether
        return state.engine


@contextlib.contextmanager
def serve_in_thread(
    settings: Settings, *, startup_timeout: float = 15.0, app: Starlette | None = None
) -> Iterator[RunningServer]:
    """Run a real tether server on a free port of 127.0.0.1 in a background thread (tests, benchmarks).

    ``app`` is one :func:`create_app` built for ``settings`` with arguments of its own (a test's tracer provider).
    """
    port = free_port(settings.host)
    app = app or create_app(settings)
    config = uvicorn_config(settings, port=port, app=app)
    with ThreadedServer(config, name="tether-server", startup_timeout_s=startup_timeout) as running:
        yield RunningServer(settings.host, port, running.server, app, running.loop)
