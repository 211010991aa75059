"""OpenTelemetry: the span tree and GenAI attributes of a turn (in-memory exporter), W3C ``traceparent`` arriving over
HTTP and over the WebSocket handshake and propagated upstream, and a real export over OTLP/HTTP to a receiver on
127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2 as httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from websockets.asyncio.client import connect

from tether.providers.fakes import FakeChatCompletions
from tether.server.app import create_app
from tether.server.runner import RunningServer, serve_in_thread
from tether.server.tracing import tracing_wanted
from tether.settings import ProviderSettings, RouteSettings, Settings

from .wire import receive_turn

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(tmp_path: Path, exporter: InMemorySpanExporter) -> Iterator[tuple[RunningServer, FakeChatCompletions]]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with FakeChatCompletions() as fake:
        settings = Settings(
            store_url=f"sqlite:///{tmp_path / 'tether.db'}",
            log_level="warning",
            providers={"vllm": ProviderSettings(kind="chat-completions", base_url=fake.base_url)},
            routes=[RouteSettings(model="local-*", provider="vllm")],
        )
        with serve_in_thread(settings, app=create_app(settings, tracer_provider=provider)) as server:
            yield server, fake


def tree(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, dict[str, ReadableSpan]]:
    spans = exporter.get_finished_spans()
    (root,) = [span for span in spans if span.kind is SpanKind.SERVER]
    children = {
        span.name: span for span in spans if span.parent is not None and span.parent.span_id == root.context.span_id
    }
    return root, children


def test_a_turn_is_a_span_tree_with_genai_attributes_under_the_http_traceparent(
    traced: tuple[RunningServer, FakeChatCompletions], exporter: InMemorySpanExporter
) -> None:
    server, fake = traced
    response = httpx.post(
        f"{server.base_url}/responses",
        json={"model": "local-qwen", "input": "hello"},
        headers={"traceparent": TRACEPARENT},
        timeout=10,
    ).json()
    root, children = tree(exporter)
    assert root.name == "chat local-qwen"
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None
    assert format(root.parent.span_id, "016x") == PARENT_SPAN
    assert set(children) == {"tether.resolve_context", "chat local-qwen", "tether.commit"}
    attributes = root.attributes or {}
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "local-qwen"
    assert attributes["gen_ai.response.id"] == response["id"]
    assert attributes["gen_ai.usage.input_tokens"] == response["usage"]["input_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == response["usage"]["output_tokens"]
    assert attributes["gen_ai.provider.name"] == "vllm"
    assert attributes["tether.transport"] == "http"
    upstream = children["chat local-qwen"]
    assert upstream.kind is SpanKind.CLIENT
    (sent,) = fake.requests
    assert sent.headers["traceparent"] == f"00-{TRACE_ID}-{format(upstream.context.span_id, '016x')}-01"
    resolution, commit = children["tether.resolve_context"], children["tether.commit"]
    assert root.start_time is not None
    assert root.end_time is not None
    assert resolution.start_time is not None
    assert commit.end_time is not None
    assert root.start_time <= resolution.start_time
    assert commit.end_time <= root.end_time


async def test_the_websocket_handshake_traceparent_is_the_parent(
    traced: tuple[RunningServer, FakeChatCompletions], exporter: InMemorySpanExporter
) -> None:
    server, _ = traced
    async with connect(server.ws_url, additional_headers={"traceparent": TRACEPARENT}) as ws:
        await ws.send(json.dumps({"type": "response.create", "model": "local-qwen", "input": "hi"}))
        events = await receive_turn(ws)
    assert events[-1]["type"] == "response.completed"
    root, children = tree(exporter)
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert (root.attributes or {})["tether.transport"] == "websocket"
    assert "tether.commit" in children


def test_a_rejected_turn_is_an_error_span(
    traced: tuple[RunningServer, FakeChatCompletions], exporter: InMemorySpanExporter
) -> None:
    server, _ = traced
    body = {"model": "local-qwen", "previous_response_id": "resp_x"}
    answer = httpx.post(f"{server.base_url}/responses", json=body)
    assert answer.status_code == 400
    root, _ = tree(exporter)
    assert (root.attributes or {})["error.type"] == "previous_response_not_found"


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps every request body."""

    bodies: list[bytes] = []  # noqa: RUF012 (each test makes its own subclass with its own list)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_spans_are_exported_over_otlp_to_a_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Receiver(_Receiver):
        bodies: list[bytes] = []  # noqa: RUF012

    handler = Receiver
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.server_address[1]}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "tether-under-test")
        settings = Settings(store_url=f"sqlite:///{tmp_path / 'tether.db'}", log_level="warning")
        with serve_in_thread(settings) as server:
            assert httpx.post(f"{server.base_url}/responses", json={"model": "echo", "input": "hi"}).status_code == 200
        # the server's shutdown flushed the batch
    finally:
        receiver.shutdown()
        receiver.server_close()
    names: set[str] = set()
    services: set[str] = set()
    for body in handler.bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services.update(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope in resource_spans.scope_spans:
                names.update(span.name for span in scope.spans)
    assert {"chat echo", "tether.resolve_context", "tether.commit"} <= names
    assert services == {"tether-under-test"}


def test_tracing_is_on_with_an_endpoint_or_the_config_and_off_when_the_sdk_is_disabled() -> None:
    assert not tracing_wanted({}, enabled_in_config=False)
    assert tracing_wanted({}, enabled_in_config=True)
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, enabled_in_config=False)
    assert not tracing_wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, enabled_in_config=True
    )
