"""Whatever an agent sends, the translators answer with the protocol's error or a valid Responses body: never an
exception of another kind (which would be a 500)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.agent_apis import count_message_tokens, translate_chat_request, translate_messages_request
from tether.protocol.errors import ProtocolError
from tether.protocol.request import Transport, parse_create

_WORDS = [
    "user", "assistant", "system", "tool", "developer", "text", "image", "tool_use", "tool_result", "thinking",
    "base64", "url", "function", "image_url", "document", "redacted_thinking", "auto", "any", "none", "required",
]  # fmt: skip
_KEYS = [
    "type", "role", "content", "text", "id", "name", "input", "tool_use_id", "source", "media_type", "data", "url",
    "image_url", "tool_calls", "tool_call_id", "function", "arguments", "thinking", "signature", "file",
    "file_data", "detail", "cache_control", "is_error", "input_schema", "parameters", "disable_parallel_tool_use",
]  # fmt: skip
_words = st.sampled_from(_WORDS)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    _words,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    max_leaves=12,
)
_maybe = st.none() | _values
_OPTIONAL = {"tools": _maybe, "tool_choice": _maybe, "stream": _maybe, "system": _maybe, "stop": _maybe}


def _bodies(required: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    kinds = st.sampled_from(["text", "image", "image_url", "document", "tool_use", "tool_result", "thinking"])
    field = st.text(max_size=3) | _values
    block = st.fixed_dictionaries({"type": kinds}, optional={key: field for key in _KEYS if key != "type"})
    roles = st.sampled_from(["user", "assistant", "system", "developer", "tool"])
    content = st.text(min_size=1, max_size=3) | st.lists(block, max_size=3) | _values
    message = st.fixed_dictionaries({"role": roles}, optional={"content": content, "tool_call_id": field})
    messages = st.lists(message | _values, max_size=4)
    return st.fixed_dictionaries({**required, "messages": messages}, optional=_OPTIONAL)


def _outcome(translate: Callable[[dict[str, Any]], Any], body: dict[str, Any]) -> Any:
    try:
        return translate(body)
    except ProtocolError as error:
        return error


@pytest.mark.parametrize(
    "translate",
    [lambda body: translate_messages_request(body).responses, lambda body: translate_chat_request(body).responses],
    ids=["messages", "chat"],
)
@settings(max_examples=200)
@given(body=_bodies({"model": st.just("m"), "max_tokens": st.just(10)}))
def test_any_body_is_translated_or_refused_with_a_protocol_error(
    translate: Callable[[dict[str, Any]], Any], body: dict[str, Any]
) -> None:
    outcome = _outcome(translate, body)

    if isinstance(outcome, ProtocolError):
        assert (outcome.status, bool(outcome.message)) == (400, True)
    else:
        parse_create(outcome, Transport.HTTP)  # a translation is a valid Responses request


@settings(max_examples=200)
@given(body=_bodies({"model": st.just("m")}))
def test_count_tokens_answers_or_refuses(body: dict[str, Any]) -> None:
    outcome = _outcome(count_message_tokens, body)

    assert outcome.status == 400 if isinstance(outcome, ProtocolError) else outcome["input_tokens"] >= 0
