"""Request parsing and validation, in process: every bad field gets the protocol's error, with its param."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.errors import ProtocolError
from tether.protocol.request import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    CreateRequest,
    Transport,
    check_stream_id,
    decode_json_object,
    normalise_input,
    parse_create,
)
from tether.types import JSONObject

HTTP, WS = Transport.HTTP, Transport.WEBSOCKET


def refused(body: JSONObject, transport: Transport = HTTP) -> ProtocolError:
    with pytest.raises(ProtocolError) as raised:
        parse_create(body, transport)
    assert raised.value.status == 400
    return raised.value


# -- decoding ----------------------------------------------------------------------------------------------


def test_a_json_object_decodes() -> None:
    assert decode_json_object(b'{"model": "m", "input": "hi"}') == {"model": "m", "input": "hi"}
    assert decode_json_object('{"a": 1}') == {"a": 1}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [(b"{not json", "not valid JSON"), (b"", "not valid JSON"), (b"[1, 2]", "not an array"), (b"null", "not null")],
)
def test_anything_but_a_json_object_is_invalid_json(raw: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_json_object(raw)
    assert (raised.value.status, raised.value.code) == (400, "invalid_json")
    assert fragment in raised.value.message


def test_invalid_json_says_where() -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_json_object(b'{"model": }')
    assert "at position 10" in raised.value.message


# -- input ---------------------------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message() -> None:
    request = parse_create({"model": "m", "input": "Hello"}, HTTP)
    assert request.input == [{"type": "message", "role": "user", "content": "Hello"}]


def test_no_input_is_an_empty_list() -> None:
    assert parse_create({"model": "m"}, HTTP).input == []
    assert normalise_input(None) == []


def test_a_message_without_a_type_gets_one() -> None:
    request = parse_create({"model": "m", "input": [{"role": "developer", "content": "Be brief."}]}, HTTP)
    assert request.input == [{"type": "message", "role": "developer", "content": "Be brief."}]


def test_items_tether_does_not_read_pass_through_untouched() -> None:
    item = {"type": "web_search_call", "id": "ws_1", "status": "completed", "extra": [1, 2]}
    assert parse_create({"model": "m", "input": [item]}, HTTP).input == [item]


@pytest.mark.parametrize(
    ("input_value", "code", "param"),
    [
        (42, "invalid_type", "input"),
        ({"role": "user"}, "invalid_type", "input"),
        (["text"], "invalid_type", "input[0]"),
        ([{"content": "x"}], "missing_required_parameter", "input[0].type"),
        ([{"type": "message", "role": "robot", "content": "x"}], "invalid_value", "input[0].role"),
        ([{"type": "message", "role": "user", "content": 7}], "invalid_type", "input[0].content"),
        (
            [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, "b"]}],
            "invalid_type",
            "input[0].content[1]",
        ),
        ([{"type": "function_call_output", "output": "ok"}], "invalid_type", "input[0].call_id"),
        ([{"type": "function_call_output", "call_id": "c", "output": 3}], "invalid_type", "input[0].output"),
        ([{"type": "function_call", "call_id": "c", "arguments": "{}"}], "invalid_type", "input[0].name"),
        ([{"type": "item_reference"}], "invalid_type", "input[0].id"),
        (
            [{"type": "message", "role": "user", "content": "ok"}, {"type": "function_call_output", "call_id": 1}],
            "invalid_type",
            "input[1].call_id",
        ),
    ],
)
def test_a_malformed_item_names_the_field_at_fault(input_value: Any, code: str, param: str) -> None:
    error = refused({"model": "m", "input": input_value})
    assert (error.code, error.param) == (code, param)


# -- fields ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"model": None}, {"input": "hi"}])
def test_model_is_required(body: JSONObject) -> None:
    error = refused(body)
    assert (error.code, error.param) == ("missing_required_parameter", "model")


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("model", 3, "invalid_type"),
        ("store", "yes", "invalid_type"),
        ("temperature", "hot", "invalid_type"),
        ("max_output_tokens", 0, "invalid_value"),
        ("max_tool_calls", -1, "invalid_value"),
        ("truncation", "sometimes", "invalid_value"),
        ("metadata", {"k": 1}, "invalid_type"),
        ("previous_response_id", 12, "invalid_type"),
    ],
)
def test_a_bad_field_is_named(field: str, value: object, code: str) -> None:
    error = refused({"model": "m", field: value})
    assert (error.code, error.param) == (code, field)


def test_an_error_in_a_list_names_the_element() -> None:
    error = refused({"model": "m", "tools": [{"type": "function"}, "not a tool"]})
    assert error.param == "tools[1]"


def test_a_long_prompt_cache_key_is_refused() -> None:
    error = refused({"model": "m", "prompt_cache_key": "k" * 1025})
    assert (error.code, error.param) == ("string_above_max_length", "prompt_cache_key")
    assert parse_create({"model": "m", "prompt_cache_key": "k" * 1024}, HTTP).prompt_cache_key == "k" * 1024


@pytest.mark.parametrize("transport", [HTTP, WS])
def test_conversation_is_unsupported(transport: Transport) -> None:
    assert refused({"model": "m", "conversation": "conv_1"}, transport).param == "conversation"
    assert parse_create({"model": "m", "conversation": None, "background": False}, transport).background is False


def test_background_is_for_http_and_stored_responses_only() -> None:
    accepted = parse_create({"model": "m", "background": True}, HTTP)
    assert accepted.background is True
    assert accepted.forwarded_params()["background"] is True  # kept with the response, so its object says so
    assert "background" not in parse_create({"model": "m"}, HTTP).forwarded_params()
    zero_retention = refused({"model": "m", "background": True, "store": False}, HTTP)
    assert (zero_retention.status, zero_retention.error_type, zero_retention.param) == (
        400,
        "invalid_request_error",
        "background",
    )
    websocket = refused({"model": "m", "background": True}, WS)
    assert (websocket.code, websocket.param) == ("unsupported_parameter", "background")


# -- transports --------------------------------------------------------------------------------------------


def test_stream_id_is_for_websocket_only() -> None:
    error = refused({"model": "m", "stream_id": "lane-1"}, HTTP)
    assert (error.code, error.param) == ("unsupported_parameter", "stream_id")
    assert parse_create({"model": "m", "stream_id": "lane-1"}, WS).stream_id == "lane-1"


@pytest.mark.parametrize("stream_id", ["", "has space", "x" * 257, 5, "ümlaut"])
def test_a_bad_stream_id_is_refused(stream_id: object) -> None:
    error = refused({"model": "m", "stream_id": stream_id}, WS)
    assert (error.code, error.param) == ("invalid_stream_id", "stream_id")


@pytest.mark.parametrize("stream_id", [None, "a", "A-z_0.9", "x" * 256])
def test_a_good_stream_id_passes(stream_id: str | None) -> None:
    check_stream_id(stream_id)
    assert parse_create({"model": "m", "stream_id": stream_id}, WS).stream_id == stream_id


def test_websocket_ignores_stream_and_stream_options() -> None:
    request = parse_create({"model": "m", "stream": "anything", "stream_options": {"x": 1}}, WS)
    assert request.stream is False
    assert "stream_options" not in (request.model_extra or {})


def test_http_reads_stream() -> None:
    assert parse_create({"model": "m", "stream": True}, HTTP).stream is True
    assert refused({"model": "m", "stream": "yes"}, HTTP).param == "stream"


# -- what is kept and forwarded ------------------------------------------------------------------------------


def test_unknown_fields_are_kept_and_forwarded() -> None:
    request = parse_create({"model": "m", "input": "hi", "x_vendor": {"a": 1}, "temperature": 0.2}, HTTP)
    assert request.model_extra == {"x_vendor": {"a": 1}}
    params = request.forwarded_params()
    assert params["x_vendor"] == {"a": 1}
    assert params["temperature"] == 0.2
    assert params["model"] == "m"


def test_transport_fields_and_tether_extensions_are_not_forwarded() -> None:
    body = {
        "model": "m",
        "input": "hi",
        "stream": True,
        "generate": False,
        "stream_options": {"include_usage": True},
        "tether:idempotency_key": "key-1",
        "tether:inherit_params": True,
    }
    request = parse_create(body, HTTP)
    assert (request.idempotency_key, request.inherit_params, request.generate) == ("key-1", True, False)
    forwarded = request.forwarded_params()
    for name in ("input", "stream", "generate", "stream_options", "tether:idempotency_key", "tether:inherit_params"):
        assert name not in forwarded


def test_inheriting_takes_only_what_the_request_did_not_set() -> None:
    request = parse_create({"model": "m", "temperature": 0.1, "tether:inherit_params": True}, HTTP)
    parent = {"temperature": 0.9, "instructions": "Be brief.", "tools": [{"type": "function", "name": "f"}], "x": 1}
    inherited = request.inheriting(parent)
    assert inherited.temperature == 0.1
    assert inherited.instructions == "Be brief."
    assert inherited.tools == [{"type": "function", "name": "f"}]
    assert "x" not in (inherited.model_extra or {})
    assert request.inheriting({}) is request


def test_defaults() -> None:
    request = parse_create({"model": "m"}, HTTP)
    assert isinstance(request, CreateRequest)
    assert (request.store, request.stream, request.generate, request.tool_choice) == (True, False, True, "auto")


# -- never anything but a ProtocolError ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
FIELDS = [
    *("model", "input", "store", "stream", "stream_id", "tools", "tool_choice", "temperature", "metadata"),
    *("max_output_tokens", "truncation", "background", "conversation", "tether:idempotency_key", "include"),
]
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(body=bodies, transport=st.sampled_from(list(Transport)))
def test_any_json_body_parses_or_gets_a_400(body: JSONObject, transport: Transport) -> None:
    outcome: CreateRequest | ProtocolError
    try:
        outcome = parse_create(body, transport)
    except ProtocolError as error:
        outcome = error
    if isinstance(outcome, ProtocolError):
        assert (outcome.status, bool(outcome.code), bool(outcome.message)) == (400, True, True)
    else:
        assert isinstance(outcome.input, list)


@pytest.mark.parametrize("role", [[], {}, 1, None, True])
def test_a_message_role_of_any_json_type_is_a_400_not_a_crash(role: object) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_create({"model": "m", "input": [{"type": "message", "role": role, "content": "hi"}]}, Transport.HTTP)
    assert (raised.value.status, raised.value.param) == (400, "input[0].role")


@pytest.mark.parametrize("transport", list(Transport))
def test_an_empty_idempotency_key_is_a_400(transport: Transport) -> None:
    """An empty key was a key like any other: every request sending it was answered with the first one's response."""
    with pytest.raises(ProtocolError) as raised:
        parse_create({"model": "m", "input": "hi", "tether:idempotency_key": ""}, transport)
    assert (raised.value.status, raised.value.code, raised.value.param) == (
        400,
        "invalid_value",
        "tether:idempotency_key",
    )


@pytest.mark.parametrize("transport", list(Transport))
def test_an_idempotency_key_past_256_characters_is_a_400(transport: Transport) -> None:
    """A 100 KB key was taken, kept with its response and looked up on every retry."""
    parse_create({"model": "m", "input": "hi", "tether:idempotency_key": "k" * MAX_IDEMPOTENCY_KEY_CHARS}, transport)
    with pytest.raises(ProtocolError) as raised:
        parse_create({"model": "m", "input": "hi", "tether:idempotency_key": "k" * 100_000}, transport)
    assert (raised.value.status, raised.value.code, raised.value.param) == (
        400,
        "invalid_value",
        "tether:idempotency_key",
    )


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("temperature", -0.5, False),
        ("temperature", 2.5, False),
        ("temperature", 2, True),
        ("temperature", 0, True),
        ("top_p", 1.5, False),
        ("top_p", -1, False),
        ("top_p", 1, True),
        ("top_logprobs", -1, False),
        ("top_logprobs", 21, False),
        ("top_logprobs", 20, True),
    ],
)
def test_sampling_parameters_are_held_to_the_apis_ranges(field: str, value: float, accepted: bool) -> None:
    """They were passed on whatever they were (a negative temperature to the scripted model, a 500 or an upstream's
    own wording elsewhere); the Responses API takes temperature 0-2, top_p 0-1 and top_logprobs 0-20."""
    body: JSONObject = {"model": "m", "input": "hi", field: value}
    if accepted:
        assert getattr(parse_create(body, Transport.HTTP), field) == value
        return
    with pytest.raises(ProtocolError) as raised:
        parse_create(body, Transport.HTTP)
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, "invalid_value", field)


@pytest.mark.parametrize("kind", ["input_text", "output_text"])
def test_a_text_part_whose_text_is_not_a_string_is_a_400(kind: str) -> None:
    content = [{"type": "input_text", "text": "fine"}, {"type": kind, "text": 5}]
    with pytest.raises(ProtocolError) as raised:
        parse_create({"model": "m", "input": [{"role": "user", "content": content}]}, Transport.HTTP)
    assert (raised.value.code, raised.value.param) == ("invalid_type", "input[0].content[1].text")
