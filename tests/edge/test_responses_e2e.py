"""The openai SDK's Responses client through ``tether edge`` → ``tether serve`` (scripted model): the agent gets the
answer the engine logged, event for event, and each continuation crosses the link as its new content only."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from openai import OpenAI

from tether.edge.run import RunningEdge, edge_in_thread
from tether.netutil import free_port
from tether.protocol.sse import SSEDecoder
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings

from .conftest import edge_config

TOOLS: list[Any] = [
    {"type": "function", "name": f"tool_{n}", "description": "schema " * 300,
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}
    for n in range(8)
]  # fmt: skip
INSTRUCTIONS = "You are a careful agent. " * 250


@pytest.fixture
def sdk(edge: RunningEdge) -> Iterator[OpenAI]:
    with OpenAI(api_key="agent-key", base_url=edge.base_url + "/v1", max_retries=0,
                _strict_response_validation=True) as client:  # fmt: skip
        yield client


def status(edge: RunningEdge) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(edge.base_url + "/tether/edge/status").json()
    return result


def test_a_stateless_tool_loop_crosses_as_new_items_only(sdk: OpenAI, edge: RunningEdge) -> None:
    history: list[Any] = [{"role": "user", "content": "read the file please"}]
    first = sdk.responses.create(model="scripted", input=history, instructions=INSTRUCTIONS, tools=TOOLS)
    assert first.status == "completed"
    full_request = len(orjson.dumps({"input": history, "instructions": INSTRUCTIONS, "tools": TOOLS}))
    for turn in range(3):
        history += [item.model_dump(exclude_none=True) for item in first.output]
        history.append({"role": "user", "content": f"and now step {turn}"})
        before = status(edge)
        first = sdk.responses.create(model="scripted", input=history, instructions=INSTRUCTIONS, tools=TOOLS)
        after = status(edge)
        assert first.status == "completed"
        uploaded = after["uplink_bytes"] - before["uplink_bytes"]
        assert 0 < uploaded < 2000 < full_request
    assert after["heals"] == 0


def test_the_streamed_answer_is_the_engines_stream_event_for_event(edge: RunningEdge, gateway: RunningServer) -> None:
    body = {"model": "scripted", "input": "tell me a story", "instructions": INSTRUCTIONS, "tools": TOOLS,
            "stream": True}  # fmt: skip
    received = httpx.post(edge.base_url + "/v1/responses", json=body, timeout=30)
    assert received.headers["content-type"].startswith("text/event-stream")
    events = [event.data for event in SSEDecoder().decode(received.content)]
    response_id = orjson.loads(events[0])["response"]["id"]
    direct = httpx.get(
        f"{gateway.base_url}/responses/{response_id}", params={"stream": "true", "starting_after": -1}, timeout=30
    )
    replayed = [event.data for event in SSEDecoder().decode(direct.content)]
    assert [orjson.loads(data) for data in events[:-1]] == [orjson.loads(data) for data in replayed[:-1]]
    assert events[-1] == "[DONE]"
    assert orjson.loads(events[0])["response"]["instructions"] == INSTRUCTIONS


def test_the_sdk_stream_helper_reads_the_edge_stream(sdk: OpenAI) -> None:
    with sdk.responses.stream(model="scripted", input="hello", instructions=INSTRUCTIONS, tools=TOOLS) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert final.instructions == INSTRUCTIONS


def test_a_refusal_reaches_the_agent_in_its_api(edge: RunningEdge) -> None:
    refused = httpx.post(edge.base_url + "/v1/responses", json={"model": "scripted", "input": 3}, timeout=30)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "input"
    broken = httpx.post(edge.base_url + "/v1/responses", content=b"{not json", timeout=30)
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "invalid_json"
    compressed = httpx.post(edge.base_url + "/v1/responses", content=gzip.compress(b'{"model": "scripted"}'),
                            headers={"content-encoding": "gzip"}, timeout=30)  # fmt: skip
    assert compressed.status_code == 415
    error = compressed.json()["error"]
    assert (error["code"], error["type"]) == ("unsupported_media_type", "invalid_request_error")
    assert "Content-Encoding 'gzip'" in error["message"]
    many = [{"role": "user", "content": "a"}] * 33_400  # 100,200 JSON values: over the gateway's 100,000
    over = httpx.post(edge.base_url + "/v1/responses", json={"model": "scripted", "input": many}, timeout=60)
    assert over.status_code == 400, over.text
    assert over.json()["error"]["code"] == "too_many_json_values"
    deep: Any = []
    for _ in range(199):
        deep = [deep]
    nested = httpx.post(edge.base_url + "/v1/responses", json={"model": "scripted", "input": "hi", "x": deep},
                        timeout=30)  # fmt: skip
    assert nested.status_code == 400, nested.text
    assert nested.json()["error"]["code"] == "json_too_deep"


def test_other_paths_pass_through_to_the_gateway(edge: RunningEdge) -> None:
    models = httpx.get(edge.base_url + "/v1/models", timeout=30)
    assert models.status_code == 200
    assert "scripted" in [model["id"] for model in models.json()["data"]]


def test_a_passed_through_path_carries_the_gateway_key_not_the_agents() -> None:
    keyed = Settings(store_url="memory://", log_level="warning", api_keys={"gateway-key": "team"})
    with (
        serve_in_thread(keyed) as gateway,
        edge_in_thread(edge_config(gateway.base_url, key="gateway-key"), port=free_port()) as edge,
    ):
        models = httpx.get(edge.base_url + "/v1/models", headers={"authorization": "Bearer agent-key"}, timeout=30)
        answer = httpx.post(edge.base_url + "/v1/responses", json={"model": "echo", "input": "hi"},
                            headers={"authorization": "Bearer agent-key"}, timeout=30)  # fmt: skip
    assert models.status_code == 200
    assert answer.status_code == 200
    assert answer.json()["output"][0]["content"][0]["text"] == "hi"


@pytest.mark.parametrize("size", [6_000, 20_000])
def test_a_request_over_the_gateways_body_limit_gets_a_413_and_the_link_goes_on(size: int) -> None:
    """Over twice the gateway's limit the gateway's WebSocket library closes the link (1009) before the gateway sees
    the frame: the edge re-opened it and sent the same frame again, for ever, and the agent waited. Below that the
    gateway answered with an error naming no turn, which ended every turn in flight."""
    small = Settings(store_url="memory://", log_level="warning", max_body_bytes=4096)
    with (
        serve_in_thread(small) as gateway,
        edge_in_thread(edge_config(gateway.base_url), port=free_port()) as edge,
        httpx.Client(base_url=edge.base_url, timeout=30) as client,
    ):
        refused = client.post("/v1/responses", json={"model": "echo", "input": "x" * size})
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] in ("frame_too_large", "request_too_large")
        answer = client.post("/v1/responses", json={"model": "echo", "input": "hi"})
        assert answer.status_code == 200, answer.text
