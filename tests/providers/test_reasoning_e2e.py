"""Reasoning survives the round trip: a real tether server in front of each upstream fake, driven by the ``openai``
SDK through a tool loop, checking the reasoning items the client gets and what the upstream gets back next turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from openai import OpenAI
from openai.types.responses import FunctionToolParam, Response, ResponseReasoningItem

from tether.providers.fakes import FakeAnthropic
from tether.providers.fakes.openai_responses import FakeResponsesUpstream
from tether.server.runner import RunningServer

ServerFactory = Callable[..., RunningServer]

KEY = "sk-up-0123456789abcdefghijkl"
ENCRYPTED = "reasoning.encrypted_content"
TOOL: FunctionToolParam = {
    "type": "function",
    "name": "run_tests",
    "description": "Run the test suite.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    "strict": False,
}
RUN = {"name": "run_tests", "arguments": {"path": "t.py"}}
LOOP: list[dict[str, Any]] = [
    {"reasoning": "The test file comes first.\n\nThen the suite.", "tool_calls": [RUN]},
    {"reasoning": "It passed.", "text": "All tests pass."},
]
USER: Any = {"type": "message", "role": "user", "content": "Run the tests."}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", KEY)


def gateway_for(make_server: ServerFactory, fake: FakeResponsesUpstream, transport: str = "http") -> RunningServer:
    provider = {"kind": "openai-responses", "base_url": fake.base_url, "api_key_env": "UP_KEY", "transport": transport}
    return make_server(
        providers={"up": {**provider, "stateful": fake.stateful}}, routes=[{"model": "up-*", "provider": "up"}]
    )


def sdk(gateway: RunningServer) -> OpenAI:
    return OpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0, _strict_response_validation=True)


def events_of(client: OpenAI, **create: Any) -> list[Any]:
    with client.responses.create(model="up-agent", tools=[TOOL], stream=True, **create) as stream:
        return list(stream)


def streamed(client: OpenAI, **create: Any) -> tuple[Response, list[Any]]:
    events = events_of(client, **create)
    assert events[-1].type == "response.completed", events[-1]
    return events[-1].response, events


def reasoning_of(response: Response) -> ResponseReasoningItem:
    (reasoning,) = [item for item in response.output if item.type == "reasoning"]
    return reasoning


def outputs_for(response: Response) -> list[dict[str, Any]]:
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls
    return [{"type": "function_call_output", "call_id": call.call_id, "output": "1 passed"} for call in calls]


def sent_reasoning(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in body.get("input") or [] if item.get("type") == "reasoning"]


@pytest.mark.parametrize("transport", ["http", "websocket"])
def test_codex_s_way_store_false_with_encrypted_content_goes_back_upstream_unchanged(
    make_server: ServerFactory, transport: str
) -> None:
    with FakeResponsesUpstream(LOOP, api_key=KEY) as fake, sdk(gateway_for(make_server, fake, transport)) as client:
        first, events = streamed(client, input=[USER], store=False, include=[ENCRYPTED])
        reasoning = reasoning_of(first)

        # The upstream's item, as it sent it: its id, one summary part per paragraph, its encrypted_content.
        assert reasoning.id.startswith("rs_up_")
        assert [part.text for part in reasoning.summary] == ["The test file comes first.", "Then the suite."]
        assert reasoning.encrypted_content is not None
        assert reasoning.encrypted_content.startswith("gAAAAB")
        parts = [e for e in events if e.type == "response.reasoning_summary_part.added"]
        assert [(e.item_id, e.summary_index) for e in parts] == [(reasoning.id, 0), (reasoning.id, 1)]
        assert fake.requests[0].body["include"] == [ENCRYPTED]

        # Codex sends the whole conversation back, its reasoning items included.
        history = [USER, *(item.model_dump(exclude_none=True) for item in first.output), *outputs_for(first)]
        second, _ = streamed(client, input=history, store=False, include=[ENCRYPTED])

    assert second.output_text == "All tests pass."
    (sent,) = sent_reasoning(fake.requests[1].body)
    assert sent["id"] == reasoning.id
    assert sent["encrypted_content"] == reasoning.encrypted_content  # byte for byte: the fake could verify it
    assert sent["summary"] == [part.model_dump() for part in reasoning.summary]


def test_a_stored_chain_references_reasoning_upstream_and_resends_it_whole_when_the_upstream_forgot(
    make_server: ServerFactory,
) -> None:
    with FakeResponsesUpstream(LOOP, api_key=KEY) as fake, sdk(gateway_for(make_server, fake)) as client:
        first, _ = streamed(client, input=[USER], include=[ENCRYPTED])
        reasoning = reasoning_of(first)
        second, _ = streamed(client, input=outputs_for(first), previous_response_id=first.id, include=[ENCRYPTED])
        assert second.output_text == "All tests pass."
        fake.forget_all()
        third, _ = streamed(
            client, input=outputs_for(first), previous_response_id=first.id, include=[ENCRYPTED], store=True
        )

    assert third.output_text == "All tests pass."
    delta, refused, resent = fake.requests[1:]
    # A stateful upstream holds the chain: the delta names its response and resends no reasoning.
    assert delta.previous_response_id is not None
    assert sent_reasoning(delta.body) == []
    assert refused.previous_response_id == delta.previous_response_id
    # Once it forgot, the whole context goes up, the reasoning item with it, unchanged.
    assert resent.previous_response_id is None
    (sent,) = sent_reasoning(resent.body)
    assert (sent["id"], sent["encrypted_content"]) == (reasoning.id, reasoning.encrypted_content)


def test_a_stateless_upstream_gets_the_stored_reasoning_back_in_the_rebuilt_context(
    make_server: ServerFactory,
) -> None:
    with (
        FakeResponsesUpstream(LOOP, api_key=KEY, stateful=False) as fake,
        sdk(gateway_for(make_server, fake)) as client,
    ):
        first, _ = streamed(client, input=[USER])
        reasoning = reasoning_of(first)
        assert reasoning.encrypted_content is None  # not asked for: none comes
        second, _ = streamed(client, input=outputs_for(first), previous_response_id=first.id)

    assert second.output_text == "All tests pass."
    rebuilt = fake.requests[1]
    assert rebuilt.previous_response_id is None
    assert rebuilt.body["store"] is False
    (sent,) = sent_reasoning(rebuilt.body)
    assert sent == reasoning.model_dump(exclude_none=True)
    assert [item.get("type", "message") for item in rebuilt.input] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
    ]


def test_the_fake_refuses_reasoning_it_cannot_read_back(make_server: ServerFactory) -> None:
    with FakeResponsesUpstream(LOOP, api_key=KEY) as fake, sdk(gateway_for(make_server, fake)) as client:
        first, _ = streamed(client, input=[USER], store=False, include=[ENCRYPTED])
        reasoning = reasoning_of(first).model_dump(exclude_none=True)
        calls = [item.model_dump(exclude_none=True) for item in first.output if item.type == "function_call"]
        forged = {**reasoning, "encrypted_content": "gAAAAB-forged"}
        events = events_of(client, store=False, input=[USER, forged, *calls, *outputs_for(first)])

    assert events[-1].type == "response.failed"
    assert "could not be verified" in (events[-1].response.error.message if events[-1].response.error else "")


# -- Anthropic: extended thinking, its signed blocks kept and sent back ------------------------------------------

THINKING_PREFIX = "tether:anthropic:thinking:"
LOW: Any = {"effort": "low"}


def claude_gateway(make_server: ServerFactory, fake: FakeAnthropic) -> RunningServer:
    provider = {"kind": "anthropic", "base_url": fake.base_url, "api_key_env": "UP_KEY"}
    return make_server(providers={"claude": provider}, routes=[{"model": "up-*", "provider": "claude"}])


def assistant_turn(body: dict[str, Any]) -> list[dict[str, Any]]:
    (assistant,) = [message for message in body["messages"] if message["role"] == "assistant"]
    content: list[dict[str, Any]] = assistant["content"]
    return content


def test_anthropic_thinking_is_requested_kept_and_sent_back_verbatim_in_a_stored_tool_loop(
    make_server: ServerFactory,
) -> None:
    with FakeAnthropic(LOOP, api_key=KEY) as fake, sdk(claude_gateway(make_server, fake)) as client:
        first, events = streamed(client, input=[USER], reasoning=LOW)
        reasoning = reasoning_of(first)
        second, _ = streamed(client, input=outputs_for(first), previous_response_id=first.id, reasoning=LOW)

    assert [part.text for part in reasoning.summary] == ["The test file comes first.\n\nThen the suite."]
    assert any(e.type == "response.reasoning_summary_text.delta" for e in events)
    assert reasoning.encrypted_content is not None
    assert reasoning.encrypted_content.startswith(THINKING_PREFIX)
    signature = reasoning.encrypted_content.removeprefix(THINKING_PREFIX)
    asked, continued = (request.body for request in fake.requests)
    assert asked["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert asked["max_tokens"] == 4096 + 2048
    # The thinking block opens the assistant turn, before its tool_use, as the API requires; the fake checked the
    # signature against the thinking text, so both arrived byte for byte.
    thinking, tool_use = assistant_turn(continued)
    assert thinking == {"type": "thinking", "thinking": reasoning.summary[0].text, "signature": signature}
    assert tool_use["type"] == "tool_use"
    assert signature.encode() in fake.requests[1].raw
    assert second.output_text == "All tests pass."


def test_anthropic_redacted_thinking_comes_back_from_a_store_false_client_that_resends_everything(
    make_server: ServerFactory,
) -> None:
    with (
        FakeAnthropic(LOOP, api_key=KEY, redact_thinking=True) as fake,
        sdk(claude_gateway(make_server, fake)) as client,
    ):
        first, _ = streamed(client, input=[USER], reasoning=LOW, store=False, include=[ENCRYPTED])
        reasoning = reasoning_of(first)
        history = [USER, *(item.model_dump(exclude_none=True) for item in first.output), *outputs_for(first)]
        second, _ = streamed(client, input=history, reasoning=LOW, store=False, include=[ENCRYPTED])

    assert reasoning.summary == []
    assert reasoning.encrypted_content is not None
    data = reasoning.encrypted_content.removeprefix("tether:anthropic:redacted:")
    assert assistant_turn(fake.requests[1].body)[0] == {"type": "redacted_thinking", "data": data}
    assert second.output_text == "All tests pass."


def test_a_chain_that_moves_from_anthropic_to_an_openai_upstream_leaves_the_thinking_behind(
    make_server: ServerFactory,
) -> None:
    with (
        FakeAnthropic(LOOP, api_key=KEY) as claude,
        FakeResponsesUpstream(LOOP, api_key=KEY) as openai_up,
    ):
        responses = {"kind": "openai-responses", "base_url": openai_up.base_url, "api_key_env": "UP_KEY"}
        anthropic = {"kind": "anthropic", "base_url": claude.base_url, "api_key_env": "UP_KEY"}
        gateway = make_server(
            providers={"claude": anthropic, "gpt": responses},
            routes=[{"model": "up-claude", "provider": "claude"}, {"model": "up-agent", "provider": "gpt"}],
        )
        with sdk(gateway) as client:
            thought = client.responses.create(model="up-claude", input=[USER], tools=[TOOL], reasoning=LOW)
            second, _ = streamed(client, input=outputs_for(thought), previous_response_id=thought.id)

    assert second.output_text == "All tests pass."
    assert sent_reasoning(openai_up.requests[0].body) == []  # the thinking block is Anthropic's to read
