"""Helpers for testing against a real tether server (shipped for users' own tests too).

``serve_in_thread`` runs the app under uvicorn in this process; ``serve_subprocess`` runs the real ``tether serve``
command, as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

from tether.netutil import free_port
from tether.server.runner import GatewayAddress, RunningServer, serve_in_thread

__all__ = [
    "GatewayAddress",
    "RunningServer",
    "ServeProcess",
    "free_port",
    "serve_in_thread",
    "serve_subprocess",
    "settled",
]


async def settled(server: RunningServer, timeout_s: float = 30.0) -> None:
    """Wait until a server in a thread is idle: every request it was handling and every turn it started has ended.

    It waits on those tasks themselves, in the server's own event loop (no polling). A handler that ends may have
    started a turn, so it looks again until nothing is left.

    Raises:
        TimeoutError: the server was still busy after ``timeout_s``.
    """
    loop = server.loop
    if loop is None:
        raise RuntimeError("the server is not running in a thread of this process")

    async def drain() -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                handlers = set(server.server.server_state.tasks)
                turns = {live.task for live in server.engine.live.running() if live.task is not None}
                if not handlers | turns:
                    return
                await asyncio.wait(handlers | turns)

    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drain(), loop))


@dataclass(frozen=True, slots=True)
class ServeProcess(GatewayAddress):
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serve_subprocess(
    workdir: Path, env: Mapping[str, str] | None = None, *, startup_timeout: float = 30.0
) -> Iterator[ServeProcess]:
    """Run ``python -m tether serve`` on a free port with ``workdir`` as its working directory.

    The server's embedded defaults apply (SQLite under ``workdir/.tether/``) unless ``env`` sets ``TETHER_*``.
    """
    port = free_port()
    log_path = workdir / f"tether-{port}.log"
    environment = {**os.environ, **(env or {}), "TETHER_PORT": str(port), "TETHER_HOST": "127.0.0.1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tether", "serve"], cwd=workdir, env=environment, stdout=log, stderr=log
        )
    server = ServeProcess("127.0.0.1", port, process, log_path)
    try:
        _wait_healthy(server, startup_timeout)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_healthy(server: ServeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"tether serve exited with {server.process.returncode}:\n{server.log()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://{server.host}:{server.port}/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"tether serve did not become healthy in {timeout}s:\n{server.log()}")
