"""Three ``tether serve`` nodes on one PostgreSQL, and on one Redis, behind a real nginx doing round robin.

- The ``openai`` SDK runs a 20-turn tool loop over HTTP; every turn lands on another node than the one before.
- A stream read half-way through nginx is resumed with ``starting_after`` on another node, following the live
  generation.
- The WebSocket resume event, and an idempotent retry, on other nodes follow the one live generation.
- A node shut down mid-turn drains it (or, past the grace, gives it up as interrupted, retried once); ``store=false``
  turns never reach the shared store.
- A background response's cancel sent to a node that does not generate it answers 200 ``cancelled`` (the generating
  node stops it at its next heartbeat), and every node reads it cancelled.
- The tether client runs a 20-turn loop over WebSocket while the node it is connected to is SIGKILLed, between turns
  and mid-stream, at seeded points. Every trial: no completed turn lost, no delta duplicated or missing, exactly one
  completed generation per turn across the nodes, and each interrupted turn reported and retried once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx2 as httpx
import pytest
from openai import OpenAI
from openai.types.responses import FunctionToolParam
from websockets.asyncio.client import ClientConnection, connect

from tether.client import AsyncSession, RetryPolicy, TextDelta, TurnReset
from tether.types import JSONObject

from .support import (
    FINAL_TEXT,
    LOOKUP_TOOL,
    TURNS,
    Cluster,
    nginx_unavailable,
    running_cluster,
    step_text,
    store_unreachable,
)

MODEL = "script:cluster_loop"
PACED = {"TETHER_SCRIPTED__TTFT_S": "0.02", "TETHER_SCRIPTED__TOKENS_PER_SECOND": "60"}
SEEDS = {"postgres": 11, "redis": 12}
TEST_TIMEOUT_S = 600.0
INTERRUPTION_COUNTERS = (
    "tether_generations_interrupted_total",
    "tether_claims_taken_over_total",
    "tether_lease_renewals_failed_total",
)


@pytest.fixture(params=["postgres", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    kind: str = request.param
    for reason in (nginx_unavailable(), store_unreachable(kind)):
        if reason is not None:
            pytest.skip(reason)
    with running_cluster(kind, tmp_path, PACED) as running:
        yield running


def expected_text(turn: int) -> str:
    return FINAL_TEXT if turn == TURNS - 1 else step_text(turn + 1)


def assert_one_completed_generation_per_turn(cluster: Cluster, interrupted: int) -> None:
    turns = cluster.turns()
    done = Counter(turn["key"] for turn in turns if turn["state"] == "done")
    assert len(done) == TURNS
    assert set(done.values()) == {1}
    assert sum(turn["state"] == "interrupted" for turn in turns) == interrupted
    assert not [turn for turn in turns if turn["state"] == "running"]


def assert_each_interrupted_turn_retried_once(turns: list[dict[str, Any]], shown: list[list[str]]) -> None:
    """Every interrupted generation was shown to the client, which created its turn exactly once more (same key)."""
    by_id = {turn["id"]: turn for turn in turns}
    for attempts in shown:
        *interrupted, completed = attempts
        assert [by_id[response_id]["state"] for response_id in interrupted] == ["interrupted"] * len(interrupted)
        assert by_id[completed]["state"] == "done"
        assert len(set(attempts)) == len(attempts)
        assert {by_id[response_id]["key"] for response_id in attempts} == {by_id[completed]["key"]}
    reported = {response_id for attempts in shown for response_id in attempts[:-1]}
    assert reported == {turn["id"] for turn in turns if turn["state"] == "interrupted"}


async def assert_no_completed_turn_lost(cluster: Cluster, completed: list[str]) -> None:
    """Every node serves every completed turn of the loop, with its text."""
    async with httpx.AsyncClient(timeout=30.0) as client:
        for node in cluster.nodes:
            for turn, response_id in enumerate(completed):
                stored = (await client.get(f"http://127.0.0.1:{node.port}/v1/responses/{response_id}")).json()
                assert stored["status"] == "completed"
                texts = [
                    part["text"] for item in stored["output"] if item["type"] == "message" for part in item["content"]
                ]
                assert texts == [expected_text(turn)]


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_openai_sdk_tool_loop_lands_on_another_node_every_turn(cluster: Cluster) -> None:
    previous: str | None = None
    items: Any = "Run the cluster loop."
    nodes: list[str] = []
    with OpenAI(base_url=cluster.base_url, api_key="unused", max_retries=0) as client:
        for turn in range(TURNS):
            response = client.responses.create(
                model=MODEL,
                input=items,
                tools=[cast(FunctionToolParam, LOOKUP_TOOL)],
                previous_response_id=previous,
                extra_headers={"Idempotency-Key": f"http-turn-{turn}"},
            )
            assert response.status == "completed"
            assert response.output_text == expected_text(turn)
            nodes.append(cluster.node_of(response.id))
            calls = [item for item in response.output if item.type == "function_call"]
            if turn < TURNS - 1:
                [call] = calls
                assert json.loads(call.arguments) == {"step": turn + 1}
                items = [{"type": "function_call_output", "call_id": call.call_id, "output": f"fact {turn + 1}"}]
            else:
                assert calls == []
            previous = response.id

    assert all(before != after for before, after in itertools.pairwise(nodes)), nodes
    assert len(set(nodes)) == 3
    assert_one_completed_generation_per_turn(cluster, interrupted=0)
    assert [node.counters(*INTERRUPTION_COUNTERS) for node in cluster.nodes] == [Counter()] * 3  # none, no alarm


def sse_events(body: bytes) -> list[JSONObject]:
    events = []
    for frame in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].strip() for line in frame.split(b"\n") if line.startswith(b"data:")]
        if data and data[0] != b"[DONE]":
            events.append(json.loads(b"\n".join(data)))
    return events


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_http_starting_after_on_another_node_follows_the_live_generation(cluster: Cluster) -> None:
    body = {"model": "echo", "input": "tell the story " * 40, "stream": True}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cluster.port}", timeout=60.0) as client:
        head: list[JSONObject] = []
        async with client.stream("POST", "/v1/responses", json=body) as stream:
            buffer = b""
            async for chunk in stream.aiter_bytes():
                buffer += chunk
                head = sse_events(buffer.rsplit(b"\n\n", 1)[0])
                if len(head) >= 6:
                    break  # drop the connection half-way
        response_id = head[0]["response"]["id"]
        after = head[-1]["sequence_number"]
        resumed = await client.get(f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": after})
        tail = sse_events(resumed.content)

    whole = head + tail
    assert [event["sequence_number"] for event in whole] == list(range(len(whole)))
    assert whole[-1]["type"] == "response.completed"
    text = "".join(event["delta"] for event in whole if event["type"] == "response.output_text.delta")
    assert text == whole[-1]["response"]["output"][0]["content"][0]["text"]
    assert len([turn for turn in cluster.turns() if turn["state"] == "done"]) == 1


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_tether_client_loop_survives_its_node_being_killed(cluster: Cluster) -> None:
    rng = random.Random(SEEDS[cluster.kind])
    between = set(rng.sample(range(1, TURNS), 3))  # kill before these turns start
    midway = {turn: rng.randint(1, 4) for turn in rng.sample(sorted(set(range(TURNS)) - between), 3)}  # after N deltas
    restarts: dict[str, asyncio.Task[None]] = {}
    shown: list[list[str]] = []
    killed_midway: list[str] = []
    lives: dict[tuple[str, int], Counter[tuple[str, tuple[tuple[str, str], ...]]]] = {}  # per node process

    async def scrape() -> None:
        """Each node process's counters, read before every turn: a turn kills at most one node, and the only
        interruption it can bring is counted after that kill, so a killed process's last reading is its whole life."""
        for node in cluster.nodes:
            lives[(node.name, node.starts)] = await asyncio.to_thread(node.counters, *INTERRUPTION_COUNTERS)

    async def kill(node_name: str) -> None:
        node = cluster.node(node_name)
        await asyncio.to_thread(node.kill)
        starting = restarts.pop(node_name, None)
        if starting is not None:  # it served before its start-up check saw it ready, which now fails
            with contextlib.suppress(RuntimeError):
                await starting
        restarts[node_name] = asyncio.create_task(asyncio.to_thread(node.start))

    retry = RetryPolicy(initial_delay_s=0.05, max_delay_s=1.0, max_attempts=60, max_elapsed_s=120.0)
    async with AsyncSession(
        cluster.base_url, model=MODEL, tools=[LOOKUP_TOOL], transport="websocket", retry=retry, seed=1
    ) as session:
        items: Any = "Run the cluster loop."
        for turn in range(TURNS):
            await scrape()
            if turn in between:
                assert session.last_response_id is not None
                await kill(cluster.node_of(session.last_response_id))
            stream = session.stream(items)
            texts: list[str] = []
            resets = deltas = 0
            attempts: list[str] = []  # the responses the client was shown for this turn, the last one completed
            async for delta in stream:
                if not attempts and session.pending is not None and session.pending.response_id is not None:
                    attempts.append(session.pending.response_id)
                if isinstance(delta, TurnReset):
                    texts, resets = [], resets + 1
                    attempts.append(delta.response_id)
                elif isinstance(delta, TextDelta):
                    texts.append(delta.text)
                    deltas += 1
                    if midway.get(turn) == deltas and resets == 0:
                        pending = session.pending
                        assert pending is not None
                        assert pending.response_id is not None
                        killed_midway.append(pending.response_id)
                        await kill(cluster.node_of(pending.response_id))
            result = stream.result
            assert result.status == "completed"
            assert "".join(texts) == result.text == expected_text(turn)  # each delta once, none missing
            assert attempts[-1] == result.response_id
            shown.append(attempts)
            if turn < TURNS - 1:
                [call] = result.function_calls
                items = [call.output(f"fact {turn + 1}")]
        await asyncio.gather(*restarts.values())
    await scrape()
    reported = sum(lives.values(), Counter())

    # Each kill mid-stream interrupted its generation (unless the turn committed first: then nothing was lost), the
    # client was told and created the turn once more.
    turns = cluster.turns()
    states = {turn["id"]: turn["state"] for turn in turns}
    interrupted = sum(states[response_id] == "interrupted" for response_id in killed_midway)
    assert len(killed_midway) == len(midway)
    assert interrupted >= 1
    assert session.stats.interrupted == interrupted
    assert_one_completed_generation_per_turn(cluster, interrupted=interrupted)
    assert_each_interrupted_turn_retried_once(turns, shown)
    await assert_no_completed_turn_lost(cluster, [attempts[-1] for attempts in shown])
    # The nodes that took the dead nodes' claims over counted each interruption once, and nothing else.
    assert reported == {
        ("tether_generations_interrupted_total", (("node", dead), ("reason", "lease_expired"))): count
        for dead, count in Counter(turn["node"] for turn in turns if turn["state"] == "interrupted").items()
    } | {
        ("tether_claims_taken_over_total", (("node", dead),)): count
        for dead, count in Counter(turn["node"] for turn in turns if turn["state"] == "interrupted").items()
    }


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_a_node_shut_down_mid_turn_drains_it_and_the_client_follows_it_elsewhere(cluster: Cluster) -> None:
    killed: list[str] = []
    async with AsyncSession(
        cluster.base_url, model=MODEL, tools=[LOOKUP_TOOL], transport="websocket", seed=2
    ) as session:
        stream = session.stream("Run the cluster loop.")
        texts: list[str] = []
        async for delta in stream:
            if isinstance(delta, TextDelta):
                texts.append(delta.text)
                if len(texts) == 2:
                    pending = session.pending
                    assert pending is not None
                    assert pending.response_id is not None
                    node = cluster.node(cluster.node_of(pending.response_id))
                    killed.append(pending.response_id)
                    await asyncio.to_thread(node.stop)  # SIGTERM: stop taking connections, drain in-flight turns
        result = stream.result

    assert result.status == "completed"
    assert "".join(texts) == result.text == expected_text(0)
    assert result.response_id == killed[0]  # the drained generation itself finished: nothing was generated twice
    assert session.stats.interrupted == 0
    assert [turn["state"] for turn in cluster.turns()] == ["done"]


async def receive_until_terminal(ws: ClientConnection) -> list[JSONObject]:
    events: list[JSONObject] = []
    while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
        events.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    return events


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_the_websocket_resume_event_on_another_node_follows_the_live_generation(cluster: Cluster) -> None:
    create = {"type": "response.create", "model": "echo", "input": "tell the story " * 40}
    async with connect(f"ws://127.0.0.1:{cluster.port}/v1/responses") as ws:
        await ws.send(json.dumps(create))
        head = [json.loads(await asyncio.wait_for(ws.recv(), 60)) for _ in range(6)]
    response_id = head[0]["response"]["id"]
    generating = cluster.node_of(response_id)
    other = next(node for node in cluster.nodes if node.name != generating)
    resume = {
        "type": "tether:response.resume",
        "response_id": response_id,
        "starting_after": head[-1]["sequence_number"],
    }
    async with connect(f"ws://127.0.0.1:{other.port}/v1/responses") as ws:
        await ws.send(json.dumps(resume))
        tail = await receive_until_terminal(ws)

    whole = head + tail
    assert [event["sequence_number"] for event in whole] == list(range(len(whole)))
    assert whole[-1]["type"] == "response.completed"
    text = "".join(event["delta"] for event in whole if event["type"] == "response.output_text.delta")
    assert text == whole[-1]["response"]["output"][0]["content"][0]["text"]
    assert [turn["state"] for turn in cluster.turns()] == ["done"]


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_an_idempotent_retry_on_other_nodes_follows_the_one_generation(cluster: Cluster) -> None:
    body = {"model": "echo", "input": "tell the story " * 40}
    headers = {"Idempotency-Key": "the-same-turn"}

    async def post(node_port: int) -> Any:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node_port}", timeout=60.0) as client:
            return (await client.post("/v1/responses", json=body, headers=headers)).json()

    answers = await asyncio.gather(*(post(node.port) for node in cluster.nodes))

    assert len({answer["id"] for answer in answers}) == 1
    assert {answer["status"] for answer in answers} == {"completed"}
    assert len({json.dumps(answer["output"]) for answer in answers}) == 1
    assert [turn["state"] for turn in cluster.turns()] == ["done"]


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_a_turn_longer_than_the_shutdown_grace_is_given_up_and_generated_once_more(cluster: Cluster) -> None:
    long_input = "tell the story " * 40  # about 2.5 s of output at the paced rate, past the 2 s shutdown grace
    async with AsyncSession(cluster.base_url, model="echo", transport="websocket", seed=3) as session:
        stream = session.stream(long_input)
        texts: list[str] = []
        first_id: str | None = None
        async for delta in stream:
            if isinstance(delta, TurnReset):
                texts = []
            elif isinstance(delta, TextDelta):
                texts.append(delta.text)
                if first_id is None and len(texts) == 2:
                    pending = session.pending
                    assert pending is not None
                    first_id = pending.response_id
                    assert first_id is not None
                    await asyncio.to_thread(cluster.node(cluster.node_of(first_id)).stop)
        result = stream.result

    assert result.status == "completed"
    assert "".join(texts) == result.text
    assert result.response_id != first_id
    assert session.stats.interrupted == 1
    states = {turn["id"]: turn["state"] for turn in cluster.turns()}
    assert states == {first_id: "interrupted", result.response_id: "done"}


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_store_false_turns_never_reach_the_shared_store(cluster: Cluster) -> None:
    async with connect(f"ws://127.0.0.1:{cluster.port}/v1/responses") as ws:
        await ws.send(json.dumps({"type": "response.create", "model": "echo", "input": "secret", "store": False}))
        events = await receive_until_terminal(ws)
    response_id = events[-1]["response"]["id"]
    assert events[-1]["type"] == "response.completed"

    assert cluster.turns() == []
    async with httpx.AsyncClient(timeout=30.0) as client:
        for node in cluster.nodes:
            missing = await client.get(f"http://127.0.0.1:{node.port}/v1/responses/{response_id}")
            assert missing.status_code == 404


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_a_background_response_is_cancelled_through_a_node_that_does_not_generate_it(cluster: Cluster) -> None:
    story = "tell the story " * 400  # echo streams it back at 60 tokens/s: far longer than the test
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cluster.port}", timeout=60.0) as client:
        created = await client.post("/v1/responses", json={"model": "echo", "input": story, "background": True})
        response_id = created.json()["id"]
        generating = cluster.node_of(response_id)
        elsewhere = next(node for node in cluster.nodes if node.name != generating)

        cancel = await client.post(f"http://127.0.0.1:{elsewhere.port}/v1/responses/{response_id}/cancel")
        assert cancel.status_code == 200, cancel.text  # at once: no 409 to retry
        cancelled = cancel.json()
        reads = [
            (await client.get(f"http://127.0.0.1:{node.port}/v1/responses/{response_id}")).json()
            for node in cluster.nodes
        ]

    assert (cancelled["id"], cancelled["status"], cancelled["background"]) == (response_id, "cancelled", True)
    assert [read["status"] for read in reads] == ["cancelled"] * len(cluster.nodes)
    text = "".join(part["text"] for item in reads[0]["output"] for part in item.get("content", []))
    assert len(text) < len(story)  # the generation stopped part-way
    assert [turn["state"] for turn in cluster.turns() if turn["id"] == response_id] == ["done"]
