"""model_not_found is one error on every transport: an HTTP 400 and a request-scoped WebSocket error event."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect

from tether.server.runner import RunningServer

from .wire import ServerFactory, error_turn, expect_http_error, http_client


@pytest.fixture
def routed(make_server: ServerFactory) -> RunningServer:
    upstream = {"kind": "chat-completions", "base_url": "http://127.0.0.1:9/v1"}
    return make_server(providers={"up": upstream}, routes=[{"model": "up-*", "provider": "up"}])


@pytest.mark.parametrize("model", ["gpt-5-typo", "script:absent"])
async def test_an_unroutable_model_is_model_not_found_over_http_and_websocket(
    routed: RunningServer, model: str
) -> None:
    async with http_client(routed) as client:
        for stream in (False, True):
            response = await client.post("/responses", json={"model": model, "input": "hi", "stream": stream})
            expect_http_error(response, 400, "model_not_found")
    async with connect(routed.ws_url) as ws:
        error = await error_turn(ws, model=model, input="hi")
        assert error["error"]["code"] == "model_not_found"
        assert error["error"]["param"] == "model"
        assert error["status"] == 400


async def test_an_unknown_script_is_the_same_error_without_upstreams(server: RunningServer) -> None:
    async with http_client(server) as client:
        response = await client.post("/responses", json={"model": "script:absent", "input": "hi"})
        http_error = expect_http_error(response, 400, "model_not_found")
        answered = await client.post("/responses", json={"model": "gpt-anything", "input": "hi"})
        assert answered.status_code == 200
    async with connect(server.ws_url) as ws:
        ws_error = await error_turn(ws, model="script:absent", input="hi")
    assert ws_error["error"] == http_error
