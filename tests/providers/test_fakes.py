"""The fake upstream servers: what they record, how they answer, what they refuse."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tether.protocol.sse import ServerSentEvent, SSEDecoder
from tether.providers.fakes import FakeAnthropic, FakeChatCompletions, FakeUpstream, PrefixCache
from tether.providers.fakes.base import as_script
from tether.providers.scripted import ScriptError, ScriptStep, ScriptToolCall
from tether.types import JSONObject

KEY = "fake-key"
SCRIPT: list[dict[str, Any]] = [
    {"reasoning": "Look first.", "tool_calls": [{"name": "ls", "arguments": {"path": "."}}, {"name": "now"}]},
    {"text": "Two things found."},
]


@pytest.fixture
def chat() -> Iterator[FakeChatCompletions]:
    with FakeChatCompletions(script=SCRIPT, api_key=KEY, chunk_size=4) as fake:
        yield fake


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script=SCRIPT, api_key=KEY, chunk_size=4) as fake:
        yield fake


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def post_chat(http: httpx.Client, fake: FakeChatCompletions, body: JSONObject, key: str = KEY) -> httpx.Response:
    return http.post(f"{fake.base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def post_anthropic(http: httpx.Client, fake: FakeAnthropic, body: JSONObject, key: str = KEY) -> httpx.Response:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return http.post(f"{fake.base_url}/v1/messages", json=body, headers=headers)


def events_of(response: httpx.Response) -> list[ServerSentEvent]:
    assert response.headers["content-type"].startswith("text/event-stream")
    return SSEDecoder().decode(response.content)


def chat_body(*messages: JSONObject, stream: bool = False, **extra: Any) -> JSONObject:
    return {"model": "m", "messages": list(messages), "stream": stream, **extra}


def anthropic_body(*messages: JSONObject, stream: bool = False, **extra: Any) -> JSONObject:
    return {"model": "m", "max_tokens": 100, "messages": list(messages), "stream": stream, **extra}


USER = {"role": "user", "content": "Hello."}


# -- recording and knobs ---------------------------------------------------------------------------------------


def test_requests_are_recorded_with_headers_and_body(http: httpx.Client, chat: FakeChatCompletions) -> None:
    assert chat.base_url.endswith("/v1")
    post_chat(http, chat, chat_body(USER), key="wrong")
    post_chat(http, chat, chat_body(USER))
    first, second = chat.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == "Bearer wrong"
    assert second.body == chat_body(USER)


@pytest.mark.parametrize("kind", ["chat", "anthropic"])
def test_a_wrong_key_is_refused_in_the_api_s_own_shape(
    http: httpx.Client, chat: FakeChatCompletions, anthropic: FakeAnthropic, kind: str
) -> None:
    if kind == "chat":
        response = post_chat(http, chat, chat_body(USER), key="nope")
        assert response.json()["error"]["message"] == "Invalid API key."
    else:
        response = post_anthropic(http, anthropic, anthropic_body(USER), key="nope")
        assert response.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "Invalid API key."},
        }
    assert response.status_code == 401


def test_fail_next_answers_errors_then_recovers(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    anthropic.fail_next(2, 529, "Overloaded", retry_after=1.5)
    statuses = [post_anthropic(http, anthropic, anthropic_body(USER)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [529, 529, 200]
    assert statuses[0].headers["retry-after"] == "1.5"
    assert statuses[0].json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert len(anthropic.requests) == 3


def test_fail_next_in_chat_shape(http: httpx.Client, chat: FakeChatCompletions) -> None:
    chat.fail_next(1, 429, "Slow down.")
    response = post_chat(http, chat, chat_body(USER))
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" not in response.headers


def test_cut_next_stops_the_stream_after_its_first_event(http: httpx.Client, chat: FakeChatCompletions) -> None:
    chat.cut_next()
    cut = events_of(post_chat(http, chat, chat_body(USER, stream=True)))
    whole = events_of(post_chat(http, chat, chat_body(USER, stream=True)))
    assert len(cut) == 1
    assert whole[-1].is_done


def test_without_a_key_anything_is_accepted(http: httpx.Client) -> None:
    with FakeChatCompletions() as fake:
        response = http.post(f"{fake.base_url}/chat/completions", json=chat_body(USER))
    assert response.json()["choices"][0]["message"]["content"] == "Hello."


# -- the script ------------------------------------------------------------------------------------------------


def test_chat_plays_the_step_for_the_conversation_s_position(http: httpx.Client, chat: FakeChatCompletions) -> None:
    first = post_chat(http, chat, chat_body(USER)).json()
    message = first["choices"][0]["message"]
    assert message["reasoning_content"] == "Look first."
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == ['{"path":"."}', "{}"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    tool_messages = [{"role": "tool", "tool_call_id": c["id"], "content": "x"} for c in message["tool_calls"]]
    second = post_chat(http, chat, chat_body(USER, {"role": "assistant", **message}, *tool_messages)).json()
    assert second["choices"][0]["message"]["content"] == "Two things found."
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    third = post_chat(
        http,
        chat,
        chat_body(USER, {"role": "assistant", **message}, *tool_messages, {"role": "assistant", "content": "."}),
    ).json()
    assert third["choices"][0]["message"]["content"] == "Done."
    restart = post_chat(http, chat, chat_body(USER, {"role": "assistant", "content": "x"}, USER)).json()
    assert restart["choices"][0]["message"]["tool_calls"]


def test_chat_streams_chunks_usage_and_done(http: httpx.Client, chat: FakeChatCompletions) -> None:
    events = events_of(post_chat(http, chat, chat_body(USER, stream=True, stream_options={"include_usage": True})))
    chunks = [event.json() for event in events[:-1]]
    assert events[-1].is_done
    calls = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [d["index"] for d in calls if "id" in d] == [0, 1]
    assert "".join(d["function"]["arguments"] for d in calls if d["index"] == 0) == '{"path":"."}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    without_usage = events_of(post_chat(http, chat, chat_body(USER, stream=True)))
    assert "usage" not in without_usage[-2].json()


def test_anthropic_tool_results_continue_the_assistant_s_turn(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    first = post_anthropic(http, anthropic, anthropic_body(USER)).json()
    assert [block["type"] for block in first["content"]] == ["thinking", "tool_use", "tool_use"]
    assert first["stop_reason"] == "tool_use"
    results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "x"} for b in first["content"][1:]]
    assistant = {"role": "assistant", "content": first["content"][1:]}
    second = post_anthropic(http, anthropic, anthropic_body(USER, assistant, {"role": "user", "content": results}))
    assert second.json()["content"] == [{"type": "text", "text": "Two things found."}]
    assert second.json()["stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    "after_results",
    [
        [],  # the reminder text sits beside the tool results
        [{"role": "user", "content": "<system-reminder>keep going</system-reminder>"}],  # in a message of its own
    ],
)
def test_anthropic_text_beside_tool_results_still_continues_the_turn(
    http: httpx.Client, anthropic: FakeAnthropic, after_results: list[JSONObject]
) -> None:
    first = post_anthropic(http, anthropic, anthropic_body(USER)).json()
    results: list[JSONObject] = [
        {"type": "tool_result", "tool_use_id": b["id"], "content": "x"} for b in first["content"][1:]
    ]
    if not after_results:
        results.append({"type": "text", "text": "<system-reminder>keep going</system-reminder>"})
    assistant = {"role": "assistant", "content": first["content"][1:]}
    body = anthropic_body(USER, assistant, {"role": "user", "content": results}, *after_results)

    second = post_anthropic(http, anthropic, body)

    assert second.json()["content"] == [{"type": "text", "text": "Two things found."}]


THINKING = {"type": "enabled", "budget_tokens": 1024}


def thinking_loop(http: httpx.Client, fake: FakeAnthropic) -> tuple[JSONObject, JSONObject]:
    """A first turn with thinking enabled, and the user turn of tool results that continues it."""
    first = post_anthropic(http, fake, anthropic_body(USER, max_tokens=2048, thinking=THINKING)).json()
    results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "x"} for b in first["content"][1:]]
    return first, {"role": "user", "content": results}


def test_anthropic_thinking_is_signed_and_goes_back_verbatim(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    first, results = thinking_loop(http, anthropic)
    thinking = first["content"][0]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] == "Look first."
    assert isinstance(thinking["signature"], str)
    assert len(thinking["signature"]) > 20
    assistant = {"role": "assistant", "content": first["content"]}
    body = anthropic_body(USER, assistant, results, max_tokens=2048, thinking=THINKING)

    assert post_anthropic(http, anthropic, body).json()["content"][-1] == {"type": "text", "text": "Two things found."}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda content: content[1:], "must start with a thinking block"),
        (lambda content: [{**content[0], "signature": content[0]["signature"][:-4]}, *content[1:]], "signature"),
        (lambda content: [{**content[0], "thinking": "Edited."}, *content[1:]], "signature"),
        (lambda content: [{k: v for k, v in content[0].items() if k != "signature"}, *content[1:]], "signature"),
    ],
    ids=["thinking dropped", "signature cut", "thinking edited", "signature dropped"],
)
def test_anthropic_refuses_a_tool_loop_that_lost_its_thinking(
    http: httpx.Client, anthropic: FakeAnthropic, change: Any, error: str
) -> None:
    first, results = thinking_loop(http, anthropic)
    assistant = {"role": "assistant", "content": change(first["content"])}
    answer = post_anthropic(
        http, anthropic, anthropic_body(USER, assistant, results, max_tokens=2048, thinking=THINKING)
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert error in answer.json()["error"]["message"]


def test_anthropic_redacted_thinking_must_come_back_as_issued(http: httpx.Client) -> None:
    with FakeAnthropic(script=SCRIPT, api_key=KEY, redact_thinking=True) as fake:
        first, results = thinking_loop(http, fake)
        redacted = first["content"][0]
        assert set(redacted) == {"type", "data"}
        assert redacted["type"] == "redacted_thinking"
        intact = {"role": "assistant", "content": first["content"]}
        forged = {"role": "assistant", "content": [{**redacted, "data": "AAAA"}, *first["content"][1:]]}
        kept = post_anthropic(http, fake, anthropic_body(USER, intact, results, max_tokens=2048, thinking=THINKING))
        refused = post_anthropic(http, fake, anthropic_body(USER, forged, results, max_tokens=2048, thinking=THINKING))

    assert kept.status_code == 200
    assert refused.status_code == 400
    assert "redacted_thinking" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("thinking", "max_tokens"),
    [({"type": "enabled", "budget_tokens": 1000}, 4000), ({"type": "enabled", "budget_tokens": 2000}, 2000)],
)
def test_anthropic_refuses_a_thinking_budget_out_of_range(
    http: httpx.Client, anthropic: FakeAnthropic, thinking: JSONObject, max_tokens: int
) -> None:
    answer = post_anthropic(http, anthropic, anthropic_body(USER, max_tokens=max_tokens, thinking=thinking))
    assert answer.status_code == 400
    assert "budget_tokens" in answer.json()["error"]["message"]


def test_anthropic_streams_the_messages_event_sequence(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    events = events_of(post_anthropic(http, anthropic, anthropic_body(USER, stream=True)))
    names = [event.event for event in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert all(event.json()["type"] == event.event for event in events)
    starts = [e.json()["content_block"]["type"] for e in events if e.event == "content_block_start"]
    assert starts == ["thinking", "tool_use", "tool_use"]
    partials = [
        e.json()["delta"]["partial_json"] for e in events if e.event == "content_block_delta" and e.json()["index"] == 1
    ]
    assert partials[0] == ""
    assert "".join(partials) == '{"path":"."}'


def test_anthropic_reports_cache_reads_at_breakpoints(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    long_text = {"type": "text", "text": "context " * 200, "cache_control": {"type": "ephemeral"}}
    body = anthropic_body({"role": "user", "content": [long_text]})
    first = post_anthropic(http, anthropic, body).json()["usage"]
    second = post_anthropic(http, anthropic, body).json()["usage"]
    assert first["cache_read_input_tokens"] == 0
    assert first["cache_creation_input_tokens"] > 0
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    unmarked = anthropic_body({"role": "user", "content": [{"type": "text", "text": "context " * 200}]})
    assert post_anthropic(http, anthropic, unmarked).json()["usage"]["cache_read_input_tokens"] == 0


# -- what the fakes refuse -------------------------------------------------------------------------------------

CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"messages": [USER]}, "required"),
        (chat_body(), "required"),
        (chat_body({"role": "robot", "content": "x"}), "invalid role"),
        (chat_body(USER, {"role": "tool", "tool_call_id": "c9", "content": "x"}), "preceding assistant"),
        (chat_body(USER, {"role": "assistant", "tool_calls": [CALL]}, USER), "no 'tool' message"),
    ],
)
def test_chat_refuses_malformed_conversations(
    http: httpx.Client, chat: FakeChatCompletions, body: JSONObject, reason: str
) -> None:
    response = post_chat(http, chat, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]["message"]


TOOL_USE = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}


def cached(ttl: str) -> JSONObject:
    return {
        "role": "user",
        "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": ttl}}],
    }


TOOL_RESULT = {"type": "tool_result", "tool_use_id": "t1", "content": "x"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"model": "m", "messages": [USER]}, "max_tokens"),
        (anthropic_body(), "at least one message"),
        (anthropic_body({"role": "assistant", "content": "x"}), 'first message must use the "user" role'),
        (anthropic_body({"role": "system", "content": "env"}), 'first message must use the "user" role'),
        (anthropic_body({"role": "tool", "content": "x"}), "role"),
        ({"model": "m", "max_tokens": 1, "messages": ["not a message"]}, "valid dictionary"),
        (anthropic_body({"role": "user", "content": [{"type": "text", "text": " \n"}]}), "non-whitespace"),
        (anthropic_body({"role": "user", "content": ""}), "non-empty content"),
        (anthropic_body(USER, {"role": "assistant", "content": ""}, USER), "non-empty content"),
        (anthropic_body(USER, {"role": "assistant", "content": [TOOL_USE]}, USER), "no tool_result"),
        (
            anthropic_body(
                USER,
                {"role": "assistant", "content": [TOOL_USE]},
                {"role": "user", "content": [{"type": "text", "text": "x"}, TOOL_RESULT]},
            ),
            "must come before",
        ),
        (
            anthropic_body(USER, {"role": "assistant", "content": "x"}, {"role": "user", "content": [TOOL_RESULT]}),
            "tool_use_id",
        ),
        (anthropic_body({"role": "user", "content": [{"type": "text", "text": ""}]}), "non-empty"),
        (anthropic_body({"role": "user", "content": []}), "non-empty"),
        (
            anthropic_body(
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}] * 5,
                }
            ),
            "maximum of 4",
        ),
        (anthropic_body(cached("5m"), cached("1h")), "must not come after"),
        (anthropic_body(cached("10m")), "ttl"),
        (anthropic_body({"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}), "type"),
        (anthropic_body(USER, cache_control={"type": "persistent"}), "ephemeral"),
        (anthropic_body(USER, temperature=1.5), "temperature"),
        (anthropic_body(USER, top_p=-0.1), "top_p"),
        (anthropic_body(USER, tool_choice={"type": "required"}), "tool_choice.type"),
        (anthropic_body(USER, tool_choice={"type": "tool"}), "name"),
        (
            anthropic_body(
                USER,
                max_tokens=4000,
                thinking={"type": "enabled", "budget_tokens": 2000},
                tool_choice={"type": "any"},
            ),
            "forces tool use",
        ),
    ],
)
def test_anthropic_refuses_what_the_real_api_refuses(
    http: httpx.Client, anthropic: FakeAnthropic, body: JSONObject, reason: str
) -> None:
    response = post_anthropic(http, anthropic, body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert reason in response.json()["error"]["message"]


def test_a_body_that_is_not_a_json_object_is_refused(http: httpx.Client, chat: FakeChatCompletions) -> None:
    response = http.post(
        f"{chat.base_url}/chat/completions", content=b"[1]", headers={"authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 400
    assert chat.requests[0].body == {}


# -- building blocks -------------------------------------------------------------------------------------------


def test_prefix_cache_automatic_and_at_breakpoints() -> None:
    cache = PrefixCache()
    blocks: list[object] = [{"a": 1}, {"b": 2}, {"c": 3}]
    read, written, uncached = cache.lookup(blocks)
    assert read == 0
    assert written + uncached > 0
    again, new, rest = cache.lookup([*blocks, {"d": 4}])
    assert again == read + written + uncached
    assert (new > 0, rest) == (True, 0)  # automatic caching writes all it did not read

    marked = PrefixCache()
    assert marked.lookup(blocks, write_at=[])[:2] == (0, 0)
    first = marked.lookup(blocks, write_at=[2])
    assert first[0] == 0
    assert first[1] > 0
    assert marked.lookup(blocks, write_at=[3])[0] == first[1]
    assert marked.lookup(blocks, write_at=[1])[0] == 0, "nothing is read past the last breakpoint"


def test_scripts_are_steps_or_the_dicts_of_a_scripts_file() -> None:
    steps = (ScriptStep(text="Hi."), ScriptStep(tool_calls=(ScriptToolCall("f", '{"a":1}'),)))
    assert as_script(steps) == steps
    dicts: list[dict[str, Any]] = [{"text": "Hi."}, {"tool_calls": [{"name": "f", "arguments": {"a": 1}}]}]
    assert as_script(dicts) == steps
    with pytest.raises(ScriptError):
        as_script([{"txt": "typo"}])


def test_fakes_are_upstreams_and_listed_in_all() -> None:
    module = importlib.import_module("tether.providers.fakes")
    for name in module.__all__:
        assert hasattr(module, name)
    assert issubclass(FakeChatCompletions, FakeUpstream)
    assert issubclass(FakeAnthropic, FakeUpstream)


# -- what the real Messages API accepts (Claude Code sends all of it) -------------------------------------------


CLAUDE_CODE_SHAPED: JSONObject = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "system", "content": "<env>cwd=/repo</env>"},
        {"role": "user", "content": "Fix the test."},
        {"role": "user", "content": [{"type": "text", "text": "<reminder/>", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [TOOL_USE]},
        {"role": "user", "content": [TOOL_RESULT]},
        {"role": "user", "content": [{"type": "text", "text": "and then?"}]},
    ],
    # the top-level fields Claude Code 2.1.328 sends (seen in tests/edge/test_real_agents.py's recordings), but
    # its thinking ({"type": "adaptive"}): with thinking on, this hand-made tool_use would need its signed block
    "metadata": {"user_id": '{"device_id":"9f3a","account_uuid":"","session_id":"40864deb-e49d"}'},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "medium"},
    "tools": [
        {"name": "Bash", "description": "Run a command.", "input_schema": {"type": "object"}},
        {
            "name": "DeferredToolPlaceholder",
            "description": "x",
            "input_schema": {"type": "object"},
            "defer_loading": True,
        },
    ],
    "stream": True,
    "future_field": {"kept": True},
}


def test_anthropic_accepts_consecutive_users_and_system_messages_and_records_the_exact_body(
    http: httpx.Client, anthropic: FakeAnthropic
) -> None:
    raw = orjson.dumps(CLAUDE_CODE_SHAPED)
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}

    response = http.post(f"{anthropic.base_url}/v1/messages", content=raw, headers=headers)

    assert response.status_code == 200, response.text
    (recorded,) = anthropic.requests
    assert recorded.raw == raw
    assert orjson.loads(recorded.raw) == recorded.body == CLAUDE_CODE_SHAPED


@pytest.mark.parametrize(
    "messages",
    [
        [USER, {"role": "assistant", "content": ""}],  # an empty final assistant message (prefill)
        [USER, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
        [{"role": "system", "content": [{"type": "text", "text": "env"}]}, USER, {"role": "system", "content": "x"}],
        # a tool_result in the second of two user messages still answers the assistant's turn
        [USER, {"role": "assistant", "content": [TOOL_USE]}, {"role": "user", "content": [TOOL_RESULT]}, USER],
        [
            cached("1h"),
            cached("5m"),
            {"role": "user", "content": [{"type": "text", "text": "y", "cache_control": None}]},
        ],
    ],
)
def test_anthropic_accepts_what_the_real_api_accepts(
    http: httpx.Client, anthropic: FakeAnthropic, messages: list[JSONObject]
) -> None:
    response = post_anthropic(http, anthropic, anthropic_body(*messages))

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 0, "top_p": 1},
        {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}, "tool_choice": {"type": "auto"}},
        {"thinking": {"type": "disabled"}, "tool_choice": {"type": "tool", "name": "f"}},
        {"thinking": {"type": "adaptive"}, "tool_choice": {"type": "none"}},
        {"cache_control": {"type": "ephemeral", "ttl": "1h"}},  # automatic caching
    ],
)
def test_anthropic_accepts_the_parameters_the_real_api_accepts(
    http: httpx.Client, anthropic: FakeAnthropic, extra: JSONObject
) -> None:
    response = post_anthropic(http, anthropic, anthropic_body(USER, **extra))

    assert response.status_code == 200, response.text


def test_anthropic_automatic_caching_marks_the_last_block(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    body = anthropic_body({"role": "user", "content": "context " * 200}, cache_control={"type": "ephemeral"})

    first = post_anthropic(http, anthropic, body).json()["usage"]
    second = post_anthropic(http, anthropic, body).json()["usage"]

    assert first["cache_creation_input_tokens"] > 0
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]


def test_anthropic_accepts_a_bearer_token(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    headers = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}

    response = http.post(f"{anthropic.base_url}/v1/messages", json=anthropic_body(USER), headers=headers)

    assert response.status_code == 200


def test_anthropic_counts_tokens_without_max_tokens(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    body = {"model": "m", "messages": [USER]}

    counted = http.post(f"{anthropic.base_url}/v1/messages/count_tokens", json=body, headers=headers)
    refused = http.post(f"{anthropic.base_url}/v1/messages/count_tokens", json={"model": "m"}, headers=headers)

    assert counted.status_code == 200
    assert counted.json()["input_tokens"] > 0
    assert refused.status_code == 400
    assert [r.path for r in anthropic.requests] == ["/v1/messages/count_tokens"] * 2


def test_both_fakes_list_models(http: httpx.Client, anthropic: FakeAnthropic, chat: FakeChatCompletions) -> None:
    anthropic_models = http.get(
        f"{anthropic.base_url}/v1/models?limit=5", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    )
    chat_models = http.get(f"{chat.base_url}/models", headers={"authorization": f"Bearer {KEY}"})

    assert [m["id"] for m in anthropic_models.json()["data"]] == list(FakeAnthropic.models)
    assert chat_models.json()["data"][0]["id"] == FakeChatCompletions.models[0]
    assert anthropic.requests[0].query == "limit=5"
    assert chat.requests[0].method == "GET"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": ["user"], "content": "x"}],
        [USER, {"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}],
        [
            USER,
            {"role": "assistant", "content": [TOOL_USE]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": ["t1"]}]},
        ],
    ],
)
def test_odd_anthropic_bodies_are_400s_not_500s(
    http: httpx.Client, anthropic: FakeAnthropic, messages: list[JSONObject]
) -> None:
    assert post_anthropic(http, anthropic, anthropic_body(*messages)).status_code == 400


@pytest.mark.parametrize(
    ("messages", "status"),
    [
        ([{"role": ["user"], "content": "x"}], 400),
        ([USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": ["c1"]}], 400),
        ([USER, {"role": "assistant", "content": "x"}, {"role": "function", "name": "f", "content": "{}"}], 200),
    ],
)
def test_odd_chat_bodies_are_answered_as_the_real_api_would(
    http: httpx.Client, chat: FakeChatCompletions, messages: list[JSONObject], status: int
) -> None:
    assert post_chat(http, chat, chat_body(*messages)).status_code == status


def test_chat_text_after_tool_results_continues_the_round(http: httpx.Client, chat: FakeChatCompletions) -> None:
    first = post_chat(http, chat, chat_body(USER)).json()["choices"][0]["message"]
    results = [{"role": "tool", "tool_call_id": call["id"], "content": "x"} for call in first["tool_calls"]]
    reminder = {"role": "user", "content": "<system-reminder>keep going</system-reminder>"}
    assistant = {"role": "assistant", "content": None, "tool_calls": first["tool_calls"]}

    second = post_chat(http, chat, chat_body(USER, assistant, *results, reminder)).json()

    assert second["choices"][0]["message"]["content"] == "Two things found."


def test_every_answer_has_its_own_message_id(
    http: httpx.Client, anthropic: FakeAnthropic, chat: FakeChatCompletions
) -> None:
    # Claude Code merges the blocks of one message id into one assistant message: a fake that reused its id made
    # every tool round after the first look like the same round, and the loop never ended.
    anthropic_ids = [post_anthropic(http, anthropic, anthropic_body(USER)).json()["id"] for _ in range(2)]
    streamed = events_of(post_anthropic(http, anthropic, anthropic_body(USER, stream=True)))
    anthropic_ids.append(streamed[0].json()["message"]["id"])
    chat_ids = [post_chat(http, chat, chat_body(USER)).json()["id"] for _ in range(2)]
    chunks = [event.json() for event in events_of(post_chat(http, chat, chat_body(USER, stream=True)))[:-1]]
    assert len({chunk["id"] for chunk in chunks}) == 1  # one completion's chunks share its id
    chat_ids.append(chunks[0]["id"])

    assert len(set(anthropic_ids)) == 3
    assert all(value.startswith("msg_") for value in anthropic_ids)
    assert len(set(chat_ids)) == 3
    assert all(value.startswith("chatcmpl-") for value in chat_ids)


def test_scripts_by_model_play_each_task_s_own_steps(http: httpx.Client, anthropic: FakeAnthropic) -> None:
    anthropic.scripts = {"claude-b": as_script([{"text": "Task B."}])}
    user = {"role": "user", "content": "go"}
    body = {"max_tokens": 100, "messages": [user]}
    own = post_anthropic(http, anthropic, {**body, "model": "claude-b"}).json()
    other = post_anthropic(http, anthropic, {**body, "model": "claude-a"}).json()
    assert own["content"] == [{"type": "text", "text": "Task B."}]
    assert [block["type"] for block in other["content"]] == ["thinking", "tool_use", "tool_use"]  # the default script


def test_the_pace_spreads_the_answer_s_tokens_over_its_frames() -> None:
    from tether.providers.fakes.base import FakeCall, FakeTurn, frame_pause_s

    turn = FakeTurn(text="x" * 400, calls=(FakeCall("c", "ls", '{"path": "."}'),))
    assert frame_pause_s(turn, 20, 0.0) == 0.0
    assert frame_pause_s(turn, 20, 50.0) * 20 == pytest.approx(turn.output_tokens / 50.0)
