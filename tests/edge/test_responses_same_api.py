"""The openai SDK's Responses client through ``tether edge`` → ``tether serve`` → an OpenAI Responses upstream
(``FakeResponsesUpstream``, recording): stateless over HTTP (the full history every turn) and chained over WebSocket
mode (``responses.connect()``, ``store=false``).

What is compared, and why. Responses traffic is not forwarded raw: the gateway rebuilds the agent's request (its
content hash is checked, so a wrong rebuild heals, and none does) and runs it in tether's engine as if the agent had
sent it to ``tether serve``. The upstream then receives what the engine sends for any client's turn: every field of
the agent's request as it came, except ``stream`` (the engine streams from the upstream however the agent asked),
``tool_choice``, ``store`` and ``parallel_tool_calls`` when the agent left them out (the engine states the API's
defaults: ``"auto"``, ``true``, ``true``), ``previous_response_id``
(tether's id becomes the upstream's own) and ``input`` (the items without their client-side ids: the whole context
for a request that continues nothing, only the new items for one the upstream can continue).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from openai import AsyncOpenAI, Omit, OpenAI, omit
from openai.types.responses import ResponseCompletedEvent

from tether.edge.run import RunningEdge, edge_in_thread
from tether.netutil import free_port
from tether.providers.fakes import FakeResponsesUpstream
from tether.server.runner import RunningServer, serve_in_thread

from .conftest import edge_config, responses_settings

UP_KEY = "sk-up-same-api-0123456789abcdef"
STEPS: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "read_file", "arguments": {"path": "main.py"}}]},
    {"text": "Now the test.", "tool_calls": [{"name": "read_file", "arguments": {"path": "test_main.py"}}]},
    {"tool_calls": [{"name": "read_file", "arguments": {"path": "README.md"}}]},
    {"text": "All three read."},
]
TOOLS: list[Any] = [
    {"type": "function", "name": "read_file", "description": "Read one file of the workspace. " * 200,
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
     "strict": False}
]  # fmt: skip
INSTRUCTIONS = "You are a careful coding agent. " * 200
ENGINE_CHANGES = {"stream", "previous_response_id", "input"}
API_DEFAULTS = {"tool_choice": "auto", "store": True, "parallel_tool_calls": True}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream(script=STEPS, api_key=UP_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(upstream: FakeResponsesUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory: Path = tmp_path_factory.mktemp("responses-same-api")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TETHER_TEST_UP_KEY", UP_KEY)
        provider = {"kind": "openai-responses", "base_url": upstream.base_url, "api_key_env": "TETHER_TEST_UP_KEY"}
        with serve_in_thread(responses_settings(directory / "tether.db", provider)) as running:
            yield running


@pytest.fixture(scope="module")
def edge(gateway: RunningServer) -> Iterator[RunningEdge]:
    config = dataclasses.replace(edge_config(gateway.base_url), capture=True)
    with edge_in_thread(config, port=free_port()) as running:
        yield running


def captured(edge: RunningEdge) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = httpx.get(edge.base_url + "/tether/edge/captured").json()
    return entries


def status(edge: RunningEdge) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(edge.base_url + "/tether/edge/status").json()
    return result


def as_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as the engine holds them (a message says its type) and sends them (no client-side ids)."""
    optional = ("message", "function_call", "function_call_output")
    typed = [{"type": "message", **item} if "type" not in item else item for item in items]
    return [{k: v for k, v in item.items() if k != "id" or item["type"] not in optional} for item in typed]


def assert_as_the_engine_sends(sent: dict[str, Any], received: dict[str, Any]) -> None:
    stated = {k: v for k, v in API_DEFAULTS.items() if k not in sent}
    assert {k: v for k, v in received.items() if k not in ENGINE_CHANGES} == {
        **{k: v for k, v in sent.items() if k not in ENGINE_CHANGES},
        **{k: v for k, v in stated.items() if k in received},
    }


def assert_new_items_only(entry: dict[str, Any], earlier: list[Any]) -> None:
    frames = "".join(entry["frames"])
    assert entry["based"]
    assert INSTRUCTIONS[:200] not in frames
    assert TOOLS[0]["description"][:200] not in frames
    for item in earlier:
        for text in (item.get("output"), item.get("arguments")):
            if isinstance(text, str) and len(text) > 20:
                assert text not in frames


def test_the_stateless_sdk_client_reaches_the_upstream_as_the_engine_sends_it(
    edge: RunningEdge, upstream: FakeResponsesUpstream
) -> None:
    before_captured, before_upstream = len(captured(edge)), len(upstream.requests)
    with OpenAI(api_key="agent-key", base_url=edge.base_url + "/v1", max_retries=0,
                _strict_response_validation=True) as sdk:  # fmt: skip
        history: list[Any] = [{"role": "user", "content": "Read the three files."}]
        for turn in range(len(STEPS)):
            response = sdk.responses.create(model="http-model", input=history, instructions=INSTRUCTIONS, tools=TOOLS)
            assert response.status == "completed"
            history += [item.model_dump(exclude_none=True) for item in response.output]
            calls = [item for item in response.output if item.type == "function_call"]
            if not calls:
                break
            history += [{"type": "function_call_output", "call_id": call.call_id,
                         "output": f"contents of file {turn}: " + "x" * 40} for call in calls]  # fmt: skip
    assert response.output_text == "All three read."
    sent = [entry for entry in captured(edge)[before_captured:] if entry["path"] == "/v1/responses"]
    received = [request.body for request in upstream.requests[before_upstream:]]
    assert len(sent) == len(received) == len(STEPS)
    for entry, body in zip(sent, received, strict=True):
        assert_as_the_engine_sends(entry["body"], body)
        assert "previous_response_id" not in body  # the agent continues nothing: the whole context goes up
        assert body["input"] == as_items(entry["body"]["input"])
    for previous, entry in itertools.pairwise(sent):
        assert_new_items_only(entry, previous["body"]["input"])
    assert status(edge)["heals"] == 0


async def test_the_websocket_sdk_client_reaches_the_upstream_as_the_engine_sends_it(
    edge: RunningEdge, upstream: FakeResponsesUpstream
) -> None:
    before_captured, before_upstream = len(captured(edge)), len(upstream.requests)
    sdk = AsyncOpenAI(api_key="agent-key", base_url=edge.base_url + "/v1", max_retries=0)
    async with sdk, sdk.responses.connect() as connection:
        previous: str | Omit = omit
        new_input: list[Any] = [{"role": "user", "content": "Read the three files."}]
        for _ in range(len(STEPS)):
            await connection.response.create(
                model="ws-model", store=False, input=new_input, instructions=INSTRUCTIONS, tools=TOOLS,
                previous_response_id=previous,
            )  # fmt: skip
            async for event in connection:
                if event.type in ("response.completed", "response.failed", "error"):
                    break
            assert isinstance(event, ResponseCompletedEvent), event
            final = event.response
            previous = final.id
            calls = [item for item in final.output if item.type == "function_call"]
            if not calls:
                break
            new_input = [{"type": "function_call_output", "call_id": call.call_id,
                          "output": f"contents of {call.arguments}: " + "x" * 40} for call in calls]  # fmt: skip
    assert final.output_text == "All three read."
    sent = [entry for entry in captured(edge)[before_captured:] if entry["path"] == "/v1/responses#ws"]
    records = upstream.requests[before_upstream:]
    assert len(sent) == len(records) == len(STEPS)
    assert {record.transport for record in records} == {"websocket"}
    assert len({record.connection for record in records}) == 1
    for entry, record in zip(sent, records, strict=True):
        assert_as_the_engine_sends(entry["body"], record.body)
        assert record.body["input"] == as_items(entry["body"]["input"])
    assert "previous_response_id" not in records[0].body
    for entry, record in zip(sent[1:], records[1:], strict=True):
        assert not entry["body"]["previous_response_id"].startswith("resp_up_")  # the agent sees tether's ids
        assert record.body["previous_response_id"].startswith("resp_up_")  # the fake's own, its socket's latest
    for previous_entry, entry in itertools.pairwise(sent):
        assert_new_items_only(entry, previous_entry["body"]["input"])
    assert status(edge)["heals"] == 0
