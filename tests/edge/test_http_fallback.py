"""The link's HTTP fallback: an edge whose WebSocket is refused carries its turns as ``POST``s answered with SSE,
resumes a dropped answer after the last piece it saw, and still sends only deltas."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import orjson

from tether.edge.app import EdgeConfig
from tether.edge.link import LinkOptions
from tether.edge.run import RunningEdge, edge_in_thread
from tether.netem.proxy import ShapingProxy
from tether.netutil import free_port
from tether.protocol.edge_wire import PATH
from tether.protocol.sse import SSEDecoder
from tether.server.runner import RunningServer

from .conftest import edge_config

TOOLS: list[Any] = [{"type": "function", "name": "read_file", "description": "Read a file. " * 300,
                     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]  # fmt: skip


def loop(edge: RunningEdge, turns: int = 3) -> list[int]:
    """A stateless Responses tool loop; the upload of each turn."""
    history: list[Any] = [{"role": "user", "content": "read it"}]
    uploads = []
    for _ in range(turns):
        before = httpx.get(edge.base_url + "/tether/edge/status").json()["uplink_bytes"]
        body = {"model": "gpt-test", "input": history, "tools": TOOLS, "stream": True}
        reply = httpx.post(edge.base_url + "/v1/responses", json=body, timeout=60)
        events = [orjson.loads(e.data) for e in SSEDecoder().decode(reply.content) if e.data != "[DONE]"]
        assert events[-1]["type"] == "response.completed"
        uploads.append(httpx.get(edge.base_url + "/tether/edge/status").json()["uplink_bytes"] - before)
        output = events[-1]["response"]["output"]
        history += output
        history += [{"type": "function_call_output", "call_id": item["call_id"], "output": "data " * 200}
                    for item in output if item["type"] == "function_call"]  # fmt: skip
        history.append({"role": "user", "content": "next"})
    return uploads


def test_http_only_carries_deltas(gateway: RunningServer) -> None:
    with edge_in_thread(edge_config(gateway.base_url, transport="http"), port=free_port()) as edge:
        uploads = loop(edge)
        status = httpx.get(edge.base_url + "/tether/edge/status").json()
    assert status["state"] == "http"
    assert status["connects"] == 0
    assert all(upload < 2500 for upload in uploads[1:]), uploads


def test_a_refused_websocket_falls_back_to_http(gateway: RunningServer) -> None:
    config = edge_config(gateway.base_url)
    refused = EdgeConfig(
        LinkOptions(config.link.url.replace(PATH, "/v1/tether/nowhere"), http_url=config.link.http_url),
        config.gateway_http,
    )
    with edge_in_thread(refused, port=free_port()) as edge:
        loop(edge, turns=2)
        status = httpx.get(edge.base_url + "/tether/edge/status").json()
    assert status["fallbacks"] == 1
    assert status["state"] == "http"


def test_an_http_answer_cut_mid_stream_is_resumed(gateway: RunningServer) -> None:
    proxy = ShapingProxy("127.0.0.1", gateway.port).start_in_thread()
    with proxy:
        config = edge_config(f"http://127.0.0.1:{proxy.port}/v1", transport="http")
        with edge_in_thread(config, port=free_port()) as edge:
            body = {"model": "echo", "input": " ".join(f"w{n}" for n in range(600)), "stream": True}
            started = gateway.app.state.tether_edge.turns.started
            proxy.cut_after_bytes("down", 4000, "rst")
            reply = httpx.post(edge.base_url + "/v1/responses", json=body, timeout=60)
            events = [orjson.loads(e.data) for e in SSEDecoder().decode(reply.content) if e.data != "[DONE]"]
            status = httpx.get(edge.base_url + "/tether/edge/status").json()
        cut = proxy.stats()
    assert cut.resets_injected == 1
    assert cut.connections_opened >= 2
    assert events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert gateway.app.state.tether_edge.turns.started == started + 1
    assert status["uplink_bytes"] > 0
