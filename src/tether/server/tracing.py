"""OpenTelemetry traces of turns: a span per turn with children for context resolution, the upstream call and the
commit, GenAI semantic-convention attributes, and W3C trace context in (HTTP headers, the WebSocket handshake) and
out (the upstream request).

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set or the config
enables it, and off whenever ``OTEL_SDK_DISABLED=true``. The SDK reads the other standard variables itself
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``, ...).
The tracer provider belongs to the app: nothing is set globally.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tether.engine.observer import TurnObserver, TurnOrigin, TurnTimings, turn_outcome
from tether.engine.turn import Turn
from tether.protocol.errors import ProtocolError
from tether.protocol.request import CreateRequest

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_wanted(environ: Mapping[str, str], *, enabled_in_config: bool) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return enabled_in_config or any(environ.get(name) for name in ENDPOINT_VARIABLES)


def otlp_tracer_provider(environ: Mapping[str, str]) -> TracerProvider:
    """A provider exporting over OTLP/HTTP, configured by the standard ``OTEL_*`` variables (the service is
    ``tether`` unless ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` names it)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "tether"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@dataclass(slots=True)
class _Spans:
    turn: Span
    offset_ns: int  # perf_counter readings + offset_ns = unix time in ns
    upstream: Span | None = None

    def at(self, reading: float | None) -> int | None:
        return None if reading is None else int(reading * 1e9) + self.offset_ns


class Tracing(TurnObserver):
    """Turns into spans on ``provider``'s tracer."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.tracer = provider.get_tracer("tether")
        self.propagator = TraceContextTextMapPropagator()
        self._spans: dict[str, _Spans] = {}

    def turn_started(self, turn: Turn) -> None:
        plan, timings = turn.plan, turn.timings
        offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)
        spans = _Spans(self._turn_span(plan.request.model, plan.origin, timings, offset_ns), offset_ns)
        spans.turn.set_attributes(
            {
                "gen_ai.provider.name": turn.provider.name,
                "gen_ai.response.id": plan.response_id,
                "tether.route": plan.route,
                "tether.resolution": plan.resolution.value,
                "tether.lane": plan.lane or "",
            }
        )
        if plan.request.previous_response_id is not None:
            spans.turn.set_attribute("tether.previous_response_id", plan.request.previous_response_id)
        resolution = self.tracer.start_span(
            "tether.resolve_context", context=trace.set_span_in_context(spans.turn), start_time=spans.at(timings.opened)
        )
        resolution.set_attribute("tether.resolution", plan.resolution.value)
        resolution.end(end_time=spans.at(timings.resolved))
        self._spans[plan.response_id] = spans

    def upstream_headers(self, turn: Turn) -> Mapping[str, str]:
        spans = self._spans.get(turn.plan.response_id)
        if spans is None:
            return {}
        spans.upstream = self.tracer.start_span(
            f"chat {turn.plan.request.model}",
            context=trace.set_span_in_context(spans.turn),
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": turn.plan.request.model,
                "gen_ai.provider.name": turn.provider.name,
            },
        )
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(spans.upstream))
        return carrier

    def turn_finished(self, turn: Turn) -> None:
        spans = self._spans.pop(turn.plan.response_id, None)
        if spans is None:
            return
        timings, response = turn.timings, turn.stream.response
        outcome = turn_outcome(turn)
        usage = response["usage"]
        attributes = {
            "gen_ai.usage.input_tokens": usage["input_tokens"] if usage else None,
            "gen_ai.usage.output_tokens": usage["output_tokens"] if usage else None,
            "gen_ai.response.finish_reasons": [outcome],
            "tether.outcome": outcome,
        }
        present = {key: value for key, value in attributes.items() if value is not None}
        spans.turn.set_attributes(present)
        if spans.upstream is not None:
            spans.upstream.set_attributes(present)
            _fail(spans.upstream, turn.failed)
            spans.upstream.end(end_time=spans.at(timings.upstream_done or timings.committed or timings.ended))
        if timings.committed is not None:
            commit = self.tracer.start_span(
                "tether.commit",
                context=trace.set_span_in_context(spans.turn),
                start_time=spans.at(timings.upstream_done or timings.upstream_started or timings.resolved),
            )
            commit.set_attribute("tether.store", turn.plan.request.store)
            commit.end(end_time=spans.at(timings.committed))
        _fail(spans.turn, turn.failed)
        if outcome == "cancelled":
            spans.turn.set_status(Status(StatusCode.ERROR, "cancelled"))
        spans.turn.end(end_time=spans.at(timings.ended))

    def turn_rejected(
        self, request: CreateRequest, origin: TurnOrigin, error: ProtocolError, *, route: str, provider: str
    ) -> None:
        offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)
        span = self._turn_span(request.model, origin, TurnTimings(), offset_ns)
        span.set_attributes({"gen_ai.provider.name": provider, "tether.route": route, "tether.outcome": "rejected"})
        _fail(span, error)
        span.end()

    def _turn_span(self, model: str, origin: TurnOrigin, timings: TurnTimings, offset_ns: int) -> Span:
        parent: Context = self.propagator.extract(carrier=dict(origin.trace_headers))
        return self.tracer.start_span(
            f"chat {model}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=int(timings.opened * 1e9) + offset_ns,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "tether.transport": origin.transport,
            },
        )


def _fail(span: Span, error: ProtocolError | None) -> None:
    if error is not None:
        span.set_attribute("error.type", error.code)
        span.set_status(Status(StatusCode.ERROR, error.code))
