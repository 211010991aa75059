"""Per-request and per-connection limits: input items and JSON values per request, and resumes counted like turns."""

from __future__ import annotations

import asyncio
import json
import os

import httpx2 as httpx
import orjson
from websockets.asyncio.client import connect

from tether.server.edge_link import EdgeGateway
from tether.server.runner import RunningServer, serve_in_thread
from tether.server.state import ServerState
from tether.settings import Settings

from .wire import (
    MODEL,
    ServerFactory,
    collect,
    edge_link_url,
    edge_turn_frame,
    ends_turn,
    expect_edge_turn_answered,
    expect_edge_turn_error,
    expect_http_error,
    expect_ws_error,
    http_client,
    receive,
    receive_turn,
)


def many_items(count: int) -> list[dict[str, str]]:
    return [{"type": "message", "role": "user", "content": "x"} for _ in range(count)]


async def test_too_many_input_items_is_a_400_on_http_and_websocket(make_server: ServerFactory) -> None:
    server = make_server(max_input_items=5)
    async with http_client(server) as client:
        for path in ("/responses", "/responses/compact", "/responses/input_tokens"):
            refused = await client.post(path, json={"model": MODEL, "input": many_items(6)})
            error = expect_http_error(refused, 400, "too_many_input_items")
            assert error["param"] == "input"
        assert (await client.post("/responses", json={"model": MODEL, "input": many_items(5)})).status_code == 200
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": many_items(6)}))
        expect_ws_error(await receive(ws), "too_many_input_items", 400)


def tiny_parts(parts: int) -> list[dict[str, object]]:
    """One message of ``parts`` tiny content parts: ``3 * parts + 4`` JSON values."""
    return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}] * parts}]


def commas_in_strings(count: int) -> list[dict[str, object]]:
    """Over the cheap bound of commas and brackets (they are all in a string), and 4 values in truth."""
    return [{"type": "message", "role": "user", "content": "f(a, [b], {c})," * count}]


async def test_too_many_json_values_is_a_400_on_http_sse_and_websocket(make_server: ServerFactory) -> None:
    server = make_server(max_json_values=1000)
    over = tiny_parts(400)  # 1,204 values in the item, 1,208 in the body (with model, input and stream)
    async with http_client(server) as client:
        for path in ("/responses", "/responses/compact", "/responses/input_tokens"):
            for stream in (False, True):
                refused = await client.post(path, json={"model": MODEL, "input": over, "stream": stream})
                error = expect_http_error(refused, 400, "too_many_json_values")
                assert "1208 JSON values; at most 1000" in error["message"]
        within = await client.post("/responses", json={"model": MODEL, "input": tiny_parts(300), "stream": True})
        assert within.status_code == 200
        assert "response.completed" in within.text
        counted = await client.post("/responses", json={"model": MODEL, "input": commas_in_strings(1000)})
        assert counted.status_code == 200, counted.text
        assert counted.json()["status"] == "completed"
    async with connect(server.ws_url) as ws:
        for lane in ("named-1", None):
            labelled = {"stream_id": lane} if lane else {}
            await ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": over, **labelled}))
            error_event = expect_ws_error(await receive(ws), "too_many_json_values", 400)
            assert error_event.get("stream_id") == lane
            # The socket stays open, and the lane takes the next turn.
            await ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": "hi", **labelled}))
            events = await receive_turn(ws)
            assert events[-1]["type"] == "response.completed", events[-1]
            assert events[-1].get("stream_id") == lane


async def test_the_default_limit_refuses_a_small_body_of_many_values(server: RunningServer) -> None:
    async with http_client(server) as client:
        body = {"model": MODEL, "input": tiny_parts(33_333)}  # 100,006 values in ~1.2 MB
        refused = await client.post("/responses", json=body)
        assert "at most 100000 are allowed" in expect_http_error(refused, 400, "too_many_json_values")["message"]
        body = {"model": MODEL, "input": tiny_parts(33_331)}  # 100,000: the limit itself
        assert (await client.post("/responses", json=body)).status_code == 200


def test_an_in_process_server_stops_its_counting_worker() -> None:
    settings = Settings(store_url="memory://", log_level="warning", max_json_values=10)
    with serve_in_thread(settings) as running:
        state: ServerState = running.app.state.tether
        assert state.value_counter.pid is None  # started on first need only
        with httpx.Client(base_url=running.base_url) as client:
            refused = client.post("/responses", json={"model": MODEL, "input": tiny_parts(4)})
            assert refused.json()["error"]["code"] == "too_many_json_values"
        pid = state.value_counter.pid
        assert pid is not None
    assert state.value_counter.pid is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError(f"the counting worker {pid} outlived its server")


async def test_resumes_count_against_the_lane_limits(make_server: ServerFactory) -> None:
    # The resumed response is still generating (slowly), so every admitted resume holds its slot until it ends.
    # Slow enough (several seconds) that the first resume cannot finish and free its slot before the fourth arrives,
    # however loaded the machine.
    server = make_server(websocket={"max_in_flight": 1, "max_queued": 1}, scripted={"tokens_per_second": 8.0})
    async with connect(server.ws_url) as generating, connect(server.ws_url) as ws:
        await generating.send(json.dumps({"type": "response.create", "model": "echo", "input": "word " * 30}))
        created = await receive(generating)
        assert created["type"] == "response.created"
        resume = {"type": "tether:response.resume", "response_id": created["response"]["id"]}
        for lane in ("a", "b", "c", "d"):
            await ws.send(json.dumps({**resume, "stream_id": lane}))
        events = await collect(ws, lambda seen: sum(ends_turn(event) for event in seen) >= 4, within_s=60)
    refused = [event for event in events if event["type"] == "error"]
    replayed = {event["stream_id"] for event in events if event["type"] == "response.completed"}
    # One resume runs, one waits its turn, the other two are refused as turns would be.
    assert replayed == {"a", "b"}
    assert len(refused) == 2
    for event in refused:
        expect_ws_error(event, "websocket_queue_full", 429)


async def test_large_websocket_messages_are_read_off_the_loop_with_the_same_answers(server: RunningServer) -> None:
    text = "w" * (1536 * 1024)
    async with connect(server.ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "response.create", "model": "echo", "input": text, "store": False}))
        events = await collect(ws, lambda seen: bool(seen) and ends_turn(seen[-1]), within_s=60)
        assert events[-1]["type"] == "response.completed"
        await ws.send('{"type": "response.create", "input": "' + text + '"')
        expect_ws_error(await receive(ws), "invalid_json", 400)
        await ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": many_items(10_001)}))
        expect_ws_error(await receive(ws), "too_many_input_items", 400)


async def test_too_many_json_values_on_the_edge_link_ends_that_turn_only(make_server: ServerFactory) -> None:
    """The edge link decoded every frame on the event loop, however many values it held, and ran the turn: the limit
    of every other transport did not apply to an edge's requests. Now a frame over it is refused undecoded, a
    rebuilt request over it (a small delta on a large base) too, each as an error naming its turn; the link goes on."""
    server = make_server(max_json_values=1000)
    base = {"model": MODEL, "input": tiny_parts(250)}  # 760 values
    grown = {**base, "input": [*base["input"], *tiny_parts(100)]}  # 1,067 values, from a delta of about 310
    async with connect(edge_link_url(server)) as ws:
        await ws.send(edge_turn_frame("over", {"model": MODEL, "input": tiny_parts(400)}))
        expect_edge_turn_error(await receive(ws), "over", "too_many_json_values", 400)
        await ws.send(edge_turn_frame("base", base, headers={}))  # whole headers: the refused frame's were not read
        await expect_edge_turn_answered(ws, "base")
        await ws.send(edge_turn_frame("grown", grown, base))
        error = expect_edge_turn_error(await receive(ws), "grown", "too_many_json_values", 400)
        assert "at most 1000" in error["error"]["message"]
        await ws.send(edge_turn_frame("after", {"model": MODEL, "input": "hi"}))
        await expect_edge_turn_answered(ws, "after")
    async with httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}", timeout=10) as client:
        refused = await client.post("/v1/tether/edge", content=edge_turn_frame("http-over", grown))
        expect_http_error(refused, 400, "too_many_json_values")


async def test_a_frame_over_the_size_limit_ends_its_turn_only(make_server: ServerFactory) -> None:
    server = make_server(max_body_bytes=4096)
    async with connect(edge_link_url(server)) as ws:
        await ws.send(edge_turn_frame("big", {"model": MODEL, "input": "x" * 6000}))
        expect_edge_turn_error(await receive(ws), "big", "frame_too_large", 413)
        await ws.send(edge_turn_frame("after", {"model": MODEL, "input": "hi"}, headers={}))
        await expect_edge_turn_answered(ws, "after")


async def test_the_edge_links_size_limit_counts_utf8_bytes(make_server: ServerFactory) -> None:
    """The limit is in bytes, as on HTTP and the agent's WebSocket, but the edge link counted a frame's characters
    and a rebuilt request's too: a request of 'é' (two bytes each) up to twice the limit ran as a turn, and one
    rebuilt from a delta up to four times (at most 4 bytes a character)."""
    server = make_server(max_body_bytes=4096)
    async with connect(edge_link_url(server)) as ws:
        big = orjson.dumps({"model": MODEL, "input": "\u00e9" * 3000}).decode()  # 6 KB as the edge sends it
        assert len(big) < 4096 < len(big.encode())
        await ws.send(edge_turn_frame("big", big))
        expect_edge_turn_error(await receive(ws), "big", "frame_too_large", 413)
        base = {"model": MODEL, "input": "\u00e9" * 1500}
        await ws.send(edge_turn_frame("base", orjson.dumps(base).decode(), headers={}))
        await expect_edge_turn_answered(ws, "base")
        grown = {**base, "instructions": "\u00e9" * 1500}  # the delta holds the new text only
        await ws.send(orjson.dumps(orjson.loads(edge_turn_frame("grown", grown, base))).decode())
        expect_edge_turn_error(await receive(ws), "grown", "request_too_large", 413)
        await ws.send(edge_turn_frame("after", {"model": MODEL, "input": "hi"}))
        await expect_edge_turn_answered(ws, "after")


async def test_after_a_frame_refused_unread_a_turn_must_bring_whole_headers(make_server: ServerFactory) -> None:
    """The refused frame's headers delta was never applied, but the edge counted it sent: a turn relying on it would
    run with the headers of the turn before (another agent's key). It is refused until whole headers come."""
    server = make_server(max_body_bytes=4096)
    async with connect(edge_link_url(server)) as ws:
        await ws.send(edge_turn_frame("first", {"model": MODEL, "input": "a"}, headers={"x-api-key": "key-a"}))
        await expect_edge_turn_answered(ws, "first")
        big = {"model": MODEL, "input": "x" * 6000}
        await ws.send(edge_turn_frame("big", big, headers={"x-api-key": "key-b"}))
        expect_edge_turn_error(await receive(ws), "big", "frame_too_large", 413)
        await ws.send(edge_turn_frame("next", {"model": MODEL, "input": "b"}))  # the headers the edge believes sent
        refused = await receive(ws)
        assert (refused["type"], refused["turn"], refused["code"]) == ("tether:edge.refused", "next", "headers_unknown")
        await ws.send(edge_turn_frame("next", {"model": MODEL, "input": "b"}, headers={"x-api-key": "key-b"}))
        await expect_edge_turn_answered(ws, "next")


async def test_a_frame_the_gateway_could_not_count_ends_its_own_turn_only(make_server: ServerFactory) -> None:
    """A 503 from the counting worker (it could not run) went out without a turn, which ends every turn in flight on
    the edge: one frame's transient fault failed every other agent's turn. The frame's turn, as the edge writes its
    frames (``type`` then ``turn`` first), is now named, and the error ends that turn only."""
    server = make_server(max_json_values=1000)
    edge: EdgeGateway = server.app.state.tether_edge
    assert server.loop is not None
    asyncio.run_coroutine_threadsafe(edge.value_counter.aclose(), server.loop).result(timeout=10)
    async with connect(edge_link_url(server)) as ws:
        counted = {"model": MODEL, "input": tiny_parts(400)}  # over the cheap bound: the worker must count it
        await ws.send(orjson.dumps(orjson.loads(edge_turn_frame("counted", counted))).decode())  # as the edge writes
        error = expect_edge_turn_error(await receive(ws), "counted", "server_error", 503)
        assert "try again" in error["error"]["message"]
        await ws.send(edge_turn_frame("after", {"model": MODEL, "input": "hi"}, headers={}))
        await expect_edge_turn_answered(ws, "after")
