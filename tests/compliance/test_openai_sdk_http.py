"""The official ``openai`` SDK, validating strictly, as the HTTP JSON and SSE client of a real ``tether serve``."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai import AsyncOpenAI, DefaultHttpxClient, OpenAI
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseInputMessageItem,
    ResponseInputParam,
    ResponseInputText,
    ResponseItem,
    ResponseReasoningItem,
    ResponseStreamEvent,
)
from openai.types.responses.responses_server_event import ResponseWsCompleted

from tether.testing import ServeProcess

from .support import (
    API_KEY,
    CROSS_TRANSPORT_TEXT,
    HTTP_LOOP_TEXT,
    LOOKUP_TOOL,
    TOOL_ROUNDS,
    assert_numbered_from_zero,
    receive_turn,
)

pytestmark = pytest.mark.compliance

MODEL = "gpt-5-mini"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SSE_FRAME_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def function_calls(response: Response) -> list[ResponseFunctionToolCall]:
    return [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]


def message_text(item: ResponseItem) -> str:
    assert isinstance(item, ResponseInputMessageItem), item
    return "".join(part.text for part in item.content if isinstance(part, ResponseInputText))


# -- create --------------------------------------------------------------------------------------------------


def test_create_returns_completed_response_with_cache_usage(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Say hello in exactly three words.")

    assert response.status == "completed"
    assert response.object == "response"
    assert response.model == MODEL
    assert response.output_text
    assert response.usage is not None
    details = response.usage.input_tokens_details
    assert details.cached_tokens >= 0
    assert details.cache_write_tokens >= 0
    assert details.cached_tokens + details.cache_write_tokens <= response.usage.input_tokens
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_create_stream_events_validate_and_number_from_zero(client: OpenAI) -> None:
    with client.responses.create(model=MODEL, input="Stream a short answer.", stream=True) as stream:
        events: list[ResponseStreamEvent] = list(stream)

    assert_numbered_from_zero(events)
    assert events[0].type == "response.created"
    assert events[1].type == "response.in_progress"
    last = events[-1]
    assert last.type == "response.completed"
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas
    assert last.response.output_text == deltas
    assert last.response.usage is not None


def test_raw_sse_body_names_every_event_and_ends_with_done(tether_server: ServeProcess) -> None:
    with httpx.Client(headers=AUTH, timeout=10.0) as http:
        reply = http.post(f"{tether_server.base_url}/responses", json={"model": MODEL, "input": "hi", "stream": True})

    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.content.endswith(b"data: [DONE]\n\n")
    frames = [frame for frame in SSE_FRAME_END.split(reply.content) if frame.strip()]
    assert frames[-1] == b"data: [DONE]"
    for frame in frames[:-1]:
        fields = dict(line.split(b": ", 1) for line in frame.splitlines())
        assert set(fields) == {b"event", b"data"}, frame
        assert json.loads(fields[b"data"])["type"] == fields[b"event"].decode()


def test_stream_helper_builds_final_text_response(client: OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Tell me something.") as stream:
        deltas = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()

    assert final.status == "completed"
    assert deltas
    assert final.output_text == deltas


def test_stream_helper_builds_final_function_call_response(client: OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Look up step one.", tools=[LOOKUP_TOOL]) as stream:
        argument_deltas = "".join(
            event.delta for event in stream if event.type == "response.function_call_arguments.delta"
        )
        final = stream.get_final_response()

    assert final.status == "completed"
    [call] = function_calls(final)
    assert call.name == "lookup"
    assert call.call_id
    assert call.arguments == argument_deltas
    arguments = json.loads(call.arguments)
    assert isinstance(arguments, dict)
    assert isinstance(arguments["step"], int)


def test_stream_helper_builds_reasoning_summary(client: OpenAI) -> None:
    with client.responses.stream(
        model=MODEL, input="Think, then answer.", reasoning={"effort": "low", "summary": "auto"}
    ) as stream:
        summary_deltas = "".join(
            event.delta for event in stream if event.type == "response.reasoning_summary_text.delta"
        )
        final = stream.get_final_response()

    [reasoning] = [item for item in final.output if isinstance(item, ResponseReasoningItem)]
    assert [part.text for part in reasoning.summary] == [summary_deltas]
    assert summary_deltas
    assert final.output_text
    assert final.reasoning is not None
    assert final.reasoning.summary == "auto"


def test_model_failure_mid_stream_ends_with_response_failed(client: OpenAI) -> None:
    with client.responses.create(model="fail", input="hi", stream=True) as stream:
        events: list[ResponseStreamEvent] = list(stream)

    assert_numbered_from_zero(events)
    assert [event.type for event in events] == ["response.created", "response.in_progress", "error", "response.failed"]
    error, failed = events[-2:]
    assert error.type == "error"
    assert error.code == "server_error"
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None


def test_model_failure_without_stream_is_an_http_error(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="script:no_such_script", input="hi")

    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"


def test_max_output_tokens_makes_an_incomplete_response(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Write a long answer.", max_output_tokens=3)
    with client.responses.create(model=MODEL, input="Write a long answer.", max_output_tokens=3, stream=True) as stream:
        events: list[ResponseStreamEvent] = list(stream)

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert 0 < response.usage.output_tokens <= 3
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.output_text == response.output_text


# -- server-side state ---------------------------------------------------------------------------------------


def test_tool_loop_over_http_sends_only_new_items(tether_server: ServeProcess) -> None:
    bodies: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.method == "POST":
            bodies.append(json.loads(request.content))

    model = "script:http_tool_loop"
    with OpenAI(
        api_key=API_KEY,
        base_url=tether_server.base_url,
        max_retries=0,
        _strict_response_validation=True,
        http_client=DefaultHttpxClient(event_hooks={"request": [record]}),
    ) as client:
        chain = [client.responses.create(model=model, input="Run the lookups.", tools=[LOOKUP_TOOL])]
        for step in range(1, TOOL_ROUNDS + 1):
            [call] = function_calls(chain[-1])
            assert (call.name, json.loads(call.arguments)) == ("lookup", {"step": step})
            new_items: ResponseInputParam = [
                {"type": "function_call_output", "call_id": call.call_id, "output": f"fact {step}"}
            ]
            chain.append(
                client.responses.create(
                    model=model, previous_response_id=chain[-1].id, input=new_items, tools=[LOOKUP_TOOL]
                )
            )
        stored_inputs = [list(client.responses.input_items.list(response.id)) for response in chain]

    final = chain[-1]
    assert final.status == "completed"
    assert final.output_text == HTTP_LOOP_TEXT
    assert function_calls(final) == []

    assert len(bodies) == TOOL_ROUNDS + 1
    assert "previous_response_id" not in bodies[0]
    assert bodies[0]["input"] == "Run the lookups."
    for step, (body, parent, response) in enumerate(zip(bodies[1:], chain[:-1], chain[1:], strict=True), start=1):
        assert body["previous_response_id"] == parent.id == response.previous_response_id
        [call] = function_calls(parent)
        assert body["input"] == [{"type": "function_call_output", "call_id": call.call_id, "output": f"fact {step}"}]

    # The server kept only the new items as each continuation's input, and the context grew on its side.
    assert [message_text(item) for item in stored_inputs[0]] == ["Run the lookups."]
    for items, parent in zip(stored_inputs[1:], chain[:-1], strict=True):
        [item] = items
        assert item.type == "function_call_output"
        assert item.call_id == function_calls(parent)[0].call_id
    usages = [response.usage for response in chain]
    assert all(usage is not None for usage in usages)
    input_tokens = [usage.input_tokens for usage in usages if usage is not None]
    assert input_tokens == sorted(set(input_tokens))
    assert all(usage.input_tokens_details.cached_tokens > 0 for usage in usages[1:] if usage is not None)


def test_instructions_are_not_carried_over_by_previous_response_id(client: OpenAI) -> None:
    first = client.responses.create(model="echo", input="one", instructions="Be terse.")
    second = client.responses.create(model="echo", input="two", previous_response_id=first.id)

    assert first.instructions == "Be terse."
    assert second.instructions is None
    assert second.output_text == "two"


def test_input_tokens_count_includes_the_previous_context(client: OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="Remember the number 7.")
    alone = client.responses.input_tokens.count(model=MODEL, input="And now?")
    chained = client.responses.input_tokens.count(model=MODEL, input="And now?", previous_response_id=first.id)

    assert alone.object == "response.input_tokens"
    assert 0 < alone.input_tokens < chained.input_tokens


def test_retrieve_returns_the_stored_response(client: OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="Remember this answer.")

    retrieved = client.responses.retrieve(created.id)

    assert retrieved.id == created.id
    assert retrieved.status == "completed"
    assert retrieved.output_text == created.output_text
    assert retrieved.usage == created.usage


def test_input_items_list_pages_with_limit_order_and_after(client: OpenAI) -> None:
    texts = [f"message {number}" for number in range(1, 6)]
    response = client.responses.create(
        model=MODEL, input=[{"type": "message", "role": "user", "content": text} for text in texts]
    )

    first = client.responses.input_items.list(response.id, limit=2, order="asc")
    assert [message_text(item) for item in first.data] == texts[:2]
    assert first.has_more is True
    second = client.responses.input_items.list(response.id, limit=2, order="asc", after=first.data[-1].id)
    assert [message_text(item) for item in second.data] == texts[2:4]
    last = client.responses.input_items.list(response.id, limit=2, order="asc", after=second.data[-1].id)
    assert [message_text(item) for item in last.data] == texts[4:]
    assert last.has_more is False

    newest_first = client.responses.input_items.list(response.id, limit=2)
    assert [message_text(item) for item in newest_first.data] == texts[::-1][:2]
    everything = [message_text(item) for item in client.responses.input_items.list(response.id, limit=2)]
    assert everything == texts[::-1]


def test_deleted_response_is_gone(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Forget me.")

    client.responses.delete(response.id)

    with pytest.raises(openai.NotFoundError) as retrieved:
        client.responses.retrieve(response.id)
    assert retrieved.value.status_code == 404
    assert response.id in retrieved.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)
    with pytest.raises(openai.BadRequestError) as continued:
        client.responses.create(model=MODEL, previous_response_id=response.id, input="Still there?")
    assert continued.value.code == "previous_response_not_found"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_unknown_previous_response_id_is_bad_request(client: OpenAI, stream: bool) -> None:
    # With stream=true too, the error is the HTTP status, before any event.
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(
            model=MODEL, previous_response_id="resp_does_not_exist", input="Continue.", stream=stream
        )

    error = raised.value
    assert error.status_code == 400
    assert error.code == "previous_response_not_found"
    assert error.param == "previous_response_id"
    assert error.type == "invalid_request_error"
    assert "resp_does_not_exist" in error.message


# -- errors ----------------------------------------------------------------------------------------------------


def test_missing_model_is_missing_required_parameter(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(input="No model given.")

    assert raised.value.status_code == 400
    assert raised.value.code == "missing_required_parameter"
    assert raised.value.param == "model"


def test_malformed_json_body_gets_json_error_envelope(tether_server: ServeProcess) -> None:
    with httpx.Client(headers=AUTH, timeout=10.0) as http:
        reply = http.post(
            f"{tether_server.base_url}/responses",
            content=b'{"model": "gpt-5-mini", "input": ',
            headers={"content-type": "application/json"},
        )

    assert reply.status_code == 400
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "invalid_json"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", 5),
        ("input", 5),
        ("store", "yes"),
        ("tools", "lookup"),
        ("metadata", "tag"),
        ("max_output_tokens", "10"),
        # Union-typed fields: the param names the field, not a pydantic union member ("temperature.float").
        ("temperature", "hot"),
        ("top_p", "high"),
        ("tool_choice", 5),
    ],
)
def test_wrong_field_type_is_bad_request_naming_the_field(client: OpenAI, field: str, value: object) -> None:
    body: dict[str, object] = {"model": MODEL, "input": "hi", field: value}

    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(extra_body=body)

    assert raised.value.status_code == 400
    assert raised.value.type == "invalid_request_error"
    assert raised.value.param == field


def test_orphan_function_call_output_is_bad_request(client: OpenAI) -> None:
    orphan: ResponseInputParam = [{"type": "function_call_output", "call_id": "call_never_made", "output": "42"}]

    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input=orphan)

    assert raised.value.status_code == 400
    assert "call_never_made" in raised.value.message
    assert raised.value.param is not None
    assert raised.value.param.startswith("input[0]")


def test_orphan_call_id_in_continuation_is_bad_request(client: OpenAI) -> None:
    parent = client.responses.create(model=MODEL, input="Look up step one.", tools=[LOOKUP_TOOL])
    assert function_calls(parent)
    orphan: ResponseInputParam = [{"type": "function_call_output", "call_id": "call_not_in_parent", "output": "42"}]

    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, previous_response_id=parent.id, input=orphan)

    assert "call_not_in_parent" in raised.value.message


def test_stream_id_is_rejected_over_http(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="hi", extra_body={"stream_id": "lane-a"})

    assert raised.value.status_code == 400
    assert raised.value.param == "stream_id"


def test_wrong_api_key_is_authentication_error(tether_server: ServeProcess) -> None:
    with (
        OpenAI(api_key="not-the-key", base_url=tether_server.base_url, max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        stranger.responses.create(model=MODEL, input="hi")

    assert raised.value.status_code == 401


# -- across transports -----------------------------------------------------------------------------------------


async def test_websocket_response_continues_over_http(async_client: AsyncOpenAI) -> None:
    model = "script:cross_transport"
    async with async_client.responses.connect() as connection:
        await connection.response.create(model=model, input="Look up step one.", tools=[LOOKUP_TOOL], store=True)
        terminal = (await receive_turn(connection))[-1]
    assert isinstance(terminal, ResponseWsCompleted)
    [call] = [item for item in terminal.response.output if isinstance(item, ResponseFunctionToolCall)]

    continued = await async_client.responses.create(
        model=model,
        previous_response_id=terminal.response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "fact 1"}],
    )

    assert continued.status == "completed"
    assert continued.previous_response_id == terminal.response.id
    assert continued.output_text == CROSS_TRANSPORT_TEXT
