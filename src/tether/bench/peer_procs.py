"""The peer benchmark's processes: the fake upstreams, agentic-api's ``agentic-server`` and ``tether serve``.

Every process listens on 127.0.0.1 only and is ended (terminate, then kill) on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import orjson

from tether.netutil import free_port
from tether.testing import serve_subprocess

DEFAULT_AGENTIC = Path(".bench-peer/venv/bin/agentic-server")


@dataclass(frozen=True, slots=True)
class Gateway:
    """A gateway under test: its name in the tables, its process id and where it listens."""

    name: str
    pid: int
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/responses"


def rss_bytes(pid: int) -> int:
    """The resident set size of ``pid`` (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def gc_tracked_objects(gateway: Gateway) -> int | None:
    """The GC-tracked object count tether's ``/metrics`` reports; ``None`` for a gateway without one."""
    try:
        text = httpx.get(f"http://127.0.0.1:{gateway.port}/metrics", timeout=30).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("tether_gc_tracked_objects "):
            return int(float(line.split()[1]))
    return None


@contextlib.contextmanager
def upstreams(turns: int) -> Iterator[dict[str, str]]:
    """The fakes of :mod:`tether.bench.peer_upstream` in a subprocess; their base URLs by name."""
    command = [sys.executable, "-m", "tether.bench.peer_upstream", "--turns", str(turns)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the fake upstreams did not start")
        urls: dict[str, str] = orjson.loads(line)
        yield urls
    finally:
        _end(process)


@contextlib.contextmanager
def agentic_server(binary: Path, upstream_root: str, workdir: Path) -> Iterator[Gateway]:
    """agentic-api's gateway (SQLite in ``workdir``) in front of ``upstream_root`` (it POSTs ``/v1/responses``)."""
    port = free_port()
    command = [
        str(binary.resolve()), "--llm-api-base", upstream_root, "--gateway-host", "127.0.0.1",
        "--gateway-port", str(port), "--skip-llm-ready-check",
        "--db-url", f"sqlite://{workdir / 'agentic.db'}?mode=rwc",
    ]  # fmt: skip
    env = {**os.environ, "RUST_LOG": "warn", "OPENAI_API_KEY": "sk-bench"}
    with (workdir / "agentic.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        _wait_healthy(process, port)
        yield Gateway("agentic-api", process.pid, port)
    finally:
        _end(process)


@contextlib.contextmanager
def tether_server(urls: dict[str, str], workdir: Path, grace_s: float) -> Iterator[Gateway]:
    """``tether serve`` (SQLite in ``workdir``) with three routes: ``peer-*`` to the stateless Responses fake
    (``stateful = false``), ``chat-*`` to the Chat Completions fake, ``stateful-*`` to the stateful Responses fake."""
    providers = {
        "peer": {"kind": "openai-responses", "base_url": urls["stateless"], "stateful": False},
        "chat": {"kind": "chat-completions", "base_url": urls["chat"]},
        "stateful": {"kind": "openai-responses", "base_url": urls["stateful"]},
    }
    routes = [{"model": f"{name}-*", "provider": name} for name in providers]
    env = {
        "TETHER_PROVIDERS": json.dumps(providers),
        "TETHER_ROUTES": json.dumps(routes),
        "TETHER_RESUME_GRACE_S": str(grace_s),
    }
    with serve_subprocess(workdir, env) as server:
        yield Gateway("tether", server.process.pid, server.port)


def _wait_healthy(process: subprocess.Popen[bytes], port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"agentic-server exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"agentic-server did not become healthy in {timeout_s:g} s")


def _end(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
