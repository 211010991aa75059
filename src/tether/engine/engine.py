"""The transport-neutral engine: resolves context, runs turns, commits them, answers reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from tether.engine.cache import CachedResponse, ConnectionState, HotCache
from tether.engine.context import Context
from tether.engine.turn import Turn, TurnPlan
from tether.protocol import ids
from tether.protocol.compaction import compaction_item
from tether.protocol.errors import ProtocolError, invalid, previous_response_not_found, response_not_found
from tether.protocol.items import estimate_tokens, fingerprint, input_item_id, listed_input_item
from tether.protocol.lanes import Lane
from tether.protocol.model_events import Usage
from tether.protocol.request import CreateRequest
from tether.protocol.response import response_object
from tether.protocol.stream import ResponseStream
from tether.providers.router import ProviderRouter
from tether.store.base import ResponseRecord, Store
from tether.types import Event, Item, JSONObject

_log = structlog.get_logger("tether.engine")


@dataclass(frozen=True, slots=True)
class EngineLimits:
    response_ttl_s: float | None = 30 * 24 * 3600.0
    snapshot_every: int = 32
    hot_cache_size: int = 10_000


class Engine:
    """Runs turns for every transport.

    Args:
        store: the durable store (``store=true`` responses).
        router: chooses the provider of each model.
        limits: TTL, snapshot interval and hot-cache size.
        clock: unix time, injectable for tests.
    """

    def __init__(
        self,
        store: Store,
        router: ProviderRouter,
        limits: EngineLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.router = router
        self.limits = limits or EngineLimits()
        self.clock = clock
        self.hot = HotCache(self.limits.hot_cache_size)

    # -- turns ---------------------------------------------------------------------------------------------

    async def open_turn(
        self,
        request: CreateRequest,
        *,
        tenant: str,
        connection: ConnectionState | None = None,
        lane: Lane = None,
    ) -> Turn:
        """Resolve and validate a request; the returned turn is ready to stream.

        Raises:
            ProtocolError: ``previous_response_not_found``, an orphan ``function_call_output`` and the like. A
                failed continuation evicts the id it referenced from the lane's cache.
        """
        try:
            parent = await self._resolve_parent(request, tenant, connection)
            base = parent.context if parent else Context()
            _check_call_ids(base, request.input)
        except ProtocolError:
            self._evict(request, connection, lane)
            raise
        provider = self.router.resolve(request.model)
        prints = [fingerprint(item) for item in request.input]
        plan = TurnPlan(
            request=request,
            tenant=tenant,
            lane=lane,
            response_id=ids.response_id(),
            parent=parent,
            sampled=base.extend(request.input, prints),
            new_prints=prints,
            input_ids=[input_item_id(item) for item in request.input],
            created_at=int(self.clock()),
            lane_key=f"{connection.id}/{lane or ''}" if connection is not None else None,
        )
        response = response_object(
            response_id=plan.response_id,
            created_at=plan.created_at,
            status="in_progress",
            model=request.model,
            params=request.forwarded_params(),
            output=[],
            previous_response_id=request.previous_response_id,
            store=request.store,
        )
        stream = ResponseStream(response, stream_id=lane)

        async def commit(turn: Turn, whole: Context | None) -> None:
            await self._commit(turn, whole, connection)

        return Turn(plan, provider, stream, commit)

    async def _resolve_parent(
        self, request: CreateRequest, tenant: str, connection: ConnectionState | None
    ) -> CachedResponse | None:
        parent_id = request.previous_response_id
        if parent_id is None:
            return None
        if connection is not None:
            entry = connection.find(parent_id)
            if entry is not None:
                return entry
        entry = self.hot.get(tenant, parent_id)
        if entry is not None:
            return entry
        record = await self.store.get(tenant, parent_id)
        if record is None or record.status not in ("completed", "incomplete"):
            raise previous_response_not_found(parent_id)
        stored = await self.store.load_context(tenant, parent_id)
        if stored is None:
            raise previous_response_not_found(parent_id)
        entry = CachedResponse(parent_id, Context.from_items(stored.items), record.depth, store=True)
        self.hot.put(tenant, entry)
        return entry

    def _evict(self, request: CreateRequest, connection: ConnectionState | None, lane: Lane) -> None:
        parent_id = request.previous_response_id
        if connection is not None and parent_id is not None and connection.evict(lane, parent_id):
            _log.info("lane.evicted", response_id=parent_id, lane=lane)

    async def _commit(self, turn: Turn, whole: Context | None, connection: ConnectionState | None) -> None:
        plan = turn.plan
        request = plan.request
        if turn.failed is not None:
            self._evict(request, connection, plan.lane)
        if whole is not None:
            entry = CachedResponse(plan.response_id, whole, plan.parent.depth + 1 if plan.parent else 0, request.store)
            if connection is not None:
                connection.remember(plan.lane, entry)
            self.hot.put(plan.tenant, entry)
        if request.store:
            depth = plan.parent.depth + 1 if plan.parent else 0
            snapshot = whole.hashes() if whole is not None and depth % self.limits.snapshot_every == 0 else None
            ttl = self.limits.response_ttl_s
            await self.store.put(turn.record(self.clock() + ttl if ttl else None, snapshot))

    # -- reads ---------------------------------------------------------------------------------------------

    async def get_record(self, tenant: str, response_id: str) -> ResponseRecord:
        record = await self.store.get(tenant, response_id)
        if record is None:
            raise response_not_found(response_id)
        return record

    async def get_response(self, tenant: str, response_id: str) -> JSONObject:
        return response_from_record(await self.get_record(tenant, response_id))

    async def replay(self, tenant: str, response_id: str, starting_after: int | None) -> list[Event]:
        """The stored stream log of a response, after sequence number ``starting_after``."""
        record = await self.get_record(tenant, response_id)
        after = -1 if starting_after is None else starting_after
        return [event for event in record.events if event["sequence_number"] > after]

    async def delete_response(self, tenant: str, response_id: str) -> JSONObject:
        if not await self.store.delete(tenant, response_id):
            raise response_not_found(response_id)
        self.hot.discard(tenant, response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def list_input_items(
        self, tenant: str, response_id: str, *, after: str | None, limit: int, order: str
    ) -> JSONObject:
        """The response's input items, paged as ``GET /v1/responses/{id}/input_items``."""
        if not 1 <= limit <= 100:
            raise invalid("invalid_value", "'limit' must be between 1 and 100.", "limit")
        if order not in ("asc", "desc"):
            raise invalid("invalid_value", "'order' must be 'asc' or 'desc'.", "order")
        record = await self.get_record(tenant, response_id)
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

    async def resolve_context(self, request: CreateRequest, tenant: str) -> Context:
        """The context a request would sample from (no lane: HTTP semantics)."""
        parent = await self._resolve_parent(request, tenant, None)
        base = parent.context if parent else Context()
        _check_call_ids(base, request.input)
        return base.extend(request.input, [fingerprint(item) for item in request.input])

    async def count_input_tokens(self, request: CreateRequest, *, tenant: str) -> int:
        context = await self.resolve_context(request, tenant)
        return context.tokens + (estimate_tokens(request.instructions) if request.instructions else 0)

    async def compact(self, request: CreateRequest, *, tenant: str) -> JSONObject:
        """Answer ``POST /v1/responses/compact``: the compacted window of a context."""
        context = await self.resolve_context(request, tenant)
        tokens = context.tokens
        usage = Usage(input_tokens=tokens, output_tokens=0, cached_tokens=0, cache_write_tokens=tokens)
        return {
            "id": ids.new_id("cmp"),
            "object": "response.compaction",
            "created_at": int(self.clock()),
            "output": [compaction_item(list(context.items))],
            "usage": usage.to_json(),
        }

    async def aclose(self) -> None:
        await self.router.aclose()
        await self.store.close()


def response_from_record(record: ResponseRecord) -> JSONObject:
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


def _check_call_ids(base: Context, items: list[Item]) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        kind = item.get("type")
        if kind == "function_call":
            seen.add(item["call_id"])
        elif kind == "function_call_output":
            call_id = item["call_id"]
            if call_id not in seen and not base.has_function_call(call_id):
                raise ProtocolError(
                    400,
                    "function_call_not_found",
                    f"No tool call found for function call output with call_id '{call_id}'.",
                    param=f"input[{index}].call_id",
                )
