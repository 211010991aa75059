"""Networking helpers any layer may use: a free port, and an ASGI app served by uvicorn in a background thread.

It imports nothing of tether, so the fake upstreams, the server, the benchmarks and the tests share one way of
running a server in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import uvicorn

_TICK_S = 0.1  # uvicorn's own housekeeping period (the Date header, max-requests)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class _Server(uvicorn.Server):
    """uvicorn whose main loop wakes at once when asked to stop from another thread, not at its next tick."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake: Callable[[], object] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        self.listening.set()

    async def main_loop(self) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._wake = lambda: loop.call_soon_threadsafe(stopping.set)
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK_S):
                    await stopping.wait()

    def stop(self) -> None:
        self.should_exit = True
        if self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._wake()


class ThreadedServer:
    """An ASGI app under uvicorn in a background thread; use it as a context manager.

    Args:
        config: the uvicorn configuration (host, port, app, ...).
        name: the thread's name.
        startup_timeout_s: how long to wait for the server to listen.
        shutdown_timeout_s: how long to wait for the thread to end on exit.

    Raises:
        RuntimeError: on enter, if the server did not start in time (or its thread ended first).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        name: str = "uvicorn",
        startup_timeout_s: float = 15.0,
        shutdown_timeout_s: float = 30.0,
    ) -> None:
        self.config = config
        self.server = _Server(config)
        self.startup_timeout_s = startup_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server thread's event loop (to run a coroutine there: ``asyncio.run_coroutine_threadsafe``)."""
        if self.server.loop is None:
            raise RuntimeError(f"{self.thread.name}: the server has not started")
        return self.server.loop

    def __enter__(self) -> Self:
        self.thread.start()
        self.server.listening.wait(self.startup_timeout_s)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"{self.thread.name}: the server did not start on {self.host}:{self.port}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread (bounded by ``shutdown_timeout_s``)."""
        self.server.stop()
        if self.thread.is_alive():
            self.thread.join(self.shutdown_timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except SystemExit:
            pass  # uvicorn exits when it cannot bind; it logged why, and __enter__ raises
        finally:
            self.server.listening.set()  # a server that failed to start wakes the waiting thread too


def loopback_server(app: Callable[..., Any], *, name: str, **config: Any) -> ThreadedServer:
    """A :class:`ThreadedServer` for ``app`` on a free port of 127.0.0.1, quiet, without lifespan (test doubles).

    ``config`` overrides any ``uvicorn.Config`` argument (e.g. ``ws="websockets-sansio"``).
    """
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "lifespan": "off",
        "log_level": "warning",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        **config,
    }
    return ThreadedServer(uvicorn.Config(app, **settings), name=name, shutdown_timeout_s=15)
