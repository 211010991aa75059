"""No configured secret (the API key, the configured headers' values) reaches a client or a log, through any provider.

Each upstream here is hostile: it echoes tether's request headers back in every way a real server might (an error
body, an error event inside a 200 stream, a connection error's text, a WebSocket error event). Every client-visible
form of the resulting error (its message, its HTTP body, its SSE and WebSocket events) and every log line emitted
meanwhile (captured from structlog) must be free of the secrets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import structlog
import websockets.asyncio.client

from tether.protocol.errors import ProtocolError
from tether.providers.anthropic import AnthropicProvider
from tether.providers.base import Provider, ProviderRequest
from tether.providers.chat_completions import ChatCompletionsProvider
from tether.providers.fakes import FakeAnthropic, FakeChatCompletions, FakeResponsesUpstream, FakeUpstream
from tether.providers.http_upstream import UpstreamOptions
from tether.providers.openai_responses import OpenAIResponsesProvider
from tether.providers.raw_forward import RawForwarding, RawRequest
from tether.server.runner import RunningServer
from tether.testing import settled
from tether.types import Item

ServerFactory = Callable[..., RunningServer]

KEY = "sk-live-0123456789abcdefghij"
# Values that look like nothing in particular: only the configuration says they are secret.
HEADER_SECRET = "org_7f3a9c2e51"
CONFIGURED_HEADERS = {"x-org-token": HEADER_SECRET, "x-gateway-key": "gw.4471.alpha"}
SECRETS = (KEY, HEADER_SECRET, "gw.4471.alpha")

USER: list[Item] = [{"type": "message", "role": "user", "content": "Hello."}]
REQUEST = ProviderRequest(
    model="m",
    instructions=None,
    context=USER,
    new_items=USER,
    tools=[],
    tool_choice="auto",
    context_tokens=0,
    cached_tokens=0,
    previous_response_id=None,
    response_id="resp_test",
)


async def no_sleep(delay: float) -> None:
    return None


def options(base_url: str = "http://upstream.test/v1", **overrides: Any) -> UpstreamOptions:
    settings: dict[str, Any] = {"api_key": KEY, "headers": CONFIGURED_HEADERS, "max_retries": 1, **overrides}
    return UpstreamOptions(base_url, **settings)


def echoed(request: httpx.Request) -> str:
    return "; ".join(f"{name}={value}" for name, value in request.headers.items())


def sse(*payloads: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(p) + b"\n\n" for p in payloads)


# How a hostile upstream answers (the echo of the request's headers put somewhere a message is read from).
def status_echo(status: int) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": f"rejected: {echoed(request)}", "code": f"bad {HEADER_SECRET}"}}
        return httpx.Response(status, json=body, headers={"retry-after": "0"})

    return answer


def stream_echo(request: httpx.Request) -> httpx.Response:
    message = f"stream failed: {echoed(request)}"
    body = sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": message}},  # anthropic
        {"error": {"message": message, "type": "server_error"}},  # chat completions
        {"type": "error", "code": "server_error", "message": message},  # responses (flat SSE error)
    )
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def connect_echo(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"proxy refused {echoed(request)}", request=request)


HOSTILE = {
    "400-echo": status_echo(400),
    "401-echo": status_echo(401),
    "429-echo": status_echo(429),
    "503-echo": status_echo(503),
    "in-stream-echo": stream_echo,
    "connect-error-echo": connect_echo,
}
HTTP_PROVIDERS: dict[str, Callable[[httpx.MockTransport], Provider]] = {
    "chat-completions": lambda t: ChatCompletionsProvider("up", options(), transport=t, sleep=no_sleep),
    "anthropic": lambda t: AnthropicProvider("up", options(), transport=t, sleep=no_sleep),
    "openai-responses-http": lambda t: OpenAIResponsesProvider("up", options(), http_transport=t, sleep=no_sleep),
}


def client_visible(error: ProtocolError) -> str:
    """Everything of an error a client can receive, over any transport."""
    forms = [error.message, repr(error), error.http_body(), error.sse_event(3), error.ws_event("lane", 3)]
    return json.dumps([str(form) if isinstance(form, str) else form for form in forms])


def assert_clean(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"secrets {leaked} leaked into: {text[:400]}"


@pytest.fixture
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


async def run(provider: Provider, request: ProviderRequest = REQUEST) -> ProtocolError:
    try:
        with pytest.raises(ProtocolError) as raised:
            async for _ in provider.stream(request):
                pass
    finally:
        await provider.aclose()
    return raised.value


@pytest.mark.parametrize("answer", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("kind", HTTP_PROVIDERS.keys())
async def test_no_secret_reaches_the_client_or_the_log_over_http(
    kind: str, answer: Callable[[httpx.Request], httpx.Response], captured_logs: list[MutableMapping[str, Any]]
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    error = await run(HTTP_PROVIDERS[kind](httpx.MockTransport(handler)))

    assert seen  # the upstream was reached, and was sent the secrets it then echoed
    assert HEADER_SECRET in echoed(seen[0])
    assert error.code in ("upstream_error", "upstream_auth_error", "rate_limit_exceeded")
    assert_clean(client_visible(error))
    assert_clean(repr(captured_logs))


@pytest.fixture
def responses_fake() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def ws_provider(responses_fake: FakeResponsesUpstream) -> AsyncIterator[OpenAIResponsesProvider]:
    provider = OpenAIResponsesProvider("up", options(responses_fake.base_url), transport="websocket", sleep=no_sleep)
    yield provider
    await provider.aclose()


@pytest.mark.parametrize("status", [400, 429, 503])
async def test_no_secret_reaches_the_client_or_the_log_over_a_websocket_upstream(
    responses_fake: FakeResponsesUpstream,
    ws_provider: OpenAIResponsesProvider,
    status: int,
    captured_logs: list[MutableMapping[str, Any]],
) -> None:
    echo = f"rejected {KEY} with x-org-token={HEADER_SECRET} x-gateway-key=gw.4471.alpha"
    responses_fake.fail_next(2, status, echo)

    with pytest.raises(ProtocolError) as raised:
        async for _ in ws_provider.stream(REQUEST):
            pass

    assert responses_fake.connections >= 1
    assert_clean(client_visible(raised.value))
    assert_clean(repr(captured_logs))


async def test_a_refused_websocket_upgrade_shows_no_secret(captured_logs: list[MutableMapping[str, Any]]) -> None:
    with FakeResponsesUpstream(api_key="sk-other-key-that-tether-lacks") as fake:
        provider = OpenAIResponsesProvider("up", options(fake.base_url), transport="websocket", sleep=no_sleep)
        error = await run(provider)

    assert error.code == "upstream_auth_error"
    assert_clean(client_visible(error))
    assert_clean(repr(captured_logs))


FORWARDERS: dict[str, tuple[Callable[[httpx.MockTransport], RawForwarding], RawRequest]] = {
    "chat-completions": (
        lambda t: ChatCompletionsProvider("up", options(), transport=t, sleep=no_sleep),
        RawRequest("POST", "/v1/chat/completions", b'{"model": "m", "messages": []}'),
    ),
    "anthropic": (
        lambda t: AnthropicProvider("up", options(), transport=t, sleep=no_sleep),
        RawRequest("POST", "/v1/messages", b'{"model": "m", "max_tokens": 8, "messages": []}'),
    ),
}


@pytest.mark.parametrize("answer", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("kind", FORWARDERS.keys())
async def test_no_configured_secret_reaches_the_agent_through_same_api_forwarding(
    kind: str, answer: Callable[[httpx.Request], httpx.Response], captured_logs: list[MutableMapping[str, Any]]
) -> None:
    build, request = FORWARDERS[kind]
    forwarder = build(httpx.MockTransport(answer))
    seen: list[str] = []
    try:
        async with forwarder.forward(request) as reply:
            seen.append(json.dumps(reply.headers))
            seen.append((await reply.read()).decode("utf-8", "replace"))
    except ProtocolError as error:
        seen.append(client_visible(error))
    finally:
        await forwarder.aclose()  # type: ignore[attr-defined]

    assert seen
    for text in seen:
        assert_clean(text)
    assert_clean(repr(captured_logs))


# -- through a real gateway: the bodies, streams and socket messages clients receive ---------------------------

ECHO = f"rejected {KEY} with x-org-token={HEADER_SECRET} x-gateway-key=gw.4471.alpha"
KEY_ENV = "TETHER_TEST_LEAK_KEY"


@pytest.fixture
def hostile_gateway(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[RunningServer, list[FakeUpstream | FakeResponsesUpstream]]]:
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeChatCompletions() as chat, FakeAnthropic() as claude, FakeResponsesUpstream() as responses:
        common = {"api_key_env": KEY_ENV, "headers": CONFIGURED_HEADERS, "max_retries": 1, "backoff_s": 0.0}
        server = make_server(
            providers={
                "chat": {"kind": "chat-completions", "base_url": chat.base_url, **common},
                "claude": {"kind": "anthropic", "base_url": claude.base_url, **common},
                "oai-http": {"kind": "openai-responses", "base_url": responses.base_url, **common},
                "oai-ws": {
                    "kind": "openai-responses",
                    "base_url": responses.base_url,
                    "transport": "websocket",
                    **common,
                },
            },
            routes=[{"model": name, "provider": name} for name in ("chat", "claude", "oai-http", "oai-ws")],
        )
        yield server, [chat, claude, responses]


@pytest.mark.parametrize("model", ["chat", "claude", "oai-http", "oai-ws"])
async def test_no_secret_reaches_a_client_of_the_gateway(
    hostile_gateway: tuple[RunningServer, list[FakeUpstream | FakeResponsesUpstream]], model: str
) -> None:
    server, fakes = hostile_gateway
    received: list[str] = []
    with structlog.testing.capture_logs() as logs:
        for fake in fakes:
            fake.fail_next(9, 400, ECHO)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            body = {"model": model, "input": "Hello."}
            received.append((await client.post("/responses", json=body)).text)
            received.append((await client.post("/responses", json={**body, "stream": True})).text)
        async with websockets.asyncio.client.connect(server.ws_url) as ws:
            await ws.send(orjson.dumps({"type": "response.create", **body}).decode())
            while not received[-1].startswith('{"type":"response.failed"'):
                received.append(str(await asyncio.wait_for(ws.recv(), 30)))
        await settled(server)

    assert any("upstream_error" in text for text in received)
    assert logs  # the server thread's log lines were captured too
    for text in received:
        assert_clean(text)
    assert_clean(repr(logs))


# An agent's own key, forwarded by an edge to a provider with no key: shaped like no credential, so only its being
# known as a secret keeps it out of messages.
AGENT_KEY = "agent.key.7c1e5b93"
FORWARDED = dataclasses.replace(REQUEST, credentials={"authorization": f"Bearer {AGENT_KEY}"})


def assert_no_agent_key(text: str) -> None:
    assert AGENT_KEY not in text, f"the agent's key leaked into: {text[:400]}"


@pytest.mark.parametrize("answer", HOSTILE.values(), ids=HOSTILE.keys())
async def test_no_forwarded_agent_key_reaches_the_client_or_the_log_over_http(
    answer: Callable[[httpx.Request], httpx.Response], captured_logs: list[MutableMapping[str, Any]]
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    unkeyed = options(api_key=None, headers={})
    provider = OpenAIResponsesProvider("up", unkeyed, http_transport=httpx.MockTransport(handler), sleep=no_sleep)
    error = await run(provider, FORWARDED)

    assert seen[0].headers["authorization"] == f"Bearer {AGENT_KEY}"  # sent upstream, then echoed back
    assert_no_agent_key(client_visible(error))
    assert_no_agent_key(repr(captured_logs))


async def test_a_websocket_upgrade_refusing_the_agents_key_shows_no_key(
    captured_logs: list[MutableMapping[str, Any]],
) -> None:
    with FakeResponsesUpstream(api_key="sk-the-upstream-wants-another-key") as fake:
        unkeyed = options(fake.base_url, api_key=None, headers={})
        provider = OpenAIResponsesProvider("up", unkeyed, transport="websocket", sleep=no_sleep)
        error = await run(provider, FORWARDED)

    assert error.code == "upstream_auth_error"
    assert_no_agent_key(client_visible(error))
    assert_no_agent_key(repr(captured_logs))
