"""``/metrics``: a known workload over HTTP, SSE and WebSocket, scraped and parsed with prometheus-client's parser,
with exact counter values. Bytes saved are checked against a figure computed here from what the client sent and
what it received, independently of the server's own arithmetic."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from tether.server.runner import RunningServer
from tether.types import Item, JSONObject

from .test_resume import LONG_TEXT, SLOW, read_until, sse
from .wire import ServerFactory, receive_turn

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def user(text: str) -> Item:
    return {"type": "message", "role": "user", "content": text}


class Ledger:
    """What the client knows: every response's whole context, and per transport the bytes it sent and the bytes
    the equivalent stateless requests would have taken."""

    def __init__(self) -> None:
        self.contexts: dict[str, list[Item]] = {}
        self.sent: dict[str, int] = {}
        self.stateless: dict[str, int] = {}

    def record(self, transport: str, body: JSONObject, sent_bytes: int, response: JSONObject) -> None:
        parent = body.get("previous_response_id")
        context = [*(self.contexts[parent] if parent else []), *body["input"]]
        params = {"model": body["model"]}  # the only parameter these turns set
        stateless = len(orjson.dumps({**params, "input": context}))
        self.contexts[response["id"]] = [*context, *response["output"]]
        self.sent[transport] = self.sent.get(transport, 0) + sent_bytes
        self.stateless[transport] = self.stateless.get(transport, 0) + stateless


async def http_turn(client: httpx.AsyncClient, ledger: Ledger, **fields: Any) -> JSONObject:
    body: JSONObject = {"model": "echo", **fields}
    raw = orjson.dumps(body)
    response = await client.post("/responses", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    result: JSONObject = response.json()
    ledger.record("http", body, len(raw), result)
    return result


async def ws_turn(ws: ClientConnection, ledger: Ledger, **fields: Any) -> JSONObject:
    body: JSONObject = {"model": "echo", **fields}
    text = orjson.dumps({"type": "response.create", **body}).decode()
    await ws.send(text)
    events = await receive_turn(ws)
    assert events[-1]["type"] == "response.completed", events[-1]
    result: JSONObject = events[-1]["response"]
    ledger.record("websocket", body, len(text.encode()), result)
    return result


def scrape(server: RunningServer) -> Samples:
    text = httpx.get(f"http://{server.host}:{server.port}/metrics", timeout=10).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_known_workload_gives_exact_counters(make_server: ServerFactory) -> None:
    server = make_server(hot_cache_size=1)
    ledger = Ledger()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        a1 = await http_turn(client, ledger, input=[user("first chain, first turn")])  # new chain
        async with connect(server.ws_url) as ws:
            b1 = await ws_turn(ws, ledger, input=[user("second chain")])  # new chain; evicts a1 from the hot cache
            a2 = await http_turn(client, ledger, previous_response_id=a1["id"], input=[user("again")])  # store
            b2 = await ws_turn(ws, ledger, previous_response_id=b1["id"], input=[user("on the lane")])  # lane
        await http_turn(client, ledger, previous_response_id=b2["id"], input=[user("fork b2")])  # hot cache
        await http_turn(client, ledger, previous_response_id=a2["id"], input=[user("and again")])  # store
        missing = await client.post("/responses", json={"model": "echo", "previous_response_id": "resp_nope"})
        assert missing.status_code == 400
        keyed = {"model": "echo", "input": [user("once")], "tether:idempotency_key": "k-1"}
        first = await http_turn(client, ledger, **{k: v for k, v in keyed.items() if k != "model"})
        replay = await client.post("/responses", json=keyed)
        assert replay.json()["id"] == first["id"]
    samples = scrape(server)

    turns = "tether_turns_total"
    assert value(samples, turns, transport="http", route="default", provider="scripted", outcome="completed") == 5
    assert value(samples, turns, transport="websocket", route="default", provider="scripted", outcome="completed") == 2
    assert value(samples, turns, transport="http", route="default", provider="scripted", outcome="rejected") == 1
    continuations = "tether_continuations_total"
    assert value(samples, continuations, resolution="new_chain") == 3
    assert value(samples, continuations, resolution="store") == 2
    assert value(samples, continuations, resolution="lane") == 1
    assert value(samples, continuations, resolution="hot_cache") == 1
    assert value(samples, "tether_idempotent_replays_total", source="live") == 1
    for transport in ("http", "websocket"):
        saved = ledger.stateless[transport] - ledger.sent[transport]
        assert value(samples, "tether_turn_request_bytes_total", transport=transport) == ledger.sent[transport]
        assert (
            value(samples, "tether_turn_stateless_request_bytes_total", transport=transport)
            == (ledger.stateless[transport])
        )
        assert value(samples, "tether_turn_bytes_saved_sum", transport=transport) == saved
    assert value(samples, "tether_turn_bytes_saved_count", transport="http") == 5
    assert ledger.stateless["http"] > ledger.sent["http"]  # continuing chains saves bytes, and the figure shows it
    assert value(samples, "tether_turn_duration_seconds_count", transport="http", outcome="completed") == 5
    assert value(samples, "tether_time_to_first_token_seconds_count", transport="websocket", provider="scripted") == 2
    assert value(samples, "tether_upstream_duration_seconds_count", provider="scripted") == 7
    # Each stored turn commits once: its record, its last events and "done" in one fenced finish_turn.
    assert value(samples, "tether_store_operation_duration_seconds_count", operation="finish_turn") == 7
    assert value(samples, "tether_store_operation_duration_seconds_count", operation="load_context") == 2
    assert value(samples, "tether_websocket_connections") == 0
    assert value(samples, "tether_lanes_active") == 0
    assert value(samples, "tether_bytes_received_total", transport="websocket") == ledger.sent["websocket"]
    assert value(samples, "tether_bytes_sent_total", transport="websocket") > 0
    assert value(samples, "tether_bytes_received_total", transport="http") >= ledger.sent["http"]


async def test_resumes_after_a_forced_cut_are_counted(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        for _ in range(2):
            async with client.stream(
                "POST", "/responses", json={"model": "echo", "input": LONG_TEXT, "stream": True}
            ) as r:
                head = await read_until(r, 5)  # the client drops the stream here
            response_id, last = head[0]["response"]["id"], head[-1]["sequence_number"]
            async with client.stream("GET", f"/responses/{response_id}?stream=true&starting_after={last}") as resumed:
                tail = [event async for event in sse(resumed)]
            assert tail[0]["sequence_number"] == last + 1
        async with connect(server.ws_url) as ws:  # and one cut on a WebSocket, resumed on a new one
            await ws.send(orjson.dumps({"type": "response.create", "model": "echo", "input": LONG_TEXT}).decode())
            head = [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(6)]
        resume = {
            "type": "tether:response.resume",
            "response_id": head[0]["response"]["id"],
            "starting_after": head[-1]["sequence_number"],
        }
        async with connect(server.ws_url) as ws:
            await ws.send(orjson.dumps(resume).decode())
            assert (await receive_turn(ws))[-1]["type"] == "response.completed"
    samples = scrape(server)
    assert value(samples, "tether_resumes_total") == 3
    assert (
        value(samples, "tether_turns_total", transport="sse", route="default", provider="scripted", outcome="completed")
        == 2
    )


async def test_labels_never_carry_ids(make_server: ServerFactory) -> None:
    server = make_server(api_keys={"sk-test-secret": "acme"})
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        done = await client.post(
            "/responses", json={"model": "echo", "input": "hi"}, headers={"authorization": "Bearer sk-test-secret"}
        )
        assert done.status_code == 200
    text = httpx.get(f"http://{server.host}:{server.port}/metrics", timeout=10).text
    for secret in (done.json()["id"], "acme", "sk-test-secret", "conn_"):
        assert secret not in text
