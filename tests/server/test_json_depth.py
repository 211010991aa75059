"""Deeply nested JSON gets a 400 on every transport, in an item or an unknown field; the limit itself works."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from websockets.asyncio.client import connect

from tether.protocol.json_depth import MAX_JSON_DEPTH
from tether.server.runner import RunningServer

from .wire import (
    MODEL,
    edge_link_url,
    edge_turn_frame,
    expect_edge_turn_answered,
    expect_edge_turn_error,
    expect_http_error,
    expect_ws_error,
    http_client,
    receive,
    receive_turn,
)

# body (1) > input (2) > item (3) > content (4) > part (5) > "extra": the nested arrays.
ITEM_OVERHEAD = 5


def deep_item_body(depth: int, *, stream: bool = False, ws: bool = False) -> str:
    arrays = depth - ITEM_OVERHEAD
    extra = "[" * arrays + "]" * arrays
    head = '{"type":"response.create",' if ws else "{"
    return (
        f'{head}"model":"{MODEL}","stream":{"true" if stream else "false"},'
        '"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi","extra":'
        f"{extra}}}]}}]}}"
    )


def deep_field_body(depth: int) -> str:
    arrays = depth - 1
    return f'{{"model":"{MODEL}","input":"hi","x_unknown":' + "[" * arrays + "]" * arrays + "}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 254, 600, 1023])
async def test_http_refuses_deep_json_in_an_item_or_a_field(server: RunningServer, depth: int) -> None:
    async with http_client(server) as client:
        for body in (deep_item_body(depth), deep_item_body(depth, stream=True), deep_field_body(depth)):
            response = await client.post("/responses", content=body, headers={"content-type": "application/json"})
            expect_http_error(response, 400, "json_too_deep")


async def test_http_serves_the_deepest_allowed_item_and_stores_it(server: RunningServer) -> None:
    async with http_client(server) as client:
        response = await client.post(
            "/responses",
            content=deep_item_body(MAX_JSON_DEPTH),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
        created = response.json()
        assert created["status"] == "completed"
        stored = await client.get(f"/responses/{created['id']}/input_items")
        assert stored.status_code == 200
        streamed = await client.post(
            "/responses",
            content=deep_item_body(MAX_JSON_DEPTH, stream=True),
            headers={"content-type": "application/json"},
        )
        assert streamed.status_code == 200
        assert "response.completed" in streamed.text


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1023])
async def test_websocket_refuses_deep_json_and_keeps_answering(server: RunningServer, depth: int) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send(deep_item_body(depth, ws=True))
        expect_ws_error(await receive(ws), "json_too_deep", 400)
        await ws.send(deep_item_body(MAX_JSON_DEPTH, ws=True))
        events = await receive_turn(ws)
        assert events[-1]["type"] == "response.completed", events[-1]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000])
async def test_the_edge_link_refuses_deep_json_and_keeps_answering(server: RunningServer, depth: int) -> None:
    """An edge's rebuilt request was never checked: 129 levels ran as a turn, and past orjson's writer (254) hashing
    it raised and closed the link, which the edge re-opened to send the same turn again, for ever."""
    request = deep_item_body(depth)
    async with connect(edge_link_url(server)) as ws:
        await ws.send(edge_turn_frame("deep", request))
        expect_edge_turn_error(await receive(ws), "deep", "json_too_deep", 400)
        await ws.send(edge_turn_frame("deepest", deep_item_body(MAX_JSON_DEPTH)))
        await expect_edge_turn_answered(ws, "deepest")
    async with httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}", timeout=10) as client:
        refused = await client.post("/v1/tether/edge", content=edge_turn_frame("http-deep", request))
        expect_http_error(refused, 400, "json_too_deep")
