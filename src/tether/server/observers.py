"""The observers a server wires into its engine: metrics, the turn log line and the audit log."""

from __future__ import annotations

from dataclasses import dataclass

from tether.audit.log import AuditLog
from tether.engine.observer import FanOut, TurnObserver
from tether.server.audit import Auditor, audit_directory
from tether.server.metrics import Metrics
from tether.server.turn_log import TurnLog
from tether.settings import Settings


@dataclass(frozen=True, slots=True)
class Observers:
    """``engine`` is what the engine is told; ``audit`` is also told of administrative acts (``None``: off)."""

    engine: TurnObserver
    audit: Auditor | None


def build_observers(settings: Settings, metrics: Metrics) -> Observers:
    observers: list[TurnObserver] = [metrics, TurnLog(log_content=settings.log_content)]
    directory = audit_directory(settings.audit_dir, settings.store_url) if settings.audit_enabled else None
    auditor = Auditor(AuditLog(directory), content=settings.audit_content) if directory is not None else None
    if auditor is not None:
        observers.append(auditor)
    return Observers(FanOut(observers), auditor)
