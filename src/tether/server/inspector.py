"""What ``/inspect`` shows: the recent turns of this node, grouped into chains per tenant, with each turn's timeline,
bytes sent vs saved and tokens. A bounded ring in memory; it never holds message content."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tether.engine.observer import TurnObserver, TurnTimings, turn_outcome
from tether.engine.turn import Turn
from tether.protocol.stateless import sent_params, stateless_size
from tether.types import JSONObject

MILESTONES = (
    ("resolved", "context resolved"),
    ("upstream_started", "upstream called"),
    ("first_token", "first token"),
    ("upstream_done", "model finished"),
    ("committed", "committed"),
    ("ended", "ended"),
)


@dataclass(slots=True)
class TurnView:
    response_id: str
    tenant: str
    chain: str
    previous_response_id: str | None
    created_at: int
    model: str
    route: str
    provider: str
    transport: str
    resolution: str
    lane: str | None
    outcome: str = "in_progress"
    input_tokens: int | None = None
    output_tokens: int | None = None
    bytes_sent: int = 0
    bytes_stateless: int = 0
    new_items: int = 0
    context_items: int = 0
    timeline: list[JSONObject] = field(default_factory=list)
    deltas: int = 0
    resumes: int = 0
    error_code: str | None = None

    @property
    def bytes_saved(self) -> int:
        return self.bytes_stateless - self.bytes_sent if self.bytes_sent else 0

    def to_json(self) -> JSONObject:
        return {
            "response_id": self.response_id,
            "previous_response_id": self.previous_response_id,
            "created_at": self.created_at,
            "model": self.model,
            "route": self.route,
            "provider": self.provider,
            "transport": self.transport,
            "resolution": self.resolution,
            "lane": self.lane,
            "outcome": self.outcome,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "bytes_sent": self.bytes_sent,
            "bytes_stateless": self.bytes_stateless,
            "bytes_saved": self.bytes_saved,
            "new_items": self.new_items,
            "context_items": self.context_items,
            "timeline": self.timeline,
            "deltas": self.deltas,
            "resumes": self.resumes,
            "error_code": self.error_code,
        }


def timeline(timings: TurnTimings) -> list[JSONObject]:
    """The turn's milestones in milliseconds since it reached the engine."""
    marks: list[JSONObject] = [{"event": "request", "ms": 0.0}]
    for name, label in MILESTONES:
        elapsed = timings.since_opened(getattr(timings, name))
        if elapsed is not None:
            marks.append({"event": label, "ms": round(elapsed * 1000, 2)})
    return marks


class Inspector(TurnObserver):
    """Keeps the last ``capacity`` turns of this node.

    Args:
        capacity: turns kept; the oldest go first.
    """

    def __init__(self, capacity: int = 500) -> None:
        self.capacity = capacity
        self._turns: OrderedDict[str, TurnView] = OrderedDict()

    def turn_started(self, turn: Turn) -> None:
        plan = turn.plan
        parent_id = plan.request.previous_response_id
        parent = self._turns.get(parent_id) if parent_id is not None else None
        chain = parent.chain if parent is not None else (parent_id or plan.response_id)
        view = TurnView(
            response_id=plan.response_id,
            tenant=plan.tenant,
            chain=chain,
            previous_response_id=parent_id,
            created_at=plan.created_at,
            model=plan.request.model,
            route=plan.route,
            provider=turn.provider.name,
            transport=plan.origin.transport,
            resolution=plan.resolution.value,
            lane=plan.lane,
            new_items=len(plan.request.input),
            context_items=len(plan.sampled),
            bytes_sent=plan.origin.request_bytes,
            bytes_stateless=stateless_size(
                sent_params(plan.request, plan.params), len(plan.sampled), plan.sampled.json_bytes
            ),
        )
        self._turns[plan.response_id] = view
        while len(self._turns) > self.capacity:
            self._turns.popitem(last=False)

    def turn_finished(self, turn: Turn) -> None:
        view = self._turns.get(turn.plan.response_id)
        if view is None:
            return
        usage = turn.stream.response["usage"]
        view.outcome = turn_outcome(turn)
        view.input_tokens = usage["input_tokens"] if usage else None
        view.output_tokens = usage["output_tokens"] if usage else None
        view.timeline = timeline(turn.timings)
        view.deltas = turn.timings.deltas
        view.error_code = turn.failed.code if turn.failed is not None else None

    def resumed(self, response_id: str) -> None:
        view = self._turns.get(response_id)
        if view is not None:
            view.resumes += 1
            view.timeline.append({"event": "resumed", "ms": None})

    def snapshot(self, *, chains_per_tenant: int = 20) -> JSONObject:
        """Per tenant, its most recently active chains (newest first), each with its turns in order."""
        tenants: dict[str, OrderedDict[str, list[TurnView]]] = {}
        for view in self._turns.values():
            chains = tenants.setdefault(view.tenant, OrderedDict())
            chains.setdefault(view.chain, []).append(view)
            chains.move_to_end(view.chain)
        result: dict[str, Any] = {}
        for tenant in sorted(tenants):
            recent = list(tenants[tenant].items())[::-1][:chains_per_tenant]
            result[tenant] = [
                {
                    "chain": chain,
                    "turns": [view.to_json() for view in views],
                    "bytes_sent": sum(view.bytes_sent for view in views),
                    "bytes_saved": sum(view.bytes_saved for view in views),
                    "output_tokens": sum(view.output_tokens or 0 for view in views),
                }
                for chain, views in recent
            ]
        return {"tenants": result, "turns": len(self._turns)}
