"""Anthropic Messages and Chat Completions through ``tether edge`` → ``tether serve`` on embedded defaults: the
scripted model answers via translation, in the agent's own API and stream format, and every continuation crosses
the link as its new content only."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from openai import OpenAI

from tether.edge.run import RunningEdge
from tether.protocol.agent_apis import ChatStreamChecker, MessagesStreamChecker

SYSTEM = [{"type": "text", "text": "You are Claude Code. " * 350}]
ANTHROPIC_TOOLS = [
    {"name": f"Tool{n}", "description": "does things " * 250,
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
    for n in range(12)
]  # fmt: skip
CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": f"tool_{n}", "description": "does things " * 250,
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}
    for n in range(12)
]  # fmt: skip


EPHEMERAL = {"type": "ephemeral"}


def switch_form(message: dict[str, Any]) -> dict[str, Any]:
    """Claude Code's environment message goes from a string to a one-block list and back between turns."""
    content = message["content"]
    if isinstance(content, str):
        return {"role": "user", "content": [{"type": "text", "text": content}]}
    return {"role": "user", "content": content[0]["text"]}


def status(edge: RunningEdge) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(edge.base_url + "/tether/edge/status").json()
    return result


def messages_request(messages: list[Any]) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 4096, "system": SYSTEM, "tools": ANTHROPIC_TOOLS,
            "messages": messages, "metadata": {"user_id": "u"}, "stream": True}  # fmt: skip


def read_messages_stream(edge: RunningEdge, body: dict[str, Any]) -> list[dict[str, Any]]:
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "agent-key"}
    reply = httpx.post(edge.base_url + "/v1/messages", json=body, headers=headers, timeout=30)
    assert reply.status_code == 200
    checker = MessagesStreamChecker()
    checker.feed(reply.content)
    checker.close()
    return checker.events


def test_a_claude_code_style_tool_loop_on_the_scripted_model(edge: RunningEdge) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "<system-reminder>environment " * 40 + "</system-reminder>"},
        {"role": "user", "content": [{"type": "text", "text": "list the files", "cache_control": EPHEMERAL}]},
    ]
    for turn in range(3):
        before = status(edge)
        events = read_messages_stream(edge, messages_request(messages))
        after = status(edge)
        assert events[0]["type"] == "message_start"
        assert events[-1]["type"] == "message_stop"
        uploaded = after["uplink_bytes"] - before["uplink_bytes"]
        if turn > 0:
            assert uploaded < 1500, uploaded
        for message in messages:
            if isinstance(message["content"], list):
                for block in message["content"]:
                    block.pop("cache_control", None)
        text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
        messages.append({"role": "assistant", "content": [{"type": "text", "text": text or "ok"}]})
        messages.append({"role": "user", "content": [
            {"type": "text", "text": f"next step {turn}", "cache_control": {"type": "ephemeral"}}]})  # fmt: skip
        messages[0] = (
            {"role": "user", "content": [{"type": "text", "text": messages[0]["content"]}]}
            if isinstance(messages[0]["content"], str)
            else {"role": "user", "content": messages[0]["content"][0]["text"]}
        )
    assert after["heals"] == 0


def test_count_tokens_and_a_non_streamed_message(edge: RunningEdge) -> None:
    body = messages_request([{"role": "user", "content": "hello"}])
    counted = httpx.post(edge.base_url + "/v1/messages/count_tokens", json={**body, "stream": None}, timeout=30)
    assert counted.status_code == 200
    assert counted.json()["input_tokens"] > 0
    whole = httpx.post(edge.base_url + "/v1/messages", json={**body, "stream": False}, timeout=30)
    assert whole.status_code == 200
    assert whole.json()["type"] == "message"


def test_a_bad_messages_request_gets_the_anthropic_error(edge: RunningEdge) -> None:
    body = messages_request([{"role": "user", "content": "hello"}])
    del body["max_tokens"]
    refused = httpx.post(edge.base_url + "/v1/messages", json=body, timeout=30)
    assert refused.status_code == 400
    assert refused.json()["type"] == "error"


@pytest.fixture
def sdk(edge: RunningEdge) -> Iterator[OpenAI]:
    with OpenAI(api_key="agent-key", base_url=edge.base_url + "/v1", max_retries=0,
                _strict_response_validation=True) as client:  # fmt: skip
        yield client


def test_the_openai_chat_client_runs_a_loop_through_the_edge(sdk: OpenAI, edge: RunningEdge) -> None:
    messages: list[Any] = [{"role": "system", "content": "You are a coding agent. " * 300},
                           {"role": "user", "content": "read main.py"}]  # fmt: skip
    for turn in range(3):
        before = status(edge)
        completion = sdk.chat.completions.create(model="gpt-4.1", messages=messages, tools=CHAT_TOOLS)
        after = status(edge)
        if turn > 0:
            assert after["uplink_bytes"] - before["uplink_bytes"] < 1500
        message = completion.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls or []:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "file contents " * 20})
        if not message.tool_calls:
            messages.append({"role": "user", "content": f"continue {turn}"})


def test_a_streamed_chat_completion_is_a_valid_chunk_stream(edge: RunningEdge) -> None:
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    reply = httpx.post(edge.base_url + "/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 200
    checker = ChatStreamChecker(include_usage=True)
    checker.feed(reply.content)
    completion = checker.close()
    assert checker.chunks[-1]["usage"] is not None
    assert completion["message"]["role"] == "assistant"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", messages_request([{"role": "user", "content": "hello"}])),
        ("/v1/messages/count_tokens", messages_request([{"role": "user", "content": "hello"}])),
        ("/v1/chat/completions", {"model": "scripted", "messages": [{"role": "user", "content": "hello"}]}),
    ],
)
def test_a_compressed_body_gets_a_415_in_the_agents_api(edge: RunningEdge, path: str, body: dict[str, Any]) -> None:
    """A gzip body was parsed as JSON as it came and refused as 'not valid JSON' (Anthropic's with type api_error);
    the edge reads bodies as sent, as the gateway does, and says so in the agent's own API, naming the coding."""
    turns = status(edge)["turns"]
    with httpx.Client(base_url=edge.base_url, timeout=30) as client:
        refused = client.post(
            path, content=gzip.compress(orjson.dumps(body)), headers={"content-encoding": "gzip, identity"}
        )
        assert refused.status_code == 415, refused.text
        error = refused.json()
        if path.startswith("/v1/messages"):
            assert error["type"] == "error"
            assert error["error"]["type"] == "invalid_request_error"
            message = error["error"]["message"]
        else:
            assert error["error"]["code"] == "unsupported_media_type"
            assert error["error"]["type"] == "invalid_request_error"
            message = error["error"]["message"]
        assert "Content-Encoding 'gzip'" in message
        assert status(edge)["turns"] == turns  # never relayed
        plain = client.post(path, json={**body, "stream": False}, headers={"content-encoding": "identity"})
        assert plain.status_code == 200, plain.text  # the same connection, and an identity coding is no coding


def with_nested(body: dict[str, Any], depth: int) -> bytes:
    """``body`` with a field of arrays ``depth`` levels deep (as text: orjson writes at most 254 levels)."""
    return orjson.dumps(body)[:-1] + b', "x_extra": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("api", ["anthropic-messages", "chat-completions"])
def test_the_gateways_json_limits_reach_the_agent_in_its_api(edge: RunningEdge, api: str) -> None:
    """The edge link applied neither the gateway's value limit nor its depth limit: a request over either ran, one
    nested past orjson's writer failed with a 500 and a traceback on the edge. Each now gets the gateway's 400, in
    the agent's own API, and the link goes on."""
    path, hello = ("/v1/messages", messages_request([{"role": "user", "content": "hello"}]))
    if api == "chat-completions":
        path, hello = "/v1/chat/completions", {"model": "scripted", "messages": [{"role": "user", "content": "hello"}]}
    many = [{"role": "user", "content": "a"}] * 33_400  # 100,200 JSON values: over the default 100,000
    drops = status(edge)["drops"]
    with httpx.Client(base_url=edge.base_url, timeout=60) as client:
        for body, code in (
            (orjson.dumps({**hello, "messages": many, "stream": False}), "too_many_json_values"),
            (with_nested(hello, 200), "json_too_deep"),
            (with_nested(hello, 300), "json_too_deep"),
        ):
            refused = client.post(path, content=body, headers={"content-type": "application/json"})
            assert refused.status_code == 400, refused.text
            error = refused.json()
            if api == "anthropic-messages":
                assert error["type"] == "error"
                assert error["error"]["type"] == "invalid_request_error"
            else:
                assert error["error"]["code"] == code, error
        assert client.post(path, json={**hello, "stream": False}).status_code == 200
    assert status(edge)["drops"] == drops
