"""Same-API upstreams through ``tether edge`` → ``tether serve``: the fake upstream records exactly the request the
agent sent to the edge (compared as JSON values), the agent's own key goes upstream, and every continuation crosses
the link as its new content only: no tool schema, no system prompt, no earlier message body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from openai import DefaultHttpxClient, OpenAI

from tether.edge.run import RunningEdge, edge_in_thread
from tether.netutil import free_port
from tether.protocol.agent_apis import MessagesStreamChecker
from tether.providers.fakes import FakeAnthropic, FakeChatCompletions
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings

from .conftest import edge_config

AGENT_KEY = "sk-ant-agent-own-key-0123456789"
TOOL_TEXT = "Executes a shell command in the workspace. "
SYSTEM_TEXT = "You are Claude Code, Anthropic's official CLI. "
STEPS: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "Bash", "arguments": {"command": "ls"}}]},
    {"text": "Reading it.", "tool_calls": [{"name": "Read", "arguments": {"path": "main.py"}}]},
    {"tool_calls": [{"name": "Bash", "arguments": {"command": "pytest"}}]},
    {"text": "All done."},
]
ANTHROPIC_TOOLS = [
    {"name": name, "description": TOOL_TEXT * 60,
     "input_schema": {"type": "object", "properties": {"command": {"type": "string"}, "path": {"type": "string"}}}}
    for name in ("Bash", "Read", "Edit", "Grep")
]  # fmt: skip
CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": name, "description": TOOL_TEXT * 60,
     "parameters": {"type": "object", "properties": {"command": {"type": "string"}, "path": {"type": "string"}}}}}
    for name in ("Bash", "Read", "Edit", "Grep")
]  # fmt: skip


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script=STEPS, api_key=AGENT_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def chat_fake() -> Iterator[FakeChatCompletions]:
    with FakeChatCompletions(script=STEPS, api_key=AGENT_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    anthropic_fake: FakeAnthropic, chat_fake: FakeChatCompletions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    directory: Path = tmp_path_factory.mktemp("same-api")
    settings = Settings.model_validate({
        "store_url": f"sqlite:///{directory / 'tether.db'}", "log_level": "warning",
        "providers": {  # no key configured: the agent's own credentials go upstream
            "claude": {"kind": "anthropic", "base_url": anthropic_fake.base_url},
            "openai": {"kind": "chat-completions", "base_url": chat_fake.base_url},
        },
        "routes": [{"model": "claude-*", "provider": "claude"}, {"model": "gpt-*", "provider": "openai"}],
    })  # fmt: skip
    with serve_in_thread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def edge(gateway: RunningServer) -> Iterator[RunningEdge]:
    with edge_in_thread(edge_config(gateway.base_url), port=free_port()) as running:
        yield running


def uplink(edge: RunningEdge) -> int:
    value: int = httpx.get(edge.base_url + "/tether/edge/status").json()["uplink_bytes"]
    return value


def claude_code_request(messages: list[Any]) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
        "system": [{"type": "text", "text": SYSTEM_TEXT * 150, "cache_control": {"type": "ephemeral"}}],
        "tools": ANTHROPIC_TOOLS, "messages": messages, "metadata": {"user_id": "user_abc_account_1_session_2"},
        "a_field_tether_does_not_know": {"kept": True},
    }  # fmt: skip


def with_breakpoint_on_last(messages: list[Any]) -> list[Any]:
    """Claude Code moves its cache_control breakpoint to the newest message every turn."""
    moved = []
    for position, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, list):
            content = [{k: v for k, v in block.items() if k != "cache_control"} for block in content]
            if position == len(messages) - 1:
                content[-1] = {**content[-1], "cache_control": {"type": "ephemeral"}}
        moved.append({**message, "content": content})
    return moved


def switch_form(message: dict[str, Any]) -> dict[str, Any]:
    """Claude Code switches its environment message between a string and a one-block list."""
    content = message["content"]
    if isinstance(content, str):
        return {**message, "content": [{"type": "text", "text": content}]}
    return {**message, "content": content[0]["text"]}


def test_a_claude_code_tool_loop_reaches_the_upstream_untouched(
    edge: RunningEdge, anthropic_fake: FakeAnthropic
) -> None:
    headers = {"x-api-key": AGENT_KEY, "anthropic-version": "2023-06-01",
               "anthropic-beta": "interleaved-thinking-2025-05-14", "x-claude-code-session-id": "s-1"}  # fmt: skip
    messages: list[Any] = [
        {"role": "system", "content": "<env>cwd: /work, platform: linux</env> " * 20},
        {"role": "user", "content": "<system-reminder>the workspace layout</system-reminder> " * 20},
        {"role": "user", "content": [{"type": "text", "text": "Fix the failing test."}]},
    ]
    sent_before = len(anthropic_fake.requests)
    for turn in range(len(STEPS)):
        body = claude_code_request(with_breakpoint_on_last(messages))
        before = uplink(edge)
        reply = httpx.post(edge.base_url + "/v1/messages", json=body, headers=headers, timeout=60)
        uploaded = uplink(edge) - before
        assert reply.status_code == 200, reply.text
        checker = MessagesStreamChecker()
        checker.feed(reply.content)
        answer = checker.close()
        recorded = anthropic_fake.requests[-1]
        assert orjson.loads(recorded.raw) == body
        assert recorded.headers["x-api-key"] == AGENT_KEY
        assert recorded.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
        if turn > 0:
            new_content = len(orjson.dumps(body["messages"][-2:]))
            assert uploaded < new_content + 700, (turn, uploaded, new_content)
        messages.append({"role": "assistant", "content": answer["content"]})
        results = [{"type": "tool_result", "tool_use_id": block["id"], "content": f"output of step {turn}"}
                   for block in answer["content"] if block["type"] == "tool_use"]  # fmt: skip
        if not results:
            break
        messages.append({"role": "user", "content": results})
        messages[0] = switch_form(messages[0])
    assert len(anthropic_fake.requests) - sent_before == len(STEPS)


def test_count_tokens_is_forwarded_too(edge: RunningEdge, anthropic_fake: FakeAnthropic) -> None:
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}], "tools": ANTHROPIC_TOOLS}
    headers = {"x-api-key": AGENT_KEY, "anthropic-version": "2023-06-01"}
    counted = httpx.post(edge.base_url + "/v1/messages/count_tokens", json=body, headers=headers, timeout=30)
    assert counted.status_code == 200
    assert counted.json()["input_tokens"] > 0
    assert anthropic_fake.requests[-1].path == "/v1/messages/count_tokens"


def test_the_upstreams_own_refusal_reaches_the_agent(edge: RunningEdge) -> None:
    body = claude_code_request([{"role": "user", "content": "hi"}])
    refused = httpx.post(edge.base_url + "/v1/messages", json=body, headers={"x-api-key": "wrong",
                         "anthropic-version": "2023-06-01"}, timeout=30)  # fmt: skip
    assert refused.status_code == 401
    assert refused.json()["type"] == "error"


def test_the_openai_chat_client_reaches_the_upstream_untouched(
    edge: RunningEdge, chat_fake: FakeChatCompletions
) -> None:
    sent: list[bytes] = []

    def keep(request: httpx.Request) -> None:
        sent.append(request.read())

    http_client = DefaultHttpxClient(event_hooks={"request": [keep]})
    with OpenAI(api_key=AGENT_KEY, base_url=edge.base_url + "/v1", max_retries=0, http_client=http_client,
                _strict_response_validation=True) as sdk:  # fmt: skip
        messages: list[Any] = [{"role": "system", "content": SYSTEM_TEXT * 150}, {"role": "user", "content": "fix it"}]
        for turn in range(len(STEPS)):
            before = uplink(edge)
            stream = sdk.chat.completions.create(model="gpt-5", messages=messages, tools=CHAT_TOOLS, stream=True)
            chunks = list(stream)
            uploaded = uplink(edge) - before
            assert orjson.loads(chat_fake.requests[-1].raw) == orjson.loads(sent[-1])
            assert chat_fake.requests[-1].headers["authorization"] == f"Bearer {AGENT_KEY}"
            if turn > 0:
                assert uploaded < len(orjson.dumps(messages[-2:])) + 700
            calls: dict[int, dict[str, Any]] = {}
            text = ""
            for chunk in chunks:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    for call in choice.delta.tool_calls or []:
                        entry = calls.setdefault(call.index, {"id": call.id, "type": "function",
                                                              "function": {"name": "", "arguments": ""}})  # fmt: skip
                        if call.function and call.function.name:
                            entry["function"]["name"] = call.function.name
                        if call.function and call.function.arguments:
                            entry["function"]["arguments"] += call.function.arguments
            assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                assistant["tool_calls"] = [calls[i] for i in sorted(calls)]
            messages.append(assistant)
            if not calls:
                break
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": f"result {turn}"} for c in calls.values()]
