"""The openai-responses provider against the fake Responses upstream, over HTTP/SSE and WebSocket mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tether.netutil import free_port
from tether.protocol import ids
from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import Finish, ModelEvent, TextDelta, Usage
from tether.protocol.response import response_object
from tether.protocol.stream import ResponseStream
from tether.providers.base import ProviderRequest
from tether.providers.fakes.openai_responses import FakeResponsesUpstream, RecordedCreate
from tether.providers.http_upstream import UpstreamOptions
from tether.providers.openai_responses import OpenAIResponsesProvider
from tether.providers.responses_payload import upstream_items
from tether.providers.scripted import ScriptStep
from tether.types import Item, JSONObject

Transport = Literal["http", "websocket"]
KEY = "sk-test-0123456789abcdefghij"
TOOL: JSONObject = {"type": "function", "name": "step", "parameters": {"type": "object", "properties": {}}}
LOOP: list[dict[str, Any]] = [
    *({"tool_calls": [{"name": "step", "arguments": {"n": n}}]} for n in range(8)),
    {"text": "All steps done."},
]
TRANSPORTS = pytest.mark.parametrize("transport", ["http", "websocket"])


class Chat:
    """Drives turns the way the engine does: tether ids, the whole context, the new items, one lane."""

    def __init__(self, provider: OpenAIResponsesProvider, *, lane: str | None = "conn-1/", store: bool = True) -> None:
        self.provider = provider
        self.lane = lane
        self.store = store
        self.context: list[Item] = []
        self.last_id: str | None = None
        self.output: list[Item] = []

    async def turn(self, new_items: list[Item] | None = None, **params: Any) -> list[ModelEvent]:
        new = self.tool_outputs() if new_items is None else new_items
        context = [*self.context, *new]
        response_id = ids.response_id()
        request = ProviderRequest(
            model="up-model", instructions="Follow the steps.", context=context, new_items=new, tools=[TOOL],
            tool_choice="auto", context_tokens=0, cached_tokens=0, previous_response_id=self.last_id,
            response_id=response_id, params={"store": self.store, **params}, lane_key=self.lane,
        )  # fmt: skip
        events = [event async for event in self.provider.stream(request)]
        stream = ResponseStream(
            response_object(
                response_id=response_id,
                created_at=0,
                status="in_progress",
                model="up-model",
                params={},
                output=[],
                previous_response_id=None,
                store=self.store,
            )
        )
        for event in events:
            stream.feed(event)
        self.context, self.last_id, self.output = [*context, *stream.output], response_id, stream.output
        return events

    def tool_outputs(self) -> list[Item]:
        calls = [item for item in self.output if item["type"] == "function_call"]
        return [{"type": "function_call_output", "call_id": c["call_id"], "output": f"ran {c['name']}"} for c in calls]

    def text(self) -> str:
        return "".join(p["text"] for i in self.output if i["type"] == "message" for p in i["content"])


def user(text: str) -> Item:
    return {"type": "message", "role": "user", "content": text}


def provider_for(url: str, transport: Transport, **options: Any) -> OpenAIResponsesProvider:
    settings: dict[str, Any] = {"api_key": KEY, "max_retries": 2, "backoff_s": 0.0, "timeout_s": 10.0, **options}
    return OpenAIResponsesProvider("up", UpstreamOptions(url, **settings), transport=transport)


@pytest.fixture
def fake() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream(LOOP, api_key=KEY) as upstream:
        yield upstream


@pytest.fixture(params=["http", "websocket"])
async def provider(
    request: pytest.FixtureRequest, fake: FakeResponsesUpstream
) -> AsyncIterator[OpenAIResponsesProvider]:
    upstream = provider_for(fake.base_url, request.param)
    yield upstream
    await upstream.aclose()


def is_delta(record: RecordedCreate, new_items: list[Item]) -> bool:
    return bool(record.previous_response_id) and record.input == new_items


# -- deltas ----------------------------------------------------------------------------------------------------


async def test_first_turn_is_full_then_only_deltas(
    provider: OpenAIResponsesProvider, fake: FakeResponsesUpstream
) -> None:
    chat = Chat(provider)
    await chat.turn([user("Run the steps.")])
    sent: list[list[Item]] = []
    for _ in range(4):
        sent.append(chat.tool_outputs())
        await chat.turn()

    first, *rest = fake.requests
    assert first.previous_response_id is None
    assert first.input == [user("Run the steps.")]
    assert first.body["instructions"] == "Follow the steps."
    assert first.body["tools"] == [TOOL]
    assert all(is_delta(record, items) for record, items in zip(rest, sent, strict=True))
    upstream_ids = [record.previous_response_id or "" for record in rest]
    assert all(up.startswith("resp_up_") for up in upstream_ids)
    assert len(set(upstream_ids)) == len(upstream_ids)
    if provider.pool is not None:
        assert {record.connection for record in fake.requests} == {1}
        assert all(record.body["type"] == "response.create" and "stream" not in record.body for record in rest)
    else:
        assert all(record.body["stream"] is True for record in fake.requests)


async def test_unknown_parent_is_sent_as_the_full_context(fake: FakeResponsesUpstream) -> None:
    first = provider_for(fake.base_url, "http")
    chat = Chat(first)
    await chat.turn([user("Run the steps.")])
    await chat.turn()
    await first.aclose()
    restarted = provider_for(fake.base_url, "http")  # a restart: the id map is empty
    chat.provider = restarted
    events = await chat.turn()
    await restarted.aclose()

    record = fake.requests[-1]
    assert isinstance(events[-1], Finish)
    assert record.previous_response_id is None
    assert record.input == upstream_items(chat.context[: -len(chat.output)])
    assert [item["type"] for item in record.input] == ["message", *["function_call", "function_call_output"] * 2]


# -- falling back to the full context ----------------------------------------------------------------------------


async def test_forgotten_response_is_resent_in_full(
    provider: OpenAIResponsesProvider, fake: FakeResponsesUpstream
) -> None:
    chat = Chat(provider)
    await chat.turn([user("Run the steps.")])
    await chat.turn()
    fake.forget_all()
    events = await chat.turn()
    await chat.turn()

    assert isinstance(events[-1], Finish)
    refused, resent, after = fake.requests[-3:]
    assert refused.previous_response_id is not None
    assert resent.previous_response_id is None
    assert len(resent.input) == 5  # the user message and two rounds of call + output
    assert after.previous_response_id is not None
    assert len(after.input) == 1


async def test_socket_dropped_before_any_event_reconnects_with_full_context(fake: FakeResponsesUpstream) -> None:
    provider = provider_for(fake.base_url, "websocket")
    chat = Chat(provider)
    await chat.turn([user("Run the steps.")])
    fake.drop_after(1)  # response.created, then the socket closes
    events = await chat.turn()
    await chat.turn()
    await provider.aclose()

    assert isinstance(events[-1], Finish)
    records = fake.requests
    assert [r.connection for r in records] == [1, 1, 2, 2]
    assert records[1].previous_response_id is not None
    assert records[2].previous_response_id is None
    assert len(records[2].input) == 3
    assert records[3].previous_response_id is not None
    assert len(records[3].input) == 1


async def test_http_stream_cut_before_any_event_is_retried_with_full_context(fake: FakeResponsesUpstream) -> None:
    provider = provider_for(fake.base_url, "http")
    chat = Chat(provider)
    await chat.turn([user("Run the steps.")])
    fake.drop_after(2)
    events = await chat.turn()
    await provider.aclose()

    assert isinstance(events[-1], Finish)
    cut, resent = fake.requests[-2:]
    assert cut.previous_response_id is not None
    assert resent.previous_response_id is None


async def test_socket_dropped_after_events_fails_the_turn_and_the_next_try_goes_on(
    fake: FakeResponsesUpstream,
) -> None:
    provider = provider_for(fake.base_url, "websocket")
    chat = Chat(provider)
    await chat.turn([user("Run the steps.")])
    fake.drop_after(4)  # created, in_progress, output_item.added, the first arguments delta
    yielded: list[ModelEvent] = []
    outputs = chat.tool_outputs()
    with pytest.raises(ProtocolError) as failed:
        await _collect(provider.stream(_request(chat, outputs)), yielded)
    events = await chat.turn(outputs)  # the client retries the turn
    await provider.aclose()

    assert yielded
    assert not isinstance(yielded[-1], Finish)
    assert failed.value.status == 502
    assert failed.value.code == "upstream_error"
    assert isinstance(events[-1], Finish)
    assert fake.connections == 2


async def _collect(events: AsyncIterator[ModelEvent], into: list[ModelEvent]) -> None:
    async for event in events:
        into.append(event)


def _request(chat: Chat, new: list[Item]) -> ProviderRequest:
    context = [*chat.context, *new]
    return ProviderRequest(
        model="up-model", instructions=None, context=context, new_items=new, tools=[TOOL], tool_choice="auto",
        context_tokens=0, cached_tokens=0, previous_response_id=chat.last_id, response_id=ids.response_id(),
        params={"store": chat.store}, lane_key=chat.lane,
    )  # fmt: skip


# -- sockets -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", [True, False])
async def test_socket_is_rotated_at_the_age_cap(fake: FakeResponsesUpstream, store: bool) -> None:
    provider = provider_for(fake.base_url, "websocket")
    assert provider.pool is not None
    now = [0.0]
    provider.pool.clock = lambda: now[0]
    provider.pool.max_age_s = 100.0
    chat = Chat(provider, store=store)
    await chat.turn([user("Run the steps.")])
    await chat.turn()
    now[0] = 100.0
    await chat.turn()
    await chat.turn()
    await provider.aclose()

    records = fake.requests
    assert [r.connection for r in records] == [1, 1, 2, 2]
    assert records[1].previous_response_id is not None
    # The new socket holds nothing: a stored parent is still continued, a store=false one is sent whole.
    assert (records[2].previous_response_id is not None) is store
    assert records[3].previous_response_id is not None


async def test_store_false_sends_deltas_on_each_lanes_own_socket(fake: FakeResponsesUpstream) -> None:
    provider = provider_for(fake.base_url, "websocket")
    first, second = Chat(provider, lane="conn-1/", store=False), Chat(provider, lane="conn-1/side", store=False)
    await first.turn([user("Run the steps.")])
    await second.turn([user("Run the steps.")])
    for _ in range(3):
        await first.turn()
        await second.turn()
    await provider.aclose()

    records = fake.requests
    assert fake.connections == 2
    assert all(r.body["store"] is False for r in records)
    by_socket = {n: [r for r in records if r.connection == n] for n in (1, 2)}
    for chain in by_socket.values():
        assert chain[0].previous_response_id is None
        assert all(r.previous_response_id is not None and len(r.input) == 1 for r in chain[1:])


async def test_http_turns_in_a_row_reuse_one_connection(fake: FakeResponsesUpstream) -> None:
    # The stream's end after response.completed is read, so the connection goes back to the pool.
    provider = provider_for(fake.base_url, "http", pool_shards=1)
    chat = Chat(provider)
    for _ in range(5):
        await chat.turn([user("Go.")])
    await provider.aclose()
    assert len(fake.requests) == 5
    assert fake.http_connections == 1


@TRANSPORTS
@pytest.mark.parametrize("store", [True, False])
async def test_a_stateless_upstream_gets_the_full_context_in_one_request(transport: Transport, store: bool) -> None:
    with FakeResponsesUpstream(LOOP, api_key=KEY, stateful=False) as fake:
        provider = OpenAIResponsesProvider(
            "up", UpstreamOptions(fake.base_url, api_key=KEY, backoff_s=0.0), transport=transport, stateful=False
        )
        chat = Chat(provider, store=store)
        await chat.turn([user("Go.")])
        for _ in range(3):
            await chat.turn()
        await provider.aclose()
        records = fake.requests
    assert len(records) == 4, "one request a turn: no delta refused first"
    assert all(record.previous_response_id is None for record in records)
    assert all(record.body["store"] is False for record in records)
    assert [len(record.input) for record in records] == [1, 3, 5, 7]


async def test_a_stateful_provider_against_a_stateless_upstream_pays_two_requests_a_turn() -> None:
    with FakeResponsesUpstream(LOOP, api_key=KEY, stateful=False) as fake:
        provider = provider_for(fake.base_url, "http")
        chat = Chat(provider)
        await chat.turn([user("Go.")])
        await chat.turn()
        await provider.aclose()
        assert [record.previous_response_id is None for record in fake.requests] == [True, False, True]


async def test_store_false_over_http_always_sends_the_full_context(fake: FakeResponsesUpstream) -> None:
    provider = provider_for(fake.base_url, "http")
    chat = Chat(provider, store=False)
    await chat.turn([user("Run the steps.")])
    await chat.turn()
    await chat.turn()
    await provider.aclose()

    assert [r.previous_response_id for r in fake.requests] == [None, None, None]
    assert [len(r.input) for r in fake.requests] == [1, 3, 5]


async def test_upstream_connection_limit_closes_the_idle_socket_and_the_next_turn_reconnects() -> None:
    with FakeResponsesUpstream(LOOP, max_connection_age_s=0.2) as fake:
        provider = provider_for(fake.base_url, "websocket")
        chat = Chat(provider)
        await chat.turn([user("Run the steps.")])
        assert provider.pool is not None
        socket = provider.pool.lanes["conn-1/"]
        await socket.connection.wait_closed()
        events = await chat.turn()
        await provider.aclose()

    assert isinstance(events[-1], Finish)
    assert [r.connection for r in fake.requests] == [1, 2]
    assert fake.requests[1].previous_response_id is not None  # a stored response continues on any socket


async def test_turns_without_a_lane_share_a_pooled_socket(fake: FakeResponsesUpstream) -> None:
    provider = provider_for(fake.base_url, "websocket")
    chat = Chat(provider, lane=None, store=False)
    await chat.turn([user("Run the steps.")])
    await chat.turn()
    await chat.turn()
    await provider.aclose()

    assert fake.connections == 1
    assert [r.previous_response_id is not None for r in fake.requests] == [False, True, True]


# -- errors and retries ------------------------------------------------------------------------------------------


@TRANSPORTS
async def test_server_errors_are_retried_before_anything_is_yielded(
    fake: FakeResponsesUpstream, transport: Transport
) -> None:
    provider = provider_for(fake.base_url, transport)
    fake.fail_next(2, 503)
    events = await Chat(provider).turn([user("Run the steps.")])
    await provider.aclose()

    assert isinstance(events[-1], Finish)
    assert len(fake.requests) == 3


@TRANSPORTS
async def test_rate_limit_past_the_retries_is_a_429(fake: FakeResponsesUpstream, transport: Transport) -> None:
    provider = provider_for(fake.base_url, transport, max_retries=1)
    fake.fail_next(2, 429, "Slow down.")
    with pytest.raises(ProtocolError) as failed:
        await Chat(provider).turn([user("Run the steps.")])
    await provider.aclose()

    assert failed.value.status == 429
    assert failed.value.code == "rate_limit_exceeded"
    assert len(fake.requests) == 2


@TRANSPORTS
async def test_client_errors_are_not_retried(fake: FakeResponsesUpstream, transport: Transport) -> None:
    provider = provider_for(fake.base_url, transport)
    fake.fail_next(1, 400, "Unsupported parameter: 'temperature'.", code="unsupported_parameter")
    with pytest.raises(ProtocolError) as failed:
        await Chat(provider).turn([user("Run the steps.")])
    await provider.aclose()

    assert failed.value.status == 400
    assert failed.value.code == "upstream_error"
    assert "Unsupported parameter" in failed.value.message
    assert len(fake.requests) == 1


@TRANSPORTS
async def test_key_goes_only_in_the_authorization_header(fake: FakeResponsesUpstream, transport: Transport) -> None:
    provider = provider_for(fake.base_url, transport)
    await Chat(provider).turn([user("Run the steps.")])
    await provider.aclose()

    record = fake.requests[0]
    assert record.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(record.body)
    assert [name for name, value in record.headers.items() if KEY in value] == ["authorization"]


@TRANSPORTS
async def test_keys_never_appear_in_errors(fake: FakeResponsesUpstream, transport: Transport) -> None:
    wrong = "sk-wrong-9876543210zyxwvutsrq"
    provider = provider_for(fake.base_url, transport, api_key=wrong)
    with pytest.raises(ProtocolError) as refused:
        await Chat(provider).turn([user("Run the steps.")])
    await provider.aclose()
    provider = provider_for(fake.base_url, transport)
    fake.fail_next(1, 400, f"Your key {KEY} may not use this model.")
    with pytest.raises(ProtocolError) as echoed:
        await Chat(provider).turn([user("Run the steps.")])
    await provider.aclose()

    assert refused.value.status == 502
    assert refused.value.code == "upstream_auth_error"
    assert wrong not in repr(refused.value)
    assert KEY not in repr(echoed.value)
    assert "may not use this model" in echoed.value.message


@TRANSPORTS
async def test_unreachable_upstream_fails_after_the_retries(transport: Transport) -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}/v1", transport, max_retries=1)
    with pytest.raises(ProtocolError) as failed:
        await Chat(provider).turn([user("Hello?")])
    await provider.aclose()

    assert failed.value.status == 502
    assert failed.value.code == "upstream_error"
    assert KEY not in repr(failed.value)


@TRANSPORTS
async def test_max_output_tokens_makes_the_turn_incomplete(fake: FakeResponsesUpstream, transport: Transport) -> None:
    provider = provider_for(fake.base_url, transport)
    chat = Chat(provider)
    fake.script = (ScriptStep(text="A long answer that does not fit in two tokens."),)
    events = await chat.turn([user("Answer.")], max_output_tokens=2)
    await provider.aclose()

    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == "max_output_tokens"
    assert fake.requests[0].body["max_output_tokens"] == 2
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "A long a"


async def test_idle_lane_sockets_are_closed(fake: FakeResponsesUpstream) -> None:
    provider = provider_for(fake.base_url, "websocket")
    assert provider.pool is not None
    now = [0.0]
    provider.pool.clock = lambda: now[0]
    quiet, busy = Chat(provider, lane="conn-1/quiet"), Chat(provider, lane="conn-1/busy")
    await quiet.turn([user("Run the steps.")])
    socket = provider.pool.lanes["conn-1/quiet"]
    now[0] = provider.pool.idle_timeout_s
    await busy.turn([user("Run the steps.")])
    await socket.connection.wait_closed()
    lanes = set(provider.pool.lanes)
    await provider.aclose()

    assert lanes == {"conn-1/busy"}


async def test_error_inside_a_response_waits_for_its_end_and_the_socket_stays_clean() -> None:
    connections: list[int] = []

    async def upstream(websocket: ServerConnection) -> None:
        connections.append(1)
        async for number, _ in enumerate_messages(websocket):
            response = {"id": f"resp_up_{number}", "status": "in_progress"}
            await websocket.send(json.dumps({"type": "response.created", "response": response}))
            if number == 0:
                error = {"type": "error", "code": "server_error", "message": "Model crashed.", "sequence_number": 1}
                await websocket.send(json.dumps(error))
                await asyncio.sleep(0.05)
                failed = {**response, "status": "failed", "error": {"code": "server_error", "message": "Crashed."}}
                await websocket.send(json.dumps({"type": "response.failed", "response": failed}))
            else:
                done = {**response, "status": "completed", "usage": {"input_tokens": 3, "output_tokens": 0}}
                await websocket.send(json.dumps({"type": "response.completed", "response": done}))

    async with serve(upstream, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        provider = provider_for(f"http://127.0.0.1:{port}/v1", "websocket", max_retries=0)
        chat = Chat(provider)
        with pytest.raises(ProtocolError) as failed:
            await chat.turn([user("Hello.")])
        events = await chat.turn([user("Hello again.")])
        await provider.aclose()

    assert "Model crashed." in failed.value.message
    assert events == [Finish(Usage(input_tokens=3, output_tokens=0))]
    assert connections == [1]


async def enumerate_messages(websocket: ServerConnection) -> AsyncIterator[tuple[int, str | bytes]]:
    number = 0
    async for message in websocket:
        yield number, message
        number += 1


# -- credentials -----------------------------------------------------------------------------------------------


@TRANSPORTS
async def test_a_configured_key_wins_over_the_agents_forwarded_one(
    fake: FakeResponsesUpstream, transport: Transport
) -> None:
    provider = provider_for(fake.base_url, transport)
    request = ProviderRequest(
        model="up-model", instructions=None, context=[user("Hi.")], new_items=[user("Hi.")], tools=[],
        tool_choice="auto", context_tokens=0, cached_tokens=0, previous_response_id=None,
        response_id=ids.response_id(), credentials={"authorization": "Bearer sk-agent-not-for-this-upstream"},
    )  # fmt: skip
    try:
        events = [event async for event in provider.stream(request)]
    finally:
        await provider.aclose()
    assert isinstance(events[-1], Finish)
    assert [record.headers["authorization"] for record in fake.requests] == [f"Bearer {KEY}"]


@pytest.mark.parametrize("lane", [None, "conn-1/"], ids=["shared", "lane"])
async def test_closing_the_provider_closes_a_socket_lent_to_a_turn_in_flight(lane: str | None) -> None:
    """A gateway shutdown with a turn still streaming on an upstream socket closes that socket too (the fake sees
    it go), and the turn ends with a clean error rather than a socket left open behind a closed pool."""
    long_text = " ".join(f"word{n}" for n in range(100))  # many deltas, each followed by the fake's pause (5 s)
    with FakeResponsesUpstream([{"text": long_text}], api_key=KEY, event_delay_s=0.05) as fake:
        provider = provider_for(fake.base_url, "websocket", max_retries=0)
        chat = Chat(provider, lane=lane, store=False)
        stream = provider.stream(_request(chat, [user("Say a lot.")]))
        first = await anext(stream)
        assert isinstance(first, TextDelta)
        assert fake.open_connections == 1
        await provider.aclose()
        rest: list[ModelEvent] = []
        with pytest.raises(ProtocolError) as failed:
            await _collect(stream, rest)
        assert not any(isinstance(event, Finish) for event in rest), "the turn went on over a closed provider"
        assert failed.value.status == 502, failed.value.message  # the socket closed mid-turn, not a timeout
        assert await asyncio.to_thread(fake.wait_all_closed, 10.0)  # the fake's side saw it go
