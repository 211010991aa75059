"""Continuation: how ``previous_response_id`` resolves to a context, and what a turn leaves for the next one.

The rules (design.md, "Continuation rules"):

1. ``previous_response_id`` resolves in this order: the lane's cache on this connection, the node's hot cache
   (``store=true`` only), the durable store (``store=true`` only). A miss is ``previous_response_not_found``, and so
   is another tenant's response.
2. ``store=false`` state lives only in its connection (it never enters the hot cache or the store).
3. A continuation that fails evicts the id it referenced from the lane's cache.
4. Every ``function_call_output`` answers a ``function_call`` that comes before it in the context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from tether.engine.cache import CachedResponse, ConnectionState, HotCache
from tether.engine.context import Context
from tether.engine.observer import Resolution
from tether.protocol.errors import ProtocolError, previous_response_not_found
from tether.protocol.input_items import as_function_call_output
from tether.protocol.items import Fingerprint, fingerprints
from tether.protocol.lanes import Lane
from tether.protocol.request import CreateRequest
from tether.store.base import Store
from tether.types import Item

_log = structlog.get_logger("tether.engine")

# Hashing more new items than this would hold the event loop long enough to stall every other connection (a
# 10,000-item request takes ~0.3 s on a loaded core), so a worker thread hashes them; fewer cost nothing extra.
OFF_LOOP_ITEMS = 256


async def input_fingerprints(items: Sequence[Item]) -> list[Fingerprint]:
    """The fingerprints of a request's new items, hashed off the event loop when there are many."""
    if len(items) > OFF_LOOP_ITEMS:
        return await asyncio.to_thread(fingerprints, items)
    return fingerprints(items)


CONTINUABLE_STATUSES = frozenset({"completed", "incomplete"})


@dataclass(frozen=True, slots=True)
class Resolved:
    """A request resolved against its parent: what the turn samples from."""

    request: CreateRequest  # with inherited parameters filled in (``tether:inherit_params``)
    parent: CachedResponse | None
    sampled: Context
    new_prints: list[Fingerprint]
    resolution: Resolution  # where the parent was found, or that there is none
    queued_upstream: int = 0  # leading input items that are steering input the upstream holds for the parent


class Continuations:
    """Resolves requests to contexts and remembers finished responses for the next turn.

    Args:
        store: the durable store (read for ``store=true`` parents missing from memory).
        hot: the node-wide cache of ``store=true`` contexts.
        coherent: in a cluster, ask the store whether a cached ``store=true`` parent still exists (another node
            may have deleted it; an invalidation message could be late or lost, this one-row read cannot).
    """

    def __init__(self, store: Store, hot: HotCache, *, coherent: bool = False) -> None:
        self.store = store
        self.hot = hot
        self.coherent = coherent

    async def resolve(
        self, request: CreateRequest, tenant: str, connection: ConnectionState | None, lane: Lane
    ) -> Resolved:
        """Resolve the parent, inherit its parameters if asked, and build the context the turn samples from.

        Raises:
            ProtocolError: ``previous_response_not_found`` or ``function_call_not_found``; either evicts the
                referenced id from the lane's cache first (rule 3).
        """
        held: list[Item] = []
        try:
            parent, resolution = await self.parent(request, tenant, connection)
            if parent is not None and request.inherit_params:
                request = request.inheriting(parent.params)
            if parent is not None and connection is not None:
                # Steering input pending for this parent's tool output (response.steer.pending) goes first, as
                # the upstream prepends it: tether's context is the one the upstream samples from.
                held = connection.held_steering(lane, parent.response_id)
                if held:
                    request = request.model_copy(update={"input": [*held, *request.input]})
            base = parent.context if parent else Context()
            prints = await input_fingerprints(request.input)
            sampled = base.extend(request.input, prints)
            check_call_ids(sampled, request.input)
        except ProtocolError:
            self.evict(request, connection, lane)
            raise
        if held and connection is not None:
            connection.drop_steering(lane)
        return Resolved(request, parent, sampled, prints, resolution, queued_upstream=len(held))

    async def parent(
        self, request: CreateRequest, tenant: str, connection: ConnectionState | None
    ) -> tuple[CachedResponse | None, Resolution]:
        """The response ``previous_response_id`` names: lane cache, then hot cache, then the durable store."""
        parent_id = request.previous_response_id
        if parent_id is None:
            return None, Resolution.NEW_CHAIN
        if connection is not None:
            entry = connection.find(parent_id)
            if entry is not None:
                await self._check_visible(tenant, entry, connection)
                return entry, Resolution.LANE
        entry = self.hot.get(tenant, parent_id)
        if entry is not None:
            await self._check_visible(tenant, entry, connection)
            return entry, Resolution.HOT_CACHE
        record = await self.store.get(tenant, parent_id)
        if record is None or record.status not in CONTINUABLE_STATUSES:
            raise previous_response_not_found(parent_id)
        stored = await self.store.load_context(tenant, parent_id)
        if stored is None:
            raise previous_response_not_found(parent_id)
        entry = CachedResponse(
            parent_id, Context.from_items(stored.items), record.depth, store=True, params=record.params
        )
        self.hot.put(tenant, entry)
        return entry, Resolution.STORE

    async def _check_visible(self, tenant: str, entry: CachedResponse, connection: ConnectionState | None) -> None:
        if not (self.coherent and entry.store) or await self.store.is_visible(tenant, entry.response_id):
            return
        self.hot.discard(tenant, entry.response_id)
        if connection is not None:
            connection.forget(entry.response_id)
        _log.info("cache.invalidated", response_id=entry.response_id)
        raise previous_response_not_found(entry.response_id)

    async def context(self, request: CreateRequest, tenant: str) -> Context:
        """The context a request would sample from, without a connection (HTTP semantics, nothing evicted)."""
        parent, _ = await self.parent(request, tenant, None)
        base = parent.context if parent else Context()
        sampled = base.extend(request.input, await input_fingerprints(request.input))
        check_call_ids(sampled, request.input)
        return sampled

    def evict(self, request: CreateRequest, connection: ConnectionState | None, lane: Lane) -> None:
        """Forget the parent a failed continuation referenced, if it is the lane's latest response (rule 3)."""
        parent_id = request.previous_response_id
        if connection is not None and parent_id is not None and connection.evict(lane, parent_id):
            _log.info("lane.evicted", response_id=parent_id, lane=lane)

    def remember(self, tenant: str, connection: ConnectionState | None, lane: Lane, entry: CachedResponse) -> None:
        """Make a finished response continuable: the lane's latest, and hot when ``store=true`` (rule 2)."""
        if connection is not None:
            connection.remember(lane, entry)
        self.hot.put(tenant, entry)


def check_call_ids(sampled: Context, items: list[Item]) -> None:
    """Every function_call_output of the new items answers a function_call that comes before it in the context."""
    first = len(sampled) - len(items)
    for index, item in enumerate(items):
        output = as_function_call_output(item)
        if output is not None:
            call_id = output["call_id"]
            if not sampled.has_function_call(call_id, before=first + index):
                raise ProtocolError(
                    400,
                    "function_call_not_found",
                    f"No tool call found for function call output with call_id '{call_id}'.",
                    param=f"input[{index}].call_id",
                )
