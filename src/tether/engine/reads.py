"""Reads: the routes that answer from state without running a turn (get, delete, input items, counts, compact)."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from tether.engine.cache import ConnectionState, HotCache
from tether.engine.continuation import Continuations
from tether.engine.shared_turns import SharedTurns
from tether.protocol import ids
from tether.protocol.compaction import compaction_item
from tether.protocol.errors import ProtocolError, invalid, response_in_progress, response_not_found
from tether.protocol.events import ResponseObject
from tether.protocol.items import estimate_tokens, listed_input_item
from tether.protocol.model_events import Usage
from tether.protocol.progress import response_so_far
from tether.protocol.request import CreateRequest
from tether.protocol.response import response_object
from tether.store.base import ResponseRecord, Store
from tether.types import JSONObject

IN_FLIGHT = ("queued", "in_progress")


class Reads:
    """Answers the read routes of the Responses API.

    Args:
        store: the durable store.
        hot: the hot cache (a deleted response leaves it).
        connections: the open connections (a deleted response leaves their lanes too).
        continuations: resolves a request's context for counting and compacting.
        clock: unix time.
        shared: the responses in flight, on this node (its live registry) and on others.
    """

    def __init__(
        self,
        store: Store,
        hot: HotCache,
        connections: weakref.WeakSet[ConnectionState],
        continuations: Continuations,
        clock: Callable[[], float],
        shared: SharedTurns,
    ) -> None:
        self.store = store
        self.shared = shared
        self.hot = hot
        self.connections = connections
        self.continuations = continuations
        self.clock = clock

    async def record(self, tenant: str, response_id: str) -> ResponseRecord:
        record = await self.store.get(tenant, response_id)
        if record is None:
            raise response_not_found(response_id)
        return record

    async def response(self, tenant: str, response_id: str, *, any_in_flight: bool = False) -> ResponseObject:
        """A stored response as committed; a background one also while it is in flight (on any node), as far as it
        has gone, and as interrupted if its node died. Others are found once committed, unless ``any_in_flight``."""
        running = self.shared.live.get(response_id)
        if running is not None and running.store and running.tenant == tenant and not running.done:
            snapshot = _shown(response_so_far(running.log.events), any_in_flight)
            if snapshot is not None:
                return snapshot
        record = await self.store.get(tenant, response_id)
        if record is not None:
            return response_from_record(record)
        events = await self.shared.in_flight(tenant, response_id)
        snapshot = None if events is None else _shown(response_so_far(events), any_in_flight)
        if snapshot is None:
            raise response_not_found(response_id)
        return snapshot

    async def delete(self, tenant: str, response_id: str) -> JSONObject:
        """Delete a stored response. One that ``GET`` shows still in flight (a background response, on any node) is
        refused with ``409 response_in_progress``, not ``404``: it would be stored when it ends, deleted or not."""
        if not await self.store.delete(tenant, response_id):
            try:
                shown = await self.response(tenant, response_id)
            except ProtocolError:
                raise response_not_found(response_id) from None
            if shown.get("status") in IN_FLIGHT:
                raise response_in_progress(response_id)
            if not await self.store.delete(tenant, response_id):  # it ended, and was committed, in between
                raise response_not_found(response_id)
        # Its finished log stays in memory for the resume grace: neither a resume nor a retry may read it now.
        self.shared.live.forget(response_id)
        self.hot.discard(tenant, response_id)
        for connection in list(self.connections):
            if connection.tenant == tenant:
                connection.forget(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(
        self, tenant: str, response_id: str, *, after: str | None, limit: int, order: str
    ) -> JSONObject:
        """The response's input items, paged as ``GET /v1/responses/{id}/input_items``."""
        if not 1 <= limit <= 100:
            raise invalid("invalid_value", "'limit' must be between 1 and 100.", "limit")
        if order not in ("asc", "desc"):
            raise invalid("invalid_value", "'order' must be 'asc' or 'desc'.", "order")
        record = await self.record(tenant, response_id)
        items = [
            listed_input_item(item, item_id) for item, item_id in zip(record.input_items, record.input_ids, strict=True)
        ]
        if order == "desc":
            items.reverse()
        if after is not None:
            positions = [index for index, item in enumerate(items) if item["id"] == after]
            if not positions:
                raise invalid("invalid_value", f"No input item with id '{after}' in this response.", "after")
            items = items[positions[0] + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    async def input_tokens(self, request: CreateRequest, tenant: str) -> int:
        context = await self.continuations.context(request, tenant)
        return context.tokens + (estimate_tokens(request.instructions) if request.instructions else 0)

    async def compact(self, request: CreateRequest, tenant: str) -> JSONObject:
        """Answer ``POST /v1/responses/compact``: the compacted window of a context."""
        context = await self.continuations.context(request, tenant)
        tokens = context.tokens
        usage = Usage(input_tokens=tokens, output_tokens=0, cached_tokens=0, cache_write_tokens=tokens)
        return {
            "id": ids.new_id("cmp"),
            "object": "response.compaction",
            "created_at": int(self.clock()),
            "output": [compaction_item(list(context.items))],
            "usage": usage.to_json(),
        }


def _shown(snapshot: ResponseObject | None, any_in_flight: bool) -> ResponseObject | None:
    return snapshot if snapshot is not None and (any_in_flight or snapshot["background"]) else None


def response_from_record(record: ResponseRecord) -> ResponseObject:
    return response_object(
        response_id=record.id,
        created_at=record.created_at,
        status=record.status,
        model=record.model,
        params=record.params,
        output=record.output_items,
        previous_response_id=record.parent_id,
        store=True,
        usage=record.usage,
        error=record.error,
        incomplete_details=record.incomplete_details,
        completed_at=record.completed_at,
    )
