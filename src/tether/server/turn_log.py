"""One log line per turn, and one per rejected request: what an operator needs, never content or secrets.

Message content (input and output items) is logged only when the operator opts in (``log_content``).
"""

from __future__ import annotations

from typing import Any

import structlog

from tether.engine.observer import TurnObserver, TurnOrigin, turn_outcome
from tether.engine.turn import Turn
from tether.protocol.errors import ProtocolError
from tether.protocol.request import CreateRequest

_log = structlog.get_logger("tether.turn")


class TurnLog(TurnObserver):
    """Logs ``turn.done`` for every turn and ``turn.rejected`` for requests refused before they started."""

    def __init__(self, *, log_content: bool = False) -> None:
        self.log_content = log_content

    def turn_finished(self, turn: Turn) -> None:
        plan, timings = turn.plan, turn.timings
        outcome = turn_outcome(turn)
        usage = turn.stream.response["usage"]
        fields: dict[str, Any] = {
            "response_id": plan.response_id,
            "transport": plan.origin.transport,
            "route": plan.route,
            "provider": turn.provider.name,
            "model": plan.request.model,
            "lane": plan.lane,
            "resolution": plan.resolution.value,
            "outcome": outcome,
            "input_tokens": usage["input_tokens"] if usage else None,
            "output_tokens": usage["output_tokens"] if usage else None,
            "new_items": len(plan.request.input),
            "context_items": len(plan.sampled),
            "latency_s": _seconds(timings.since_opened(timings.ended)),
            "ttft_s": _seconds(timings.since_opened(timings.first_token)),
        }
        if plan.origin.key_id is not None:
            fields["key_id"] = plan.origin.key_id
        error = turn.stream.response["error"]
        if turn.failed is not None:
            fields["code"], fields["reason"] = turn.failed.code, turn.failed.message
        elif outcome == "cancelled":
            fields["code"], fields["reason"] = "cancelled", "the turn was cancelled before it finished"
        elif error is not None:
            fields["code"], fields["reason"] = error["code"], error["message"]
        if outcome == "incomplete":
            details = turn.stream.response["incomplete_details"]
            fields["reason"] = details["reason"] if details else None
        if self.log_content:
            fields["input_items"] = list(plan.request.input)
            fields["output_items"] = list(turn.stream.output)
        if outcome in ("completed", "incomplete"):
            _log.info("turn.done", **fields)
        else:
            _log.warning("turn.done", **fields)

    def turn_rejected(
        self, request: CreateRequest, origin: TurnOrigin, error: ProtocolError, *, route: str, provider: str
    ) -> None:
        _log.warning(
            "turn.rejected",
            transport=origin.transport,
            route=route,
            provider=provider,
            model=request.model,
            status=error.status,
            code=error.code,
            param=error.param,
        )


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
