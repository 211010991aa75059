"""While an answer waits (a slow first token, a link that is down), the agent's stream stays alive: Anthropic's own
``ping`` once its stream has started (an SSE comment before), an SSE comment for the others; the stream stays one
the API's strict readers accept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tether.edge.run import RunningEdge, edge_in_thread
from tether.netutil import free_port
from tether.protocol.agent_apis import ChatStreamChecker, MessagesStreamChecker
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import ScriptedSettings, Settings

from .conftest import edge_config


@pytest.fixture(scope="module")
def slow_first_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory: Path = tmp_path_factory.mktemp("slow")
    settings = Settings(store_url=f"sqlite:///{directory / 'tether.db'}", log_level="warning",
                        scripted=ScriptedSettings(ttft_s=1.0))  # fmt: skip
    with serve_in_thread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def eager_edge(slow_first_token: RunningServer) -> Iterator[RunningEdge]:
    with edge_in_thread(edge_config(slow_first_token.base_url, keepalive_s=0.2), port=free_port()) as running:
        yield running


def test_a_slow_answer_gets_comments_then_pings_and_stays_a_valid_stream(eager_edge: RunningEdge) -> None:
    body = {"model": "echo", "max_tokens": 1024, "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    reply = httpx.post(eager_edge.base_url + "/v1/messages", json=body, timeout=60)
    assert reply.status_code == 200
    assert reply.content.count(b"event: ping\n") >= 2  # the API's own after message_start, then the edge's
    checker = MessagesStreamChecker()
    checker.feed(reply.content)
    assert checker.close()["content"][0]["text"] == "hello"


def test_a_chat_stream_waiting_gets_comments(eager_edge: RunningEdge) -> None:
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    reply = httpx.post(eager_edge.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert b"\n\n: keep-alive\n\n" in reply.content or reply.content.startswith(b": keep-alive\n\n")
    checker = ChatStreamChecker()
    checker.feed(reply.content)
    assert checker.close()["message"]["content"] == "hello"


@pytest.fixture
def stranded_edge() -> Iterator[RunningEdge]:
    """An edge whose gateway never answers, holding requests for a second."""
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with edge_in_thread(edge_config(nowhere, keepalive_s=0.2, hold_s=1.0), port=free_port()) as running:
        yield running


def test_offline_hold_ends_in_the_agents_own_error(stranded_edge: RunningEdge) -> None:
    body = {"model": "echo", "max_tokens": 1024, "messages": [{"role": "user", "content": "hello"}]}
    held = httpx.post(stranded_edge.base_url + "/v1/messages", json=body, timeout=60)
    assert held.status_code == 503
    assert held.json()["type"] == "error"
    streamed = httpx.post(stranded_edge.base_url + "/v1/messages", json={**body, "stream": True}, timeout=60)
    assert streamed.status_code == 200
    assert streamed.content.startswith(b": keep-alive\n\n")
    assert b"event: error\n" in streamed.content
    assert b"event: ping" not in streamed.content  # no ping before a message_start
