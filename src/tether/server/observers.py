"""The observers a server wires into its engine: metrics, the turn log line, the audit log and traces."""

from __future__ import annotations

import os
from dataclasses import dataclass

from opentelemetry.sdk.trace import TracerProvider

from tether.audit.log import AuditLog
from tether.engine.observer import FanOut, TurnObserver
from tether.server.audit import Auditor, audit_directory
from tether.server.inspector import Inspector
from tether.server.metrics import Metrics
from tether.server.tracing import Tracing, otlp_tracer_provider, tracing_wanted
from tether.server.turn_log import TurnLog
from tether.settings import Settings


@dataclass(frozen=True, slots=True)
class Observers:
    """``engine`` is what the engine is told; ``audit`` is also told of administrative acts (``None``: off);
    ``owned_tracer_provider`` is the OTLP provider made here, to shut down (flushing its spans) with the app."""

    engine: TurnObserver
    audit: Auditor | None
    inspector: Inspector | None = None
    owned_tracer_provider: TracerProvider | None = None

    def close(self) -> None:
        if self.owned_tracer_provider is not None:
            self.owned_tracer_provider.shutdown()


def build_observers(settings: Settings, metrics: Metrics, tracer_provider: TracerProvider | None = None) -> Observers:
    """Args: ``tracer_provider`` replaces the one the ``OTEL_*`` variables would make (tests pass their own)."""
    observers: list[TurnObserver] = [metrics, TurnLog(log_content=settings.log_content)]
    owned = None
    if tracer_provider is None and tracing_wanted(os.environ, enabled_in_config=settings.tracing_enabled):
        tracer_provider = owned = otlp_tracer_provider(os.environ)
    if tracer_provider is not None:
        observers.append(Tracing(tracer_provider))
    inspector = Inspector() if settings.inspector_enabled else None
    if inspector is not None:
        observers.append(inspector)
    directory = audit_directory(settings.audit_dir, settings.store_url) if settings.audit_enabled else None
    auditor = Auditor(AuditLog(directory), content=settings.audit_content) if directory is not None else None
    if auditor is not None:
        observers.append(auditor)
    return Observers(FanOut(observers), auditor, inspector, owned)
