"""Feeding the audit log: every stored turn, every delete and purge, and start-ups with a changed set of API keys.

Entries carry who (tenant, key id: a fingerprint, never the key), when, the route and provider, the content hashes
of the input and output items (the store's own item addresses), usage and outcome. Content is included only when
the operator opts in (``audit_content``). A failed write is logged and never fails the turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog

from tether.audit.chain import SYSTEM_CHAIN
from tether.audit.log import AuditLog, timestamp
from tether.engine.observer import TurnObserver, turn_outcome
from tether.engine.turn import Turn
from tether.server.auth import Identity
from tether.types import JSONObject

_log = structlog.get_logger("tether.audit")


def audit_directory(configured: Path | None, store_url: str) -> Path | None:
    """The configured directory, else ``audit/`` beside a SQLite database; ``None`` (off) for other stores."""
    if configured is not None:
        return configured
    if store_url.startswith("sqlite:///"):
        return Path(store_url.removeprefix("sqlite:///")).parent / "audit"
    return None


class Auditor(TurnObserver):
    """Writes audit entries for the server."""

    def __init__(self, log: AuditLog, *, content: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.log = log
        self.content = content
        self.clock = clock

    def turn_finished(self, turn: Turn) -> None:
        plan = turn.plan
        if not plan.request.store or turn.timings.committed is None:
            return  # only what the store holds is audited: store=false and cancelled turns are not stored
        entry: JSONObject = {
            "kind": "turn",
            "tenant": plan.tenant,
            "key_id": plan.origin.key_id,
            "time": timestamp(self.clock()),
            "response_id": plan.response_id,
            "previous_response_id": plan.request.previous_response_id,
            "transport": plan.origin.transport,
            "route": plan.route,
            "provider": turn.provider.name,
            "model": plan.request.model,
            "input_hashes": [p.digest for p in plan.new_prints],
            "output_hashes": [p.digest for p in turn.output_prints],
            "usage": turn.stream.response.get("usage"),
            "outcome": turn_outcome(turn),
            "error_code": turn.failed.code if turn.failed is not None else None,
        }
        if self.content:
            entry["input"] = list(plan.request.input)
            entry["output"] = list(turn.stream.output)
        self._append(entry)

    def deleted(self, identity: Identity, response_id: str) -> None:
        self._append(self._act("delete", identity, response_id=response_id))

    def purged(self, removed: int) -> None:
        self._append(
            {"kind": "purge", "tenant": None, "key_id": None, "time": timestamp(self.clock()), "removed": removed}
        )

    def started(self, key_ids: list[str]) -> None:
        """Record a start-up whose set of API keys differs from the last recorded one (or the first start-up)."""
        last = self.log.last_of_kind(SYSTEM_CHAIN, "startup")
        if last is not None and last.get("key_ids") == key_ids:
            return
        previous = set(last.get("key_ids", [])) if last is not None else set()
        self._append(
            {
                "kind": "startup",
                "tenant": None,
                "key_id": None,
                "time": timestamp(self.clock()),
                "key_ids": key_ids,
                "added": sorted(set(key_ids) - previous),
                "removed": sorted(previous - set(key_ids)),
            }
        )

    def _act(self, kind: str, identity: Identity, **fields: object) -> JSONObject:
        return {
            "kind": kind,
            "tenant": identity.tenant,
            "key_id": identity.key_id,
            "time": timestamp(self.clock()),
            **fields,
        }

    def _append(self, entry: JSONObject) -> None:
        try:
            self.log.append(entry)
        except OSError as error:
            _log.error("audit.write_failed", kind=entry.get("kind"), error=str(error))
