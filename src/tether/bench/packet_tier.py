"""``tether serve`` in the server namespace of a ``PacketLink``, for the packet tier of the benchmark."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

from tether.netem import NetworkProfile, PacketLink

SERVER_PORT = 8000
"""Any port will do: the server namespace holds nothing else."""


@dataclass(slots=True)
class PacketServer:
    """A server reachable from the client namespace of ``link``."""

    link: PacketLink
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.link.server_address}:{SERVER_PORT}/v1"


@contextlib.contextmanager
def packet_server(workdir: Path, env: Mapping[str, str], *, startup_timeout: float = 60.0) -> Iterator[PacketServer]:
    """Build a ``PacketLink``, start ``tether serve`` in its server namespace, and wait until the client reaches it."""
    environment = {**os.environ, **env, "TETHER_PORT": str(SERVER_PORT), "TETHER_HOST": PacketLink.server_address}
    with PacketLink(NetworkProfile("loopback")) as link:
        log_path = workdir / "tether-packet.log"
        with log_path.open("wb") as log:
            process = link.popen("server", [sys.executable, "-m", "tether", "serve"], cwd=workdir, env=environment,
                                 stdout=log, stderr=log)  # fmt: skip
        server = PacketServer(link, process, log_path)
        link.call("client", lambda: _wait_healthy(server, startup_timeout))
        yield server


def _wait_healthy(server: PacketServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    health = server.base_url.removesuffix("/v1") + "/health"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"tether serve exited with {server.process.returncode}:\n{server.log_path.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(health, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"tether serve did not become healthy in {timeout} s:\n{server.log_path.read_text()}")
