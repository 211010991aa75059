"""The official ``openai`` SDK in WebSocket mode (``client.responses.connect()``) against a real ``tether serve``."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.lib.responses_websocket import (
    AsyncResponsesWebSocketLane,
    AsyncResponsesWebSocketSession,
    ResponsesWebSocketError,
    ResponsesWebSocketLimits,
)
from openai.resources.responses.responses import AsyncResponsesConnection
from openai.types.responses import (
    FunctionTool,
    Response,
    ResponseFunctionToolCall,
    ResponseInputParam,
    ResponsesServerEvent,
)
from openai.types.responses.responses_server_event import ResponseWsCompleted, ResponseWsError
from openai.types.websocket_connection_options import WebSocketConnectionOptions
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.extensions.permessage_deflate import PerMessageDeflate

from tether.testing import ServeProcess, serve_subprocess

from .support import (
    API_KEY,
    LOOKUP_TOOL,
    TOOL_ROUNDS,
    TURN_TIMEOUT_S,
    WS_LOOP_TEXT,
    assert_numbered_from_zero,
    ends_turn,
    event_field,
    receive_turn,
    receive_turn_sync,
)

pytestmark = pytest.mark.compliance

MODEL = "gpt-5-mini"
MAX_NAMED_LANES = 32  # tether's default websocket.max_named_lanes, as OpenAI's
BETA_HEADER = {"OpenAI-Beta": "responses_websockets=2026-02-06"}
LIMITS = ResponsesWebSocketLimits(
    max_lanes=8, max_events_per_lane=1024, max_events=4096, max_bytes_per_lane=16 << 20, max_bytes=32 << 20
)


def completed(events: list[ResponsesServerEvent]) -> Response:
    """The response of a turn that must have completed."""
    terminal = events[-1]
    assert isinstance(terminal, ResponseWsCompleted), terminal
    assert terminal.response.status == "completed"
    return terminal.response


def request_error(events: list[ResponsesServerEvent]) -> ResponseWsError:
    """The single error event of a request refused before its response began."""
    [error] = events
    assert isinstance(error, ResponseWsError), error
    return error


async def turn(connection: AsyncResponsesConnection, input: str | ResponseInputParam, **fields: Any) -> Response:
    """Send a ``response.create`` with ``model="echo"`` and return the completed response."""
    await connection.response.create(model="echo", input=input, **fields)
    return completed(await receive_turn(connection))


def function_call(response: Response) -> ResponseFunctionToolCall:
    [call] = [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]
    return call


# -- turns on one socket ---------------------------------------------------------------------------------------


async def test_tool_loop_on_one_socket_sends_only_function_call_outputs(async_client: AsyncOpenAI) -> None:
    model = "script:ws_tool_loop"
    chain: list[Response] = []
    async with async_client.responses.connect() as connection:
        await connection.response.create(model=model, input="Run the lookups.", tools=[LOOKUP_TOOL])
        for step in range(1, TOOL_ROUNDS + 2):
            events = await receive_turn(connection)
            assert_numbered_from_zero(events)
            assert all(event_field(event, "stream_id") is None for event in events)
            chain.append(completed(events))
            if step > TOOL_ROUNDS:
                break
            call = function_call(chain[-1])
            assert (call.name, json.loads(call.arguments)) == ("lookup", {"step": step})
            await connection.response.create(
                model=model,
                previous_response_id=chain[-1].id,
                input=[{"type": "function_call_output", "call_id": call.call_id, "output": f"fact {step}"}],
                tools=[LOOKUP_TOOL],
            )
        # Nothing follows a terminal event on WebSocket: no "[DONE]", no close.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(connection.recv_bytes(), timeout=0.3)

    assert chain[-1].output_text == WS_LOOP_TEXT
    assert [response.previous_response_id for response in chain] == [None, *(r.id for r in chain[:-1])]
    for parent, response in itertools.pairwise(chain):
        page = await async_client.responses.input_items.list(response.id)
        [stored] = page.data
        assert stored.type == "function_call_output"
        assert stored.call_id == function_call(parent).call_id


async def test_session_runs_default_and_named_lanes_concurrently(async_client: AsyncOpenAI) -> None:
    async def run(
        stream_id: str | None, lane: AsyncResponsesWebSocketLane
    ) -> tuple[list[ResponsesServerEvent], Response]:
        await lane.send({"type": "response.create", "model": "echo", "input": f"hello from {stream_id}"})
        events: list[ResponsesServerEvent] = []
        while not events or not ends_turn(events[-1]):
            events.append(await lane.recv())
        return events, await lane.get_final_response()

    async with (
        asyncio.timeout(TURN_TIMEOUT_S),
        async_client.responses.connect() as connection,
        AsyncResponsesWebSocketSession(connection, limits=LIMITS) as session,
    ):
        lanes = {None: session.default, "lane-a": session.lane("lane-a"), "lane-b": session.lane("lane-b")}
        results = await asyncio.gather(*(run(stream_id, lane) for stream_id, lane in lanes.items()))

    for stream_id, (events, final) in zip(lanes, results, strict=True):
        assert final.status == "completed"
        assert final.output_text == f"hello from {stream_id}"
        assert_numbered_from_zero(events)
        assert [event_field(event, "stream_id") for event in events] == [stream_id] * len(events)
        assert completed(events).id == final.id
    assert len({final.id for _, final in results}) == len(lanes)


async def test_named_lane_error_carries_stream_id_and_lane_recovers(async_client: AsyncOpenAI) -> None:
    async with (
        asyncio.timeout(TURN_TIMEOUT_S),
        async_client.responses.connect() as connection,
        AsyncResponsesWebSocketSession(connection, limits=LIMITS) as session,
    ):
        lane = session.lane("lane-err")
        await lane.send({"type": "response.create", "model": "echo", "input": "x", "previous_response_id": "resp_nope"})
        with pytest.raises(ResponsesWebSocketError) as raised:
            await lane.get_final_response()
        await lane.send({"type": "response.create", "model": "echo", "input": "recovered"})
        recovered = await lane.get_final_response()

    error = raised.value.event
    assert isinstance(error, ResponseWsError)
    assert error.stream_id == "lane-err"
    assert error.status == 400
    assert error.error.code == "previous_response_not_found"
    assert error.error.param == "previous_response_id"
    assert recovered.output_text == "recovered"


async def test_lane_forks_from_another_lanes_store_false_response(async_client: AsyncOpenAI) -> None:
    async with (
        asyncio.timeout(TURN_TIMEOUT_S),
        async_client.responses.connect() as connection,
        AsyncResponsesWebSocketSession(connection, limits=LIMITS) as session,
    ):
        source, fork = session.lane("source"), session.lane("fork")
        await source.send({"type": "response.create", "model": "echo", "input": "fork point", "store": False})
        parent = await source.get_final_response()
        # No new input: the echo model answers the last user message of the inherited context.
        await fork.send({"type": "response.create", "model": "echo", "previous_response_id": parent.id, "store": False})
        forked = await fork.get_final_response()
        await source.send(
            {"type": "response.create", "model": "echo", "previous_response_id": parent.id, "store": False}
        )
        continued = await source.get_final_response()

    assert forked.output_text == continued.output_text == "fork point"
    assert forked.previous_response_id == continued.previous_response_id == parent.id


async def test_generate_false_warmup_then_chained_turn(async_client: AsyncOpenAI) -> None:
    async with async_client.responses.connect() as connection:
        await connection.response.create(
            model="echo",
            input="The code word is cobalt.",
            instructions="Answer in one line.",
            tools=[LOOKUP_TOOL],
            generate=False,
        )
        warmup_events = await receive_turn(connection)
        await connection.response.create(model="echo", previous_response_id=completed(warmup_events).id)
        chained = completed(await receive_turn(connection))

    warmup = completed(warmup_events)
    assert warmup.output == []
    assert warmup.instructions == "Answer in one line."
    assert [tool.name for tool in warmup.tools if isinstance(tool, FunctionTool)] == ["lookup"]
    assert not [event for event in warmup_events if event.type.startswith("response.output")]
    assert_numbered_from_zero(warmup_events)
    assert chained.previous_response_id == warmup.id
    assert chained.output_text == "The code word is cobalt."


async def test_second_create_on_a_busy_lane_is_queued_in_order(async_client: AsyncOpenAI) -> None:
    async with async_client.responses.connect() as connection:
        await connection.response.create(model="echo", input="first", store=False)
        await connection.response.create(model="echo", input="second", store=False)
        first_events = await receive_turn(connection)
        second_events = await receive_turn(connection)

    assert completed(first_events).output_text == "first"
    assert completed(second_events).output_text == "second"
    assert_numbered_from_zero(first_events)
    assert_numbered_from_zero(second_events)


async def test_thirty_third_named_lane_is_refused_with_its_stream_id(async_client: AsyncOpenAI) -> None:
    lanes = [f"lane-{number}" for number in range(MAX_NAMED_LANES + 1)]
    numbers: dict[str | None, list[int]] = {}
    finals: dict[str | None, Response] = {}
    errors: list[ResponseWsError] = []
    async with asyncio.timeout(TURN_TIMEOUT_S), async_client.responses.connect() as connection:
        for stream_id in lanes:
            await connection.response.create(model="echo", input=f"on {stream_id}", stream_id=stream_id)
        while len(finals) + len(errors) < len(lanes):
            event = await connection.recv()
            if isinstance(event, ResponseWsError):
                errors.append(event)
                continue
            numbers.setdefault(event_field(event, "stream_id"), []).append(event_field(event, "sequence_number"))
            if isinstance(event, ResponseWsCompleted):
                finals[event.stream_id] = event.response
        reused = await turn(connection, "again on lane-0", stream_id="lane-0")

    [refused] = errors
    assert refused.stream_id == lanes[-1]
    assert refused.error.code == "websocket_stream_limit_reached"
    assert set(finals) == set(lanes[:-1])
    assert all(final.output_text == f"on {stream_id}" for stream_id, final in finals.items())
    assert all(sequence == list(range(len(sequence))) for sequence in numbers.values())
    assert reused.output_text == "again on lane-0"


async def test_failed_response_ends_its_lane_request_once(async_client: AsyncOpenAI) -> None:
    async with (
        asyncio.timeout(TURN_TIMEOUT_S),
        async_client.responses.connect() as connection,
        AsyncResponsesWebSocketSession(connection, limits=LIMITS) as session,
    ):
        lane = session.lane("lane-fail")
        await lane.send({"type": "response.create", "model": "fail", "input": "x"})
        events = [await lane.recv()]
        while not ends_turn(events[-1]):
            events.append(await lane.recv())
        failed = await lane.get_final_response()
        # One ending per create: had an error event preceded response.failed, the lane would hand that stale
        # response.failed to the next create.
        await lane.send({"type": "response.create", "model": "echo", "input": "after the failure"})
        after = await lane.get_final_response()

    assert [event.type for event in events] == ["response.created", "response.in_progress", "response.failed"]
    numbers = [event_field(event, "sequence_number") for event in events]
    assert numbers == sorted(set(numbers))
    assert numbers[0] == 0
    assert failed.status == "failed"
    assert failed.error is not None
    assert "failed on purpose" in failed.error.message
    assert after.status == "completed"
    assert after.output_text == "after the failure"


# -- connection-local state --------------------------------------------------------------------------------------


async def test_store_false_response_is_not_resurrected_on_a_new_socket(async_client: AsyncOpenAI) -> None:
    question = "What was the code word?"
    async with async_client.responses.connect() as socket_a:
        first = await turn(socket_a, "The code word is cobalt.", store=False)
        async with async_client.responses.connect() as socket_b:
            await socket_b.response.create(model="echo", previous_response_id=first.id, input=question, store=False)
            refused = request_error(await receive_turn(socket_b))
            history: ResponseInputParam = [
                {"role": "user", "content": "The code word is cobalt."},
                {"role": "assistant", "content": first.output_text},
                {"role": "user", "content": question},
            ]
            await socket_b.response.create(model="echo", input=history, store=False)
            full_context = completed(await receive_turn(socket_b))
        continued = await turn(socket_a, question, previous_response_id=first.id, store=False)

    assert refused.status == 400
    assert refused.error.code == "previous_response_not_found"
    assert refused.error.param == "previous_response_id"
    assert full_context.output_text == question
    assert full_context.previous_response_id is None
    assert continued.previous_response_id == first.id


async def test_only_the_latest_store_false_response_of_a_lane_can_be_continued(async_client: AsyncOpenAI) -> None:
    async with async_client.responses.connect() as connection:
        first = await turn(connection, "one", store=False)
        await turn(connection, "two", previous_response_id=first.id, store=False)
        await connection.response.create(model="echo", previous_response_id=first.id, input="stale", store=False)
        stale = request_error(await receive_turn(connection))

    assert stale.error.code == "previous_response_not_found"
    assert stale.error.param == "previous_response_id"


async def test_store_true_response_continues_on_a_new_socket(async_client: AsyncOpenAI) -> None:
    async with async_client.responses.connect() as socket_a:
        first = await turn(socket_a, "The code word is cobalt.", store=True)
    async with async_client.responses.connect() as socket_b:
        await socket_b.response.create(model="echo", previous_response_id=first.id)
        continued = completed(await receive_turn(socket_b))

    assert continued.previous_response_id == first.id
    assert continued.output_text == "The code word is cobalt."


async def test_store_false_response_is_not_visible_over_http(async_client: AsyncOpenAI) -> None:
    async with async_client.responses.connect() as connection:
        ephemeral = await turn(connection, "Do not keep this.", store=False)

        with pytest.raises(openai.NotFoundError):
            await async_client.responses.retrieve(ephemeral.id)
        with pytest.raises(openai.BadRequestError) as raised:
            await async_client.responses.create(model="echo", previous_response_id=ephemeral.id, input="Next.")

    assert raised.value.code == "previous_response_not_found"


async def test_failed_continuation_evicts_the_previous_response(async_client: AsyncOpenAI) -> None:
    orphan: ResponseInputParam = [{"type": "function_call_output", "call_id": "call_missing", "output": "42"}]
    async with async_client.responses.connect() as connection:
        first = await turn(connection, "The code word is cobalt.", store=False)
        await connection.response.create(model="echo", previous_response_id=first.id, input=orphan, store=False)
        failed = request_error(await receive_turn(connection))
        await connection.response.create(model="echo", previous_response_id=first.id, input="Again.", store=False)
        evicted = request_error(await receive_turn(connection))
        fresh = await turn(connection, "Start over.", store=False)

    assert failed.status == 400
    assert "call_missing" in failed.error.message
    assert evicted.error.code == "previous_response_not_found"
    assert fresh.output_text == "Start over."


async def test_compacted_window_starts_a_new_chain_on_websocket(async_client: AsyncOpenAI) -> None:
    history: ResponseInputParam = [
        {"role": "user", "content": "The code word is cobalt."},
        {"role": "assistant", "content": "Noted."},
    ]
    compacted = await async_client.responses.compact(model=MODEL, input=history)
    assert compacted.object == "response.compaction"
    assert [item.type for item in compacted.output] == ["compaction"]
    window: list[Any] = [item.model_dump(exclude_none=True) for item in compacted.output]

    async with async_client.responses.connect() as connection:
        response = await turn(connection, [*window, {"role": "user", "content": "And now?"}])

    assert response.previous_response_id is None
    assert response.output_text == "And now?"


# -- handshake and transport ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("offer_deflate", [True, False], ids=["deflate-offered", "no-extensions"])
async def test_beta_header_accepted_and_deflate_negotiated_when_offered(
    async_client: AsyncOpenAI, offer_deflate: bool
) -> None:
    # The SDK offers permessage-deflate only with a finite max_size.
    options: WebSocketConnectionOptions = {"max_size": 16 * 2**20} if offer_deflate else {}
    text = "cobalt " * 4096
    async with async_client.responses.connect(
        extra_headers=BETA_HEADER, websocket_connection_options=options
    ) as connection:
        extensions = connection._connection.protocol.extensions
        echoed = await turn(connection, text)

    assert [type(extension) for extension in extensions] == ([PerMessageDeflate] if offer_deflate else [])
    assert echoed.output_text == text


@pytest.fixture(scope="module")
def short_lived_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A server whose connections expire after 1 s and whose model writes 100 tokens per second."""
    env = {
        "TETHER_WEBSOCKET__MAX_CONNECTION_AGE_S": "1.0",
        "TETHER_SCRIPTED__TOKENS_PER_SECOND": "100",
        "TETHER_LOG_LEVEL": "warning",
    }
    with serve_subprocess(tmp_path_factory.mktemp("tether-short-lived"), env) as server:
        yield server


async def test_connection_age_limit_finishes_the_turn_then_errors_and_closes(short_lived_server: ServeProcess) -> None:
    text = "word " * 120  # 150 tokens at 100 tokens/s: the 1 s age limit falls inside this turn
    async with (
        AsyncOpenAI(api_key=API_KEY, base_url=short_lived_server.base_url, max_retries=0) as client,
        client.responses.connect() as connection,
    ):
        in_flight = await turn(connection, text)
        limit = connection.parse_event(await asyncio.wait_for(connection.recv_bytes(), timeout=10))
        with pytest.raises(ConnectionClosedOK):
            await connection.recv_bytes()
        close_code = connection._connection.close_code

    assert in_flight.output_text == text
    assert isinstance(limit, ResponseWsError)
    assert limit.status == 400
    assert limit.error.code == "websocket_connection_limit_reached"
    assert close_code == 1000


async def test_wrong_api_key_is_refused_at_the_handshake(tether_server: ServeProcess) -> None:
    async with AsyncOpenAI(api_key="not-the-key", base_url=tether_server.base_url, max_retries=0) as stranger:
        with pytest.raises(InvalidStatus) as raised:
            async with stranger.responses.connect():
                pass

    assert raised.value.response.status_code == 401


async def test_stream_field_in_create_is_tolerated(async_client: AsyncOpenAI) -> None:
    async with async_client.responses.connect() as connection:
        await connection.response.create(model="echo", input="streamed anyway", stream=True)
        response = completed(await receive_turn(connection))

    assert response.output_text == "streamed anyway"


async def test_background_is_rejected_and_socket_stays_open(async_client: AsyncOpenAI) -> None:
    async with async_client.responses.connect() as connection:
        await connection.response.create(model="echo", input="later", background=True)
        rejected = request_error(await receive_turn(connection))
        after = await turn(connection, "still open")

    assert rejected.status == 400
    assert rejected.error.param == "background"
    assert rejected.stream_id is None
    assert after.output_text == "still open"


async def test_a_steer_is_answered_with_the_sdks_response_steer_failed(async_client: AsyncOpenAI) -> None:
    async with async_client.responses.connect() as connection:
        await connection.send_raw('{"type": "response.steer", "previous_response_id": "resp_x", "input": "faster"}')
        answer = await connection.recv()
        after = await turn(connection, "still open")

    assert answer.type == "response.steer.failed"
    assert answer.error.code == "response_not_found"
    assert answer.steer.previous_response_id == "resp_x"
    assert answer.steer.input == "faster"
    assert after.output_text == "still open"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ("not json", None),
        ("[1, 2]", None),
        ('{"type": "session.update"}', "type"),
        ('{"type": "response.inject", "input": "faster"}', "type"),
        ('{"type": "response.create", "input": "no model"}', "model"),
        ('{"type": "response.create", "model": "echo", "input": "x", "stream_id": "bad id!"}', "stream_id"),
    ],
    ids=["not-json", "not-an-object", "unknown-event", "inject", "missing-model", "invalid-stream-id"],
)
async def test_invalid_client_message_is_an_error_event_and_socket_stays_open(
    async_client: AsyncOpenAI, message: str, param: str | None
) -> None:
    async with async_client.responses.connect() as connection:
        await connection.send_raw(message)
        rejected = request_error(await receive_turn(connection))
        after = await turn(connection, "still open")

    assert rejected.status == 400
    assert rejected.error.type == "invalid_request_error"
    assert rejected.error.code
    assert rejected.error.param == param
    assert after.output_text == "still open"


# openai 3.54.0's sync connect() calls websockets 17's connect() without a context manager (deprecated in 17.1):
# the client library's warning, not the server's.
@pytest.mark.filterwarnings(r"ignore:connect\(\) must be used as a context manager:DeprecationWarning")
def test_sync_connect_completes_a_turn(client: OpenAI) -> None:
    with client.responses.connect(extra_headers=BETA_HEADER) as connection:
        connection.response.create(model=MODEL, input="Say hello.")
        events = receive_turn_sync(connection)

    assert_numbered_from_zero(events)
    assert events[0].type == "response.created"
    response = completed(events)
    assert response.output_text
    assert response.usage is not None
