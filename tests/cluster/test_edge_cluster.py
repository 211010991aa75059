"""``tether edge`` in front of a real cluster: two ``tether serve`` processes on one PostgreSQL or one Redis, behind
nginx (round robin, no stickiness), with a real agent client (the ``anthropic`` SDK) streaming through the edge.

- The node generating the edge's turn is SIGKILLed mid-answer. The edge's link reconnects through nginx to the other
  node, which follows the turn in the shared log until the dead node's lease lapses and it ends as
  ``generation_interrupted``; the edge sends the turn again under a new key and the surviving node generates it
  once more. With ``hold_answers`` the agent's stream only paused: it reads one complete answer.
- The link is cut mid-answer while the generating node lives: the edge reconnects to the *other* node, which has no
  log of the turn; the turn sent again (same idempotency key) follows the live generation through the shared log, so
  the agent, streaming live, reads the whole answer once and no error.

Neither needs a heal: the other node rebuilds the edge's request from the chain kept in the shared store.
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

from tether.client.retry import RetryPolicy
from tether.edge.app import EdgeConfig
from tether.edge.link import LinkOptions
from tether.edge.run import RunningEdge, edge_in_thread, link_url
from tether.netem.proxy import ShapingProxy
from tether.netutil import free_port

from .support import Cluster, nginx_unavailable, running_cluster, store_unreachable

WORDS = " ".join(f"word{n}" for n in range(600))
PACED = {"TETHER_SCRIPTED__TOKENS_PER_SECOND": "100"}
TEST_TIMEOUT_S = 600.0
FAST_RETRY = RetryPolicy(initial_delay_s=0.05, max_delay_s=0.2, max_attempts=1_000_000, max_elapsed_s=1e9)


@pytest.fixture(params=["postgres", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    kind: str = request.param
    for reason in (nginx_unavailable(), store_unreachable(kind)):
        if reason is not None:
            pytest.skip(reason)
    with running_cluster(kind, tmp_path, PACED, size=2) as running:
        yield running


def edge_for(base_url: str, *, hold_answers: bool) -> Any:
    ws_url, origin = link_url(base_url)
    options = LinkOptions(ws_url, keepalive_s=0.5, ping_s=1.0, connect_timeout_s=2.0, retry=FAST_RETRY,
                          hold_answers=hold_answers)  # fmt: skip
    return edge_in_thread(EdgeConfig(options, origin), port=free_port())


def status(edge: RunningEdge) -> dict[str, Any]:
    reply: dict[str, Any] = httpx.get(edge.base_url + "/tether/edge/status", timeout=5).json()
    return reply


def agent_turn(edge: RunningEdge) -> tuple[str, list[str]]:
    kinds: list[str] = []
    messages: Any = [{"role": "user", "content": WORDS}]
    with (
        anthropic.Anthropic(base_url=edge.base_url, api_key="agent-key", max_retries=0, timeout=300) as client,
        client.messages.stream(model="echo", max_tokens=8192, messages=messages) as stream,
    ):
        kinds.extend(event.type for event in stream)
        message = stream.get_final_message()
    block = message.content[0]
    assert block.type == "text"
    return block.text, kinds


def in_background(edge: RunningEdge) -> concurrent.futures.Future[tuple[str, list[str]]]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    waiting = pool.submit(agent_turn, edge)
    pool.shutdown(wait=False)
    return waiting


def running_turn(cluster: Cluster, waiting: concurrent.futures.Future[Any]) -> dict[str, Any]:
    """The turn the edge's request started, once a node claimed it."""
    while True:
        running = [turn for turn in cluster.turns() if turn["state"] == "running"]
        if running:
            return running[0]
        assert not waiting.done(), waiting.exception()
        time.sleep(0.02)


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_a_node_killed_mid_answer_costs_the_agent_only_a_pause(cluster: Cluster) -> None:
    with edge_for(cluster.base_url, hold_answers=True) as edge:
        waiting = in_background(edge)
        turn = running_turn(cluster, waiting)
        before = status(edge)["downlink_bytes"]
        while status(edge)["downlink_bytes"] < before + 2000:  # part of the answer crossed the link
            assert not waiting.done(), waiting.exception()
            time.sleep(0.02)
        cluster.node(turn["node"]).kill()
        text, kinds = waiting.result(timeout=300)
        link = status(edge)
    assert text == WORDS  # one complete answer: the interrupted generation's part is not in it
    assert kinds.count("message_start") == 1
    assert kinds.count("message_stop") == 1
    assert link["interrupted"] == 1
    assert link["heals"] == 0  # the surviving node rebuilt the edge's request from the shared store
    turns = cluster.turns()
    states = {entry["id"]: entry["state"] for entry in turns}
    assert states.pop(turn["id"]) == "interrupted"
    assert list(states.values()) == ["done"]  # generated exactly once more, on the surviving node
    assert next(entry["node"] for entry in turns if entry["state"] == "done") != turn["node"]


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_a_link_cut_mid_answer_resumes_on_another_node_from_the_shared_log(cluster: Cluster) -> None:
    nginx_port = cluster.port
    proxy = ShapingProxy("127.0.0.1", nginx_port).start_in_thread()
    with proxy, edge_for(f"http://127.0.0.1:{proxy.port}/v1", hold_answers=False) as edge:
        waiting = in_background(edge)
        running_turn(cluster, waiting)
        proxy.cut_after_bytes("down", 2000, "rst")
        text, kinds = waiting.result(timeout=300)
        link = status(edge)
    assert text == WORDS
    assert kinds.count("message_start") == 1
    assert link["drops"] >= 1
    assert link["lost_turns"] >= 1  # the link came back on a node that had no log of the turn
    assert link["interrupted"] == 0
    assert link["heals"] == 0
    assert [entry["state"] for entry in cluster.turns()] == ["done"]  # one generation
