"""``tether edge`` (the command, a real process) killed with SIGKILL in the middle of a streamed answer: restarted
on the same journal, the agent's retry continues the chain with a delta, and the gateway is not healed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tether.netutil import free_port
from tether.protocol.agent_apis import MessagesStreamChecker
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import ScriptedSettings, Settings

SYSTEM = "You are a coding agent. " * 300


@pytest.fixture
def slow_gateway(tmp_path: Path) -> Iterator[RunningServer]:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'tether.db'}", log_level="warning",
                        scripted=ScriptedSettings(tokens_per_second=400.0))  # fmt: skip
    with serve_in_thread(settings) as running:
        yield running


def start_edge(gateway: RunningServer, port: int, journal: Path) -> subprocess.Popen[bytes]:
    tether = Path(sys.executable).parent / "tether"
    command = [str(tether), "edge", "--gateway", gateway.base_url, "--listen", f"127.0.0.1:{port}",
               "--journal", str(journal)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TETHER_LOG_LEVEL": "warning"})  # fmt: skip
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/tether/edge/status", timeout=1).json()["state"] == "up":
                return process
        except httpx.HTTPError:
            pass
        try:
            process.wait(0.05)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError("tether edge exited at start")
    raise RuntimeError("tether edge did not come up")


def body(messages: list[Any]) -> dict[str, Any]:
    return {"model": "echo", "max_tokens": 4096, "system": SYSTEM, "messages": messages, "stream": True}


def test_an_edge_killed_mid_stream_continues_its_chain_after_a_restart(
    slow_gateway: RunningServer, tmp_path: Path
) -> None:
    port, journal = free_port(), tmp_path / "edge.db"
    edge = start_edge(slow_gateway, port, journal)
    try:
        first = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body([{"role": "user", "content": "hi"}]),
                           timeout=60)  # fmt: skip
        assert first.status_code == 200
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": " ".join(f"word{n}" for n in range(800))}]  # fmt: skip
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/messages", json=body(messages), timeout=60) as cut:
            chunks = cut.iter_bytes()
            assert next(chunks)  # the answer is under way
            edge.send_signal(signal.SIGKILL)
            edge.wait(10)
            with pytest.raises(httpx.HTTPError):
                for _ in chunks:
                    pass
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.wait(10)
    restarted = start_edge(slow_gateway, port, journal)
    try:
        retry = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body(messages), timeout=60)
        status = httpx.get(f"http://127.0.0.1:{port}/tether/edge/status", timeout=5).json()
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
    checker = MessagesStreamChecker()
    checker.feed(retry.content)
    message = checker.close()
    assert message["content"][0]["text"] == messages[-1]["content"]
    assert status["heals"] == 0
    assert status["uplink_bytes"] < len(messages[-1]["content"]) + 1500  # the new message, not the system prompt
