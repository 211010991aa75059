"""Reading a Responses upstream's events, and building what is sent to it (both sans-I/O), plus the HTTP reader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tether.protocol.compaction import compaction_item
from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import (
    Finish,
    ModelEvent,
    ReasoningEnd,
    ReasoningStart,
    ReasoningSummaryDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tether.protocol.sse import encode_event
from tether.providers.base import ProviderRequest
from tether.providers.http_upstream import UpstreamOptions
from tether.providers.openai_responses import OpenAIResponsesProvider
from tether.providers.responses_events import ResponsesEventReader
from tether.providers.responses_payload import (
    ResponseIdMap,
    UpstreamRef,
    continuation_of,
    create_body,
    upstream_items,
)
from tether.providers.upstream_errors import UpstreamReportedError
from tether.types import Item, JSONObject

KEY = "sk-test-0123456789abcdefghij"
USAGE: JSONObject = {
    "input_tokens": 1200,
    "output_tokens": 40,
    "total_tokens": 1240,
    "input_tokens_details": {"cached_tokens": 1024},
    "output_tokens_details": {"reasoning_tokens": 12},
}


def completed(usage: JSONObject | None = None, **response: Any) -> JSONObject:
    body = {"id": "resp_up_1", "status": "completed", "usage": usage or USAGE, **response}
    return {"type": "response.completed", "response": body}


def read(*events: JSONObject) -> list[ModelEvent]:
    reader = ResponsesEventReader()
    result: list[ModelEvent] = []
    for event in events:
        result += reader.feed(event)
    return result


def fc_added(index: int, item_id: str, call_id: str, name: str) -> JSONObject:
    item = {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": ""}
    return {"type": "response.output_item.added", "output_index": index, "item": item}


def args_delta(index: int, item_id: str, delta: str) -> JSONObject:
    return {"type": "response.function_call_arguments.delta", "output_index": index, "item_id": item_id, "delta": delta}


# -- the reader ----------------------------------------------------------------------------------------------------


def test_text_deltas_keep_the_message_phase_and_usage_keeps_cached_tokens() -> None:
    item = {"type": "message", "id": "msg_up", "role": "assistant", "content": [], "phase": "commentary"}
    events = read(
        {"type": "response.created", "response": {"id": "resp_up_1", "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.output_text.delta", "output_index": 0, "item_id": "msg_up", "delta": "Hel"},
        {"type": "response.output_text.delta", "output_index": 0, "item_id": "msg_up", "delta": "lo"},
        {"type": "response.output_text.done", "output_index": 0, "item_id": "msg_up", "text": "Hello"},
        completed(),
    )

    assert events == [
        TextDelta("Hel", phase="commentary"),
        TextDelta("lo", phase="commentary"),
        Finish(Usage(input_tokens=1200, output_tokens=40, cached_tokens=1024, reasoning_tokens=12)),
    ]


def test_parallel_function_calls_with_streamed_arguments() -> None:
    events = read(
        fc_added(0, "fc_a", "call_a", "read_file"),
        args_delta(0, "fc_a", '{"path":'),
        args_delta(0, "fc_a", '"a.py"}'),
        {"type": "response.function_call_arguments.done", "item_id": "fc_a", "arguments": '{"path":"a.py"}'},
        fc_added(1, "fc_b", "call_b", "read_file"),
        args_delta(1, "fc_b", '{"path":"b.py"}'),
        completed(),
    )  # fmt: skip

    assert events[:-1] == [
        ToolCallDelta("call_a", "read_file", ""),
        ToolCallDelta("call_a", "read_file", '{"path":'),
        ToolCallDelta("call_a", "read_file", '"a.py"}'),
        ToolCallDelta("call_b", "read_file", ""),
        ToolCallDelta("call_b", "read_file", '{"path":"b.py"}'),
    ]


def test_a_reasoning_item_keeps_the_upstream_s_id_its_summary_parts_and_its_encrypted_content() -> None:
    reasoning = {"type": "reasoning", "id": "rs_up", "summary": []}
    done = {**reasoning, "encrypted_content": "gAAAAB-opaque", "summary": [
        {"type": "summary_text", "text": "First."}, {"type": "summary_text", "text": "Then."}]}  # fmt: skip
    events = read(
        {"type": "response.output_item.added", "output_index": 0, "item": reasoning},
        {"type": "response.reasoning_summary_part.added", "item_id": "rs_up", "summary_index": 0,
         "part": {"type": "summary_text", "text": ""}},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_up", "summary_index": 0, "delta": "First."},
        {"type": "response.reasoning_summary_text.done", "item_id": "rs_up", "summary_index": 0, "text": "First."},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_up", "summary_index": 1, "delta": "Then."},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
    )  # fmt: skip

    assert events == [
        ReasoningStart("rs_up"),
        ReasoningSummaryDelta("", summary_index=0),
        ReasoningSummaryDelta("First.", summary_index=0),
        ReasoningSummaryDelta("Then.", summary_index=1),
        ReasoningEnd(done),
    ]


def test_a_reasoning_item_sent_whole_with_no_summary_is_not_lost() -> None:
    item = {"type": "reasoning", "id": "rs_up", "summary": [], "encrypted_content": "opaque"}
    events = read({"type": "response.output_item.done", "output_index": 0, "item": item})

    assert events == [ReasoningStart("rs_up"), ReasoningEnd(item)]


def test_items_sent_whole_are_not_lost() -> None:
    message = {"type": "message", "id": "m", "role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]}
    call = {"type": "function_call", "id": "fc", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'}
    events = read(
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.output_item.done", "output_index": 1, "item": call},
    )

    assert events == [TextDelta("Hi."), ToolCallDelta("call_1", "f", '{"a":1}')]


def test_a_final_text_longer_than_its_deltas_sends_the_rest() -> None:
    events = read(
        {"type": "response.output_text.delta", "output_index": 0, "item_id": "m", "delta": "Hel"},
        {"type": "response.output_text.done", "output_index": 0, "item_id": "m", "text": "Hello"},
    )

    assert events == [TextDelta("Hel"), TextDelta("lo")]


@pytest.mark.parametrize("reason", ["max_output_tokens", "content_filter"])
def test_incomplete_responses_finish_with_their_reason(reason: str) -> None:
    details = {"reason": reason}
    response = {"id": "resp_up_1", "status": "incomplete", "incomplete_details": details, "usage": USAGE}
    (finish,) = read({"type": "response.incomplete", "response": response})

    assert isinstance(finish, Finish)
    assert finish.reason == reason


@pytest.mark.parametrize(
    "event",
    [
        {"type": "error", "status": 400, "error": {"code": "previous_response_not_found", "message": "Gone."}},
        {"type": "error", "code": "previous_response_not_found", "message": "Gone.", "sequence_number": 3},
        {"type": "response.failed", "response": {"id": "r", "status": "failed",
                                                 "error": {"code": "previous_response_not_found", "message": "Gone."}}},
    ],
)  # fmt: skip
def test_errors_keep_the_upstream_code(event: JSONObject) -> None:
    with pytest.raises(UpstreamReportedError) as raised:
        read(event)

    assert raised.value.code == "previous_response_not_found"
    assert raised.value.message == "Gone."


# -- what is sent --------------------------------------------------------------------------------------------------


def request(**fields: Any) -> ProviderRequest:
    context: list[Item] = fields.pop("context", [{"type": "message", "role": "user", "content": "Hi"}])
    values: dict[str, Any] = {
        "model": "gpt-up", "instructions": "Be brief.", "context": context, "new_items": context[-1:],
        "tools": [], "tool_choice": "auto", "context_tokens": 0, "cached_tokens": 0,
        "previous_response_id": "resp_parent", "response_id": "resp_child", **fields,
    }  # fmt: skip
    return ProviderRequest(**values)


def test_body_forwards_the_clients_parameters_but_not_tethers() -> None:
    params = {
        "store": False, "temperature": 0.2, "reasoning": {"effort": "low"}, "max_output_tokens": 50,
        "previous_response_id": "resp_parent", "model": "client-model", "tether:idempotency_key": "k",
        "conversation": "conv_1", "metadata": {"a": "b"},
    }  # fmt: skip
    body = create_body(request(params=params), "resp_up_9")

    assert body == {
        "model": "gpt-up", "instructions": "Be brief.", "store": False, "temperature": 0.2,
        "reasoning": {"effort": "low"}, "max_output_tokens": 50, "metadata": {"a": "b"},
        "previous_response_id": "resp_up_9", "input": [{"type": "message", "role": "user", "content": "Hi"}],
    }  # fmt: skip


def test_full_context_expands_compaction_and_drops_what_the_upstream_cannot_take() -> None:
    held = [
        {"type": "message", "role": "user", "content": "Old"},
        {"type": "function_call", "id": "fc_tether", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]
    context = [
        compaction_item(held),
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "reasoning", "id": "rs_tether", "summary": [{"type": "summary_text", "text": "hm"}]},
        {"type": "reasoning", "id": "rs_up", "summary": [], "encrypted_content": "opaque"},
        {"type": "compaction", "id": "cmp_up", "encrypted_content": "someone-elses"},
        {"type": "message", "id": "msg_tether", "role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
    ]

    assert upstream_items(context) == [
        {"type": "message", "role": "user", "content": "Old"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "reasoning", "id": "rs_up", "summary": [], "encrypted_content": "opaque"},
        {"type": "compaction", "id": "cmp_up", "encrypted_content": "someone-elses"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
    ]
    assert "previous_response_id" not in create_body(request(context=context), None)


def test_reasoning_goes_up_only_where_the_upstream_can_read_it() -> None:
    raw = {"type": "reasoning", "id": "rs_v", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]}
    summary_only = {"type": "reasoning", "id": "rs_o", "summary": [{"type": "summary_text", "text": "hm"}]}
    thinking = {"type": "reasoning", "id": "rs_a", "summary": [], "encrypted_content": "tether:anthropic:thinking:s"}
    sealed = {"type": "reasoning", "id": "rs_e", "summary": [], "encrypted_content": "gAAAAB"}
    context: list[Item] = [raw, summary_only, thinking, sealed]

    assert upstream_items(context, stateless=True) == [raw, sealed]
    assert upstream_items(context) == [sealed]


def test_continuation_needs_a_mapped_parent_and_a_store_false_one_needs_its_socket() -> None:
    ids = ResponseIdMap(capacity=2)
    ids.put("resp_stored", UpstreamRef("resp_up_s", stored=True))
    ids.put("resp_local", UpstreamRef("resp_up_l", stored=False))

    assert continuation_of(request(previous_response_id="resp_stored"), ids) == "resp_up_s"
    assert continuation_of(request(previous_response_id="resp_local"), ids) is None
    assert continuation_of(request(previous_response_id="resp_local"), ids, held_by_connection="resp_up_l")
    assert continuation_of(request(previous_response_id="resp_other"), ids) is None
    assert continuation_of(request(previous_response_id=None), ids) is None
    ids.get("resp_stored")
    ids.put("resp_new", UpstreamRef("resp_up_n", stored=True))
    assert ids.get("resp_local") is None  # the least recently used went first
    assert len(ids) == 2


# -- the HTTP reader, with canned upstream answers -------------------------------------------------------------------


def provider_answering(handler: Callable[[httpx.Request], httpx.Response], retries: int = 0) -> OpenAIResponsesProvider:
    options = UpstreamOptions("http://upstream.test/v1", api_key=KEY, max_retries=retries, backoff_s=0.0)
    return OpenAIResponsesProvider("up", options, http_transport=httpx.MockTransport(handler))


def sse(*events: JSONObject) -> httpx.Response:
    content = b"".join(encode_event(event) for event in events) + b"data: [DONE]\n\n"
    return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})


async def run(provider: OpenAIResponsesProvider) -> list[ModelEvent]:
    try:
        return [event async for event in provider.stream(request(previous_response_id=None))]
    finally:
        await provider.aclose()


async def test_sse_json_with_line_separators_is_read_whole() -> None:
    text = "one\u2028two\u2029three"
    provider = provider_answering(
        lambda _: sse(
            {"type": "response.output_text.delta", "output_index": 0, "item_id": "m", "delta": text}, completed()
        )
    )

    events = await run(provider)

    assert events[0] == TextDelta(text)


async def test_whole_json_answer_is_read_as_events() -> None:
    message = {"type": "message", "id": "m", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}
    body = {"id": "resp_up_1", "status": "completed", "output": [message], "usage": USAGE}
    provider = provider_answering(lambda _: httpx.Response(200, json=body))

    events = await run(provider)

    assert events[0] == TextDelta("Hi")
    assert isinstance(events[-1], Finish)


@pytest.mark.parametrize(
    "failure",
    [
        {"type": "response.failed", "response": {"id": "r", "status": "failed",
                                                 "error": {"code": "server_error", "message": "Model crashed."}}},
        {"type": "error", "code": "server_error", "message": "Model crashed.", "sequence_number": 2},
    ],
)  # fmt: skip
async def test_failures_in_the_stream_are_upstream_errors(failure: JSONObject) -> None:
    provider = provider_answering(lambda _: sse(failure))

    with pytest.raises(ProtocolError) as raised:
        await run(provider)

    assert raised.value.status == 502
    assert raised.value.code == "upstream_error"
    assert "Model crashed." in raised.value.message


async def test_failure_after_events_is_not_retried() -> None:
    calls: list[bytes] = []

    def answer(upstream_request: httpx.Request) -> httpx.Response:
        calls.append(upstream_request.content)
        delta = {"type": "response.output_text.delta", "output_index": 0, "item_id": "m", "delta": "Hi"}
        return sse(delta, {"type": "error", "code": "server_error", "message": "Lost it."})

    provider = provider_answering(answer, retries=2)
    with pytest.raises(ProtocolError):
        await run(provider)

    assert len(calls) == 1
    assert orjson.loads(calls[0])["stream"] is True
