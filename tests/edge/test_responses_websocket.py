"""The openai SDK's Responses client in WebSocket mode (``responses.connect()``) through ``tether edge``: a
``store=false`` tool loop chained with ``previous_response_id`` on one agent connection, each continuation crossing
the link as its new items only."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import orjson
from openai import AsyncOpenAI, Omit, omit
from openai.types.responses import ResponseCompletedEvent
from websockets.asyncio.client import connect

from tether.edge.run import RunningEdge

TOOLS: list[Any] = [
    {"type": "function", "name": "read_file", "description": "Read one file of the workspace. " * 200,
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
]  # fmt: skip
INSTRUCTIONS = "You are Codex, a coding agent. " * 200


async def test_a_store_false_websocket_tool_loop_through_the_edge(edge: RunningEdge) -> None:
    sdk = AsyncOpenAI(api_key="agent-key", base_url=edge.base_url + "/v1", max_retries=0)
    async with sdk, sdk.responses.connect() as connection:
        previous: str | Omit = omit
        new_input: list[Any] = [{"role": "user", "content": "read main.py"}]
        uploads = []
        for _ in range(3):
            before = httpx.get(edge.base_url + "/tether/edge/status").json()["uplink_bytes"]
            await connection.response.create(
                    model="gpt-test", store=False, input=new_input, instructions=INSTRUCTIONS, tools=TOOLS,
                    previous_response_id=previous,
                )  # fmt: skip
            events = []
            async for event in connection:
                events.append(event)
                if event.type in ("response.completed", "response.failed", "error"):
                    break
            assert events[-1].type == "response.completed", events[-1]
            uploads.append(httpx.get(edge.base_url + "/tether/edge/status").json()["uplink_bytes"] - before)
            finished = events[-1]
            assert isinstance(finished, ResponseCompletedEvent)
            response = finished.response
            assert response.instructions == INSTRUCTIONS
            previous = response.id
            calls = [item for item in response.output if item.type == "function_call"]
            new_input = [{"type": "function_call_output", "call_id": c.call_id, "output": "print(1)"} for c in calls]
            new_input = new_input or [{"role": "user", "content": "and then?"}]
    assert all(upload < 1500 for upload in uploads[1:]), uploads


async def test_a_steer_through_the_edge_is_refused_with_the_reason_and_the_connection_goes_on(
    edge: RunningEdge,
) -> None:
    sdk = AsyncOpenAI(api_key="agent-key", base_url=edge.base_url + "/v1", max_retries=0)
    async with sdk, sdk.responses.connect() as connection:
        await connection.response.steer(previous_response_id="resp_x", input="faster")
        failed = await connection.recv()
        assert failed.type == "response.steer.failed"
        assert failed.error.code == "steering_not_supported"
        assert failed.steer.input == "faster"
        await connection.response.steer(previous_response_id="resp_x", input="")
        invalid = await connection.recv()
        assert invalid.type == "response.steer.failed"
        assert invalid.error.code == "invalid_input"
        await connection.response.create(model="gpt-test", input="hi")
        async for event in connection:
            if event.type in ("response.completed", "response.failed", "error"):
                assert event.type == "response.completed"
                break


async def test_a_refused_turn_in_websocket_mode_has_the_error_type_its_status_means(edge: RunningEdge) -> None:
    """Over the gateway's limits the turn ends with the gateway's 4xx, which is the agent's request at fault
    (invalid_request_error, as the edge's HTTP refusals say): WebSocket mode called every refusal server_error."""
    many = [{"role": "user", "content": "a"}] * 33_400  # 100,200 JSON values: over the gateway's 100,000
    async with connect(edge.base_url.replace("http://", "ws://") + "/v1/responses", max_size=None) as ws:
        await ws.send(orjson.dumps({"type": "response.create", "model": "gpt-test", "input": many}).decode())
        event = orjson.loads(await ws.recv())
    assert event["type"] == "error", event
    assert event["status"] == 400
    assert (event["error"]["code"], event["error"]["type"]) == ("too_many_json_values", "invalid_request_error")
