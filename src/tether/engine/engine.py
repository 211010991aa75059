"""The transport-neutral engine: resolves context, runs turns, commits them, answers reads."""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog

from tether.engine.cache import CachedResponse, ConnectionState, HotCache
from tether.engine.context import Context
from tether.engine.live import LiveRegistry, LiveResponse, StreamLog
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

RESUME_TOKEN_FIELD = "tether:resume_token"


@dataclass(slots=True)
class EngineStats:
    """Counters for metrics and tests: generations actually run, and turns answered without generating."""

    generations: int = 0
    idempotent_replays: int = 0
    resumes: int = 0


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Engine policy.

    Attributes:
        resume_grace_s: how long a finished response stays attachable from memory (``store=false`` responses can
            only be resumed, with their resume token, within this window).
        continue_on_disconnect: keep generating when every client following a response has gone.
        shutdown_grace_s: on shutdown, how long in-flight generations may take to finish.
    """

    response_ttl_s: float | None = 30 * 24 * 3600.0
    snapshot_every: int = 32
    hot_cache_size: int = 10_000
    resume_grace_s: float = 120.0
    continue_on_disconnect: bool = True
    shutdown_grace_s: float = 30.0


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
        self.live = LiveRegistry(self.limits.resume_grace_s)
        self.stats = EngineStats()
        self._connections: weakref.WeakSet[ConnectionState] = weakref.WeakSet()

    def connect(self, tenant: str) -> ConnectionState:
        """The state of a new client connection (its lanes' latest responses)."""
        connection = ConnectionState(tenant)
        self._connections.add(connection)
        return connection

    # -- turns ---------------------------------------------------------------------------------------------

    async def create(
        self,
        request: CreateRequest,
        *,
        tenant: str,
        connection: ConnectionState | None = None,
        lane: Lane = None,
    ) -> LiveResponse:
        """Start a turn, or find the one this idempotency key already started, and return it to follow.

        Raises:
            ProtocolError: as :meth:`open_turn`.
        """
        key = request.idempotency_key
        if key is not None:
            existing = await self._by_idempotency_key(tenant, key)
            if existing is not None:
                return existing
        turn = await self.open_turn(request, tenant=tenant, connection=connection, lane=lane)
        if key is not None:  # another request with the key may have started while this one was resolving
            raced = self.live.by_idempotency_key(tenant, key)
            if raced is not None:
                self.stats.idempotent_replays += 1
                return raced
        return self.launch(turn)

    async def _by_idempotency_key(self, tenant: str, key: str) -> LiveResponse | None:
        live = self.live.by_idempotency_key(tenant, key)
        if live is not None:
            self.stats.idempotent_replays += 1
            _log.info("turn.idempotent_replay", response_id=live.response_id, source="live")
            return live
        record = await self.store.find_by_idempotency_key(tenant, key)
        if record is None:
            return None
        self.stats.idempotent_replays += 1
        _log.info("turn.idempotent_replay", response_id=record.id, source="store")
        return LiveResponse(record.id, tenant, True, StreamLog(record.events, closed=True), idempotency_key=key)

    def launch(self, turn: Turn) -> LiveResponse:
        """Run a turn as an engine-owned task: it goes on whether or not anyone follows it."""
        plan = turn.plan
        live = LiveResponse(
            plan.response_id,
            plan.tenant,
            plan.request.store,
            turn.log,
            resume_token=turn.resume_token,
            idempotency_key=plan.request.idempotency_key,
        )
        self.live.add(live)
        self.stats.generations += 1
        live.task = asyncio.create_task(self._generate(turn, live), name=f"turn-{plan.response_id}")
        return live

    async def _generate(self, turn: Turn, live: LiveResponse) -> None:
        try:
            await turn.run()
        finally:
            self.live.finished(live)

    async def follow(self, live: LiveResponse, after: int = -1) -> AsyncIterator[Event]:
        """Yield a response's events after ``after``; the last follower leaving may cancel the generation."""
        live.followers += 1
        try:
            async for event in live.log.follow(after):
                yield event
        finally:
            live.followers -= 1
            if not live.done and live.followers == 0 and not self.limits.continue_on_disconnect and live.task:
                live.task.cancel()

    async def attach(
        self, tenant: str, response_id: str, *, after: int | None, resume_token: str | None = None
    ) -> LiveResponse:
        """Find a response to resume: live (``store=false`` needs its resume token), else from the durable store.

        Raises:
            ProtocolError: ``response_not_found`` for unknown, expired, another tenant's, or token-less ids.
        """
        live = self.live.get(response_id)
        if live is not None and live.allows(tenant, resume_token):
            self.stats.resumes += 1
            return live
        record = await self.store.get(tenant, response_id)
        if record is None:
            raise response_not_found(response_id)
        self.stats.resumes += 1
        return LiveResponse(record.id, tenant, True, StreamLog(record.events, closed=True))

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
            if parent is not None and request.inherit_params:
                request = request.inheriting(parent.params)
            base = parent.context if parent else Context()
            prints = [fingerprint(item) for item in request.input]
            sampled = base.extend(request.input, prints)
            _check_call_ids(sampled, request.input)
        except ProtocolError:
            self._evict(request, connection, lane)
            raise
        provider = self.router.resolve(request.model)
        plan = TurnPlan(
            request=request,
            tenant=tenant,
            lane=lane,
            response_id=ids.response_id(),
            parent=parent,
            sampled=sampled,
            new_prints=prints,
            input_ids=[input_item_id(item) for item in request.input],
            created_at=int(self.clock()),
            params=request.forwarded_params(),
            lane_key=f"{connection.id}/{lane or ''}" if connection is not None else None,
        )
        response = response_object(
            response_id=plan.response_id,
            created_at=plan.created_at,
            status="in_progress",
            model=request.model,
            params=plan.params,
            output=[],
            previous_response_id=request.previous_response_id,
            store=request.store,
        )
        resume_token = secrets.token_urlsafe(24)
        response[RESUME_TOKEN_FIELD] = resume_token
        stream = ResponseStream(response, stream_id=lane)

        async def commit(turn: Turn, whole: Context | None) -> None:
            await self._commit(turn, whole, connection)

        return Turn(plan, provider, stream, commit, resume_token)

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
        entry = CachedResponse(
            parent_id, Context.from_items(stored.items), record.depth, store=True, params=record.params
        )
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
        depth = plan.depth
        if whole is not None:
            entry = CachedResponse(plan.response_id, whole, depth, request.store, plan.params)
            if connection is not None:
                connection.remember(plan.lane, entry)
            self.hot.put(plan.tenant, entry)
        if request.store:
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

    async def delete_response(self, tenant: str, response_id: str) -> JSONObject:
        if not await self.store.delete(tenant, response_id):
            raise response_not_found(response_id)
        self.hot.discard(tenant, response_id)
        for connection in list(self._connections):
            if connection.tenant == tenant:
                connection.forget(response_id)
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
        sampled = base.extend(request.input, [fingerprint(item) for item in request.input])
        _check_call_ids(sampled, request.input)
        return sampled

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
        """Let in-flight generations finish (up to the shutdown grace), then close providers and the store."""
        tasks = [live.task for live in self.live.running() if live.task is not None]
        if tasks:
            _log.info("engine.draining", in_flight=len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=self.limits.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
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


def _check_call_ids(sampled: Context, items: list[Item]) -> None:
    """Every function_call_output of the new items answers a function_call that comes before it in the context."""
    first = len(sampled) - len(items)
    for index, item in enumerate(items):
        if item.get("type") == "function_call_output":
            call_id = item["call_id"]
            if not sampled.has_function_call(call_id, before=first + index):
                raise ProtocolError(
                    400,
                    "function_call_not_found",
                    f"No tool call found for function call output with call_id '{call_id}'.",
                    param=f"input[{index}].call_id",
                )
