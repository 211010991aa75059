"""A real ``tether serve`` process killed with SIGKILL in the middle of a streamed answer and started again on its
port, while a real agent client (the ``anthropic`` SDK) waits on the edge.

The gateway's turn log and the generation died with it. On reconnect the edge resumes the turn, is told the gateway
has no log of it, and sends the turn itself again: the restarted gateway generates it anew (a new generation). With
``hold_answers`` nothing of the first generation had reached the agent, so its stream only paused and it reads
exactly one complete answer. Streaming live, the agent has already read part of the first generation, which the
new one cannot be joined to: its stream ends with one error event, and no event reaches it twice.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import pytest

from cluster.support import Node
from tether.client.retry import RetryPolicy
from tether.edge.run import RunningEdge, edge_in_thread
from tether.netutil import free_port

from .conftest import edge_config

SYSTEM = "You are a coding agent. " * 300
WORDS = " ".join(f"word{n}" for n in range(1200))
TEST_TIMEOUT_S = 600.0
FAST_RETRY = RetryPolicy(initial_delay_s=0.05, max_delay_s=0.2, max_attempts=1_000_000, max_elapsed_s=1e9)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Node]:
    env = {
        "TETHER_STORE_URL": f"sqlite:///{tmp_path / 'tether.db'}",
        "TETHER_LOG_LEVEL": "warning",
        "TETHER_SCRIPTED__TOKENS_PER_SECOND": "150",
    }
    node = Node("gateway", free_port(), env, tmp_path)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def status(edge: RunningEdge) -> dict[str, Any]:
    reply: dict[str, Any] = httpx.get(edge.base_url + "/tether/edge/status", timeout=5).json()
    return reply


def agent_turn(edge: RunningEdge, messages: list[Any], deltas: list[str] | None = None) -> tuple[str, list[str]]:
    """One streamed turn through the ``anthropic`` SDK: the answer's text and the stream's event types (``deltas``
    collects the text as it streams)."""
    kinds: list[str] = []
    with (
        anthropic.Anthropic(base_url=edge.base_url, api_key="agent-key", max_retries=0, timeout=300) as client,
        client.messages.stream(model="echo", max_tokens=8192, system=SYSTEM, messages=messages) as stream,
    ):
        for event in stream:
            kinds.append(event.type)
            if event.type == "text" and deltas is not None:
                deltas.append(event.text)
        message = stream.get_final_message()
    block = message.content[0]
    assert block.type == "text"
    return block.text, kinds


def kill_mid_answer(
    gateway: Node, edge: RunningEdge, messages: list[Any], deltas: list[str] | None = None
) -> concurrent.futures.Future[Any]:
    """Start the agent's turn, SIGKILL the gateway once part of the answer has crossed the link, start it again."""
    before = status(edge)["downlink_bytes"]
    pool = concurrent.futures.ThreadPoolExecutor(1)
    waiting = pool.submit(agent_turn, edge, messages, deltas)
    pool.shutdown(wait=False)
    while status(edge)["downlink_bytes"] < before + 4000:  # the answer is under way on the gateway
        assert not waiting.done(), waiting.exception()
        time.sleep(0.02)
    gateway.kill()
    assert not waiting.done()  # the agent is still waiting on the edge
    gateway.start()
    return waiting


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_a_gateway_killed_mid_stream_and_restarted_costs_the_agent_only_a_pause(gateway: Node) -> None:
    config = edge_config(f"http://127.0.0.1:{gateway.port}/v1", hold_answers=True, keepalive_s=0.5, retry=FAST_RETRY)
    with edge_in_thread(config, port=free_port()) as edge:
        first, _ = agent_turn(edge, [{"role": "user", "content": "hi"}])
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": first},
                    {"role": "user", "content": WORDS}]  # fmt: skip
        text, kinds = kill_mid_answer(gateway, edge, messages).result(timeout=300)
        after = status(edge)
    assert text == WORDS  # one complete answer, nothing spliced, nothing missing
    assert kinds.count("message_start") == 1
    assert kinds.count("message_stop") == 1
    assert after["lost_turns"] == 1
    assert after["heals"] == 0  # the restarted gateway found the chain in its store
    assert after["drops"] == 1


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_streaming_live_the_agent_gets_no_event_twice_and_one_error(gateway: Node) -> None:
    config = edge_config(f"http://127.0.0.1:{gateway.port}/v1", keepalive_s=0.5, retry=FAST_RETRY)
    with edge_in_thread(config, port=free_port()) as edge:
        messages = [{"role": "user", "content": WORDS}]
        deltas: list[str] = []
        waiting = kill_mid_answer(gateway, edge, messages, deltas)
        with pytest.raises(anthropic.APIStatusError) as failed:
            waiting.result(timeout=300)
    assert "began a new one" in str(failed.value)
    received = "".join(deltas)
    assert received  # part of the first generation reached the agent ...
    assert WORDS.startswith(received)  # ... once, and nothing of the second was joined to it
    assert received != WORDS
