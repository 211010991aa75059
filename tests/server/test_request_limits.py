"""Per-request and per-connection limits: input items per request, and resumes counted like turns."""

from __future__ import annotations

import json

from websockets.asyncio.client import connect

from tether.server.runner import RunningServer

from .wire import MODEL, ServerFactory, collect, ends_turn, expect_http_error, expect_ws_error, http_client, receive


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
