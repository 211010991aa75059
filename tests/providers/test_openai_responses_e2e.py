"""A real tether server in front of the fake Responses upstream, driven by the official ``openai`` SDK.

The same 20-turn tool loop gives the same transcript through the upstream as through tether's scripted model, the
upstream sees deltas only, and a forgetful upstream costs one full-context request, unseen by the client.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI
from openai.resources.responses.responses import AsyncResponsesConnection
from openai.types.responses import FunctionToolParam, Response

from tether.providers.fakes.openai_responses import FakeResponsesUpstream
from tether.server.runner import RunningServer

ServerFactory = Callable[..., RunningServer]

UP_KEY = "sk-up-0123456789abcdefghijkl"
TURNS = 20
TOOL: FunctionToolParam = {
    "type": "function",
    "name": "run_step",
    "description": "Run one step of the job.",
    "parameters": {"type": "object", "properties": {"step": {"type": "integer"}}, "required": ["step"]},
    "strict": False,
}


def _step(n: int) -> dict[str, Any]:
    """Tool rounds of every shape: single, parallel, with commentary, with reasoning, with awkward characters."""
    call = {"name": "run_step", "arguments": {"step": n}}
    if n % 5 == 1:
        return {"tool_calls": [call, {"name": "run_step", "arguments": {"step": n, "part": 2}}]}
    if n % 5 == 2:
        return {"text": f"Running step {n} — naïve\u2028café.", "tool_calls": [call]}
    if n % 5 == 3:
        return {"reasoning": f"Step {n} needs some thought.", "tool_calls": [call]}
    return {"tool_calls": [call]}


LOOP = [*(_step(n) for n in range(TURNS - 1)), {"text": "All twenty turns are done."}]
Transcript = list[list[tuple[Any, ...]]]


@pytest.fixture
def fake() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream(LOOP, api_key=UP_KEY) as upstream:
        yield upstream


def start_gateway(
    make_server: ServerFactory, fake: FakeResponsesUpstream, tmp_path: Path, transport: str
) -> RunningServer:
    """tether with the fake upstream routed as ``up-*`` and the same loop loaded as the scripted ``script:loop``."""
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps({"scripts": {"loop": LOOP}}))
    upstream = {"kind": "openai-responses", "base_url": fake.base_url, "api_key_env": "UP_KEY"}
    return make_server(
        providers={"up": {**upstream, "transport": transport}},
        routes=[{"model": "up-*", "provider": "up"}, {"model": "script:*", "provider": "scripted"}],
        scripted={"scripts_file": str(scripts)},
    )


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", UP_KEY)


@pytest.fixture(params=["websocket", "http"])
def gateway(
    request: pytest.FixtureRequest,
    fake: FakeResponsesUpstream,
    make_server: ServerFactory,  # after the fake: the gateway stops first
    tmp_path: Path,
) -> RunningServer:
    return start_gateway(make_server, fake, tmp_path, request.param)


@pytest.fixture
def client(gateway: RunningServer) -> Iterator[OpenAI]:
    with OpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0, _strict_response_validation=True) as sdk:
        yield sdk


def tool_loop(client: OpenAI, model: str, *, before_turn: dict[int, Callable[[], None]] | None = None) -> Transcript:
    """Run the loop, sending only the tool outputs after the first turn; the transcript has no ids."""
    response = client.responses.create(model=model, input="Run the job, one step at a time.", tools=[TOOL])
    transcript = [_items(response)]
    for turn in range(2, TURNS + 1):
        if before_turn and turn in before_turn:
            before_turn[turn]()
        calls = [item for item in response.output if item.type == "function_call"]
        assert calls, f"turn {turn - 1} made no call"
        outputs: list[Any] = [
            {"type": "function_call_output", "call_id": call.call_id, "output": f"step {turn - 1} ok"} for call in calls
        ]
        response = client.responses.create(model=model, previous_response_id=response.id, input=outputs, tools=[TOOL])
        assert not response.id.startswith("resp_up_")  # tether's ids, never the upstream's
        transcript.append(_items(response))
    return transcript


def _items(response: Response) -> list[tuple[Any, ...]]:
    assert response.status == "completed"
    items: list[tuple[Any, ...]] = []
    for item in response.output:
        if item.type == "message":
            items.append(("message", item.phase, "".join(p.text for p in item.content if p.type == "output_text")))
        elif item.type == "function_call":
            items.append(("function_call", item.name, json.loads(item.arguments)))
        elif item.type == "reasoning":
            items.append(("reasoning", [part.text for part in item.summary]))
        else:
            items.append((item.type,))
    return items


def test_tool_loop_matches_the_scripted_model_and_sends_only_deltas(
    client: OpenAI, fake: FakeResponsesUpstream
) -> None:
    through_upstream = tool_loop(client, "up-loop")
    through_scripted = tool_loop(client, "script:loop")

    assert through_upstream == through_scripted
    assert through_upstream[-1] == [("message", None, "All twenty turns are done.")]
    records = fake.requests
    assert len(records) == TURNS
    assert records[0].previous_response_id is None
    for record, previous_turn in zip(records[1:], through_upstream, strict=False):
        assert record.previous_response_id is not None
        assert [item["type"] for item in record.input] == ["function_call_output"] * _calls(previous_turn)
    assert all(r.headers["authorization"] == f"Bearer {UP_KEY}" for r in records)
    if records[0].transport == "websocket":
        assert {r.connection for r in records} == {1}


def test_forgetful_upstream_costs_one_full_context_request(client: OpenAI, fake: FakeResponsesUpstream) -> None:
    through_upstream = tool_loop(client, "up-loop", before_turn={11: fake.forget_all})
    through_scripted = tool_loop(client, "script:loop")

    assert through_upstream == through_scripted
    records = fake.requests
    assert len(records) == TURNS + 1
    refused, resent = records[10], records[11]
    assert refused.previous_response_id is not None
    assert resent.previous_response_id is None
    # The whole context but the reasoning items: sent without include, they carry no encrypted_content to go back.
    messages = sum(1 for turn in through_upstream[:10] for item in turn if item[0] == "message")
    assert len(resent.input) == 1 + messages + 2 * sum(_calls(turn) for turn in through_upstream[:10])
    assert all(r.previous_response_id is not None for r in records[12:])
    assert all({item["type"] for item in r.input} == {"function_call_output"} for r in records[12:])


def _calls(turn: list[tuple[Any, ...]]) -> int:
    return sum(1 for item in turn if item[0] == "function_call")


async def test_websocket_client_with_store_false_gets_deltas_upstream_on_its_lanes_socket(
    fake: FakeResponsesUpstream, make_server: ServerFactory, tmp_path: Path
) -> None:
    gateway = start_gateway(make_server, fake, tmp_path, "websocket")
    async with AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk:
        through_upstream = await ws_tool_loop(sdk, "up-loop", before_turn={8: lambda: fake.drop_after(1)})
        through_scripted = await ws_tool_loop(sdk, "script:loop")

    assert through_upstream == through_scripted
    records = fake.requests
    assert all(r.body["store"] is False for r in records)
    # Turn 8's socket dropped before any event: one full-context request on a new socket, then deltas again.
    assert [r.connection for r in records] == [1] * 8 + [2] * (TURNS - 7)
    assert [r.previous_response_id is None for r in records] == [True] + [False] * 7 + [True] + [False] * (TURNS - 8)


async def ws_tool_loop(
    client: AsyncOpenAI, model: str, *, before_turn: dict[int, Callable[[], None]] | None = None
) -> Transcript:
    """The tool loop over one client WebSocket, with ``store=false``: tether's lane cache is all that holds it."""
    transcript: Transcript = []
    async with client.responses.connect() as connection:
        await connection.response.create(
            model=model, input="Run the job, one step at a time.", tools=[TOOL], store=False
        )
        response = await _completed(connection)
        transcript.append(_items(response))
        for turn in range(2, TURNS + 1):
            if before_turn and turn in before_turn:
                before_turn[turn]()
            calls = [item for item in response.output if item.type == "function_call"]
            outputs: list[Any] = [
                {"type": "function_call_output", "call_id": c.call_id, "output": f"step {turn - 1} ok"} for c in calls
            ]
            await connection.response.create(
                model=model, previous_response_id=response.id, input=outputs, tools=[TOOL], store=False
            )
            response = await _completed(connection)
            transcript.append(_items(response))
    return transcript


async def _completed(connection: AsyncResponsesConnection) -> Response:
    while True:
        event = await connection.recv()
        if event.type == "response.completed":
            return event.response
        assert event.type not in ("error", "response.failed", "response.incomplete"), event


@pytest.mark.parametrize("transport", ["http", "websocket"])
def test_new_and_unknown_request_fields_reach_the_upstream_untouched(
    make_server: ServerFactory, fake: FakeResponsesUpstream, tmp_path: Path, transport: str
) -> None:
    gateway = start_gateway(make_server, fake, tmp_path, transport)
    passed = {
        "prompt_cache_retention": "24h",
        "prompt_cache_options": {"mode": "explicit", "ttl": "12h", "comparison_response_id": "resp_upstream_1"},
        "moderation": {"enabled": False},
        "background_options": {"completion_window": "soonest", "continuation_id": "cont_1"},
        "access_programs": ["prog_1"],
        "x_future_field": {"nested": [1, "two", None]},
    }
    with OpenAI(api_key="client-key", base_url=gateway.base_url, max_retries=0) as client:
        response = client.responses.create(model="up-model", input="Start the job.", extra_body=passed)
    assert response.status == "completed"
    body = fake.requests[-1].body
    for key, value in passed.items():
        assert body[key] == value, key
