"""Idempotency: a turn retried with the same ``tether:idempotency_key`` is answered from its log, never regenerated.

The key is scoped to the tenant. A live response is followed where it is (the retry sees the events the first attempt
is still producing); a finished stored one is replayed from the events the store kept with it.
"""

from __future__ import annotations

import structlog

from tether.engine.live import LiveRegistry, LiveResponse
from tether.engine.stream_log import StreamLog, from_stored
from tether.store.base import Store

_log = structlog.get_logger("tether.engine")


async def find_turn(live: LiveRegistry, store: Store, tenant: str, key: str) -> LiveResponse | None:
    """The turn this tenant already started with ``key``: live first, then the durable store; ``None`` if new."""
    running = live.by_idempotency_key(tenant, key)
    if running is not None:
        _log.info("turn.idempotent_replay", response_id=running.response_id, source="live")
        return running
    record = await store.find_by_idempotency_key(tenant, key)
    if record is None:
        return None
    _log.info("turn.idempotent_replay", response_id=record.id, source="store")
    return LiveResponse(
        record.id, tenant, True, StreamLog(from_stored(record.events), closed=True), idempotency_key=key
    )
