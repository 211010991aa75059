"""An edge restarted mid-task continues its chains from its journal; a restarted gateway continues them from its
store, and one without a store (``memory://``) is healed with one whole request; the agent sees none of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tether.edge.run import RunningEdge, edge_in_thread
from tether.netutil import ThreadedServer, free_port
from tether.protocol.agent_apis import MessagesStreamChecker
from tether.server.app import create_app
from tether.server.runner import RunningServer, serve_in_thread, uvicorn_config
from tether.settings import Settings

from .conftest import edge_config

SYSTEM = "You are a coding agent. " * 300
TOOLS = [{"name": "Bash", "description": "Run a command. " * 300, "input_schema": {"type": "object"}}]


def turn(edge: RunningEdge, messages: list[Any]) -> tuple[str, dict[str, Any]]:
    body = {"model": "echo", "max_tokens": 1024, "system": SYSTEM, "tools": TOOLS, "messages": messages,
            "stream": True}  # fmt: skip
    before = httpx.get(edge.base_url + "/tether/edge/status").json()
    reply = httpx.post(edge.base_url + "/v1/messages", json=body, timeout=60)
    assert reply.status_code == 200
    checker = MessagesStreamChecker()
    checker.feed(reply.content)
    message = checker.close()
    after = httpx.get(edge.base_url + "/tether/edge/status").json()
    after["uploaded"] = after["uplink_bytes"] - before["uplink_bytes"]
    return message["content"][0]["text"], after


def continued(messages: list[Any], answer: str, step: int) -> list[Any]:
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": f"step {step}"}]


@pytest.fixture
def gateway_settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path / 'tether.db'}", log_level="warning")


@pytest.fixture
def gateway(gateway_settings: Settings) -> Iterator[RunningServer]:
    with serve_in_thread(gateway_settings) as running:
        yield running


def test_an_edge_restarted_mid_task_continues_with_deltas(gateway: RunningServer, tmp_path: Path) -> None:
    journal = tmp_path / "edge.db"
    messages: list[Any] = [{"role": "user", "content": "first request"}]
    port = free_port()
    with edge_in_thread(edge_config(gateway.base_url, journal), port=port) as edge:
        answer, first = turn(edge, messages)
        messages = continued(messages, answer, 1)
        answer, _ = turn(edge, messages)
    messages = continued(messages, answer, 2)
    with edge_in_thread(edge_config(gateway.base_url, journal), port=port) as restarted:
        answer, after = turn(restarted, messages)
    assert answer == "step 2"
    assert after["heals"] == 0
    assert after["uploaded"] < 1000 < first["uploaded"]


@contextlib.contextmanager
def gateway_on(settings: Settings, port: int) -> Iterator[RunningServer]:
    app = create_app(settings)
    with ThreadedServer(uvicorn_config(settings, port=port, app=app), name="tether-server") as running:
        yield RunningServer(settings.host, port, running.server, app)


def test_a_restarted_gateway_continues_the_chain_from_its_store(gateway_settings: Settings) -> None:
    port = free_port()
    messages: list[Any] = [{"role": "user", "content": "first request"}]
    with edge_in_thread(edge_config(f"http://127.0.0.1:{port}/v1"), port=free_port()) as edge:
        with gateway_on(gateway_settings, port):
            answer, first = turn(edge, messages)
        messages = continued(messages, answer, 1)
        with gateway_on(gateway_settings, port):  # restarted: its memory is gone, its store (SQLite) is not
            answer, after = turn(edge, messages)
    assert answer == "step 1"
    assert after["heals"] == 0
    assert after["uploaded"] < 1000 < first["uploaded"]


def test_a_restarted_gateway_without_a_store_is_healed_with_one_whole_request() -> None:
    settings = Settings(store_url="memory://", log_level="warning")
    port = free_port()
    messages: list[Any] = [{"role": "user", "content": "first request"}]
    with edge_in_thread(edge_config(f"http://127.0.0.1:{port}/v1"), port=free_port()) as edge:
        with gateway_on(settings, port):
            answer, _ = turn(edge, messages)
        messages = continued(messages, answer, 1)
        with gateway_on(settings, port):  # restarted: the chains it held are gone
            answer, healed = turn(edge, messages)
            messages = continued(messages, answer, 2)
            answer_next, after = turn(edge, messages)
    assert answer == "step 1"
    assert healed["heals"] == 1
    assert answer_next == "step 2"
    assert after["heals"] == 1
    assert after["uploaded"] < 1000
