"""What the gateway holds for its edges: every request it rebuilt, and every large part of it, by content hash.

Two tiers. In memory, values are kept as the parsed JSON trees the deltas rebuilt: a request shares the unchanged
subtrees of its base, so a chain of requests costs memory for its new content only; bounded by bytes, least recently
used first. In the store (``Store.put_edge_blobs``), each value is kept in *shallow* form (its large children as
references, :func:`tether.protocol.delta.shallow`), so a chain stores each large part once, until ``ttl_s`` after
it was last held: a restarted gateway, or any other node of a cluster, rebuilds a base or a reference from there.

A request whose body says ``"store": false`` stays in this node's memory only (zero data retention: see
``docs/edge.md``). A value missing from both tiers costs the edge one heal (a whole request), never a wrong answer;
so does a store that cannot be reached (the turn goes on from memory).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import structlog

from tether.protocol.delta import MISSING, DeltaError, apply, dumps, large_values, references, shallow, value_hash
from tether.store.base import Store

_log = structlog.get_logger("tether.server.edge")

_MAX_ROUNDS = 64
"""Store reads to rebuild one value (one per level of nesting of its large parts)."""


class EdgeContent:
    """Content-addressed values per tenant, in memory and (optionally) in the store.

    Args:
        max_bytes: the serialised size held in memory before the least recently used values go.
        store: where values outlive this process and are shared with other nodes (``None``: memory only).
        ttl_s: how long a stored value is kept after it was last held.
        clock: unix time.
        max_tracked: stored values this node remembers having written (so it does not write them again).
    """

    def __init__(
        self,
        max_bytes: int,
        store: Store | None = None,
        ttl_s: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
        max_tracked: int = 200_000,
    ) -> None:
        self.max_bytes = max_bytes
        self.store = store
        self.ttl_s = ttl_s
        self.size = 0
        self._clock = clock
        self._max_tracked = max_tracked
        self._values: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
        self._stored: OrderedDict[tuple[str, str], float] = OrderedDict()

    def get(self, tenant: str, digest: str) -> Any:
        """The value of ``digest``, from memory (:meth:`load` brings stored ones in first).

        Raises:
            KeyError: this node does not hold it in memory.
        """
        key = (tenant, digest)
        value, _ = self._values[key]
        self._values.move_to_end(key)
        return value

    async def load(self, tenant: str, digests: Iterable[str]) -> None:
        """Bring into memory what it lacks of ``digests`` from the store (with the parts they refer to)."""
        wanted = {digest for digest in digests if (tenant, digest) not in self._values}
        if self.store is None or not wanted:
            return
        nodes: dict[str, Any] = {}
        for _ in range(_MAX_ROUNDS):
            if not wanted:
                break
            try:
                found = await self.store.get_edge_blobs(tenant, wanted)
            except Exception as error:  # an unreachable store: what is not in memory is missing (a heal)
                _log.warning("edge.content.read_failed", error=type(error).__name__)
                return
            wanted = set()
            for digest, body in found.items():
                try:
                    nodes[digest] = orjson.loads(body)
                except orjson.JSONDecodeError as error:  # the disk's fault: missing, so the edge heals by re-sending
                    _log.error(
                        "store.damaged",
                        problem=f"a stored edge content part ({digest}) cannot be read ({error}): it is treated as "
                        "missing; run 'tether check' on the store",
                    )
                    continue
                for child in references(nodes[digest]):
                    if child not in nodes and (tenant, child) not in self._values:
                        wanted.add(child)
        self._rebuild(tenant, nodes)

    def _rebuild(self, tenant: str, nodes: dict[str, Any]) -> None:
        built: dict[str, Any] = {}

        def resolve(digest: str) -> Any:
            held = self._values.get((tenant, digest))
            if held is not None:
                return held[0]
            if digest not in built:
                built[digest] = apply(MISSING, nodes[digest], resolve)  # KeyError: a part the store lost
            return built[digest]

        expires = self._clock() + self.ttl_s / 2  # its stored expiry is unknown: refresh it within half a TTL
        for digest in nodes:
            try:
                resolve(digest)
            except DeltaError:
                continue
        for digest, value in built.items():
            self._put((tenant, digest), value, len(dumps(value)))
            self._track((tenant, digest), expires)
        self._trim()

    async def hold(self, tenant: str, request: Any, *, durable: bool = True) -> str:
        """Keep a rebuilt request and its large parts (``durable``: in the store too); returns the request's hash."""
        root = value_hash(request)
        parts = [(root, request)]
        self._put((tenant, root), request, 0)
        for digest, value, size in large_values(request):
            self._put((tenant, digest), value, size)
            if digest != root:
                parts.append((digest, value))
        self._trim()
        if durable and self.store is not None:
            await self._store(tenant, parts)
        return root

    async def _store(self, tenant: str, parts: list[tuple[str, Any]]) -> None:
        assert self.store is not None
        now = self._clock()
        fresh = now + self.ttl_s / 2
        blobs = {
            digest: dumps(shallow(value)) for digest, value in parts if self._stored.get((tenant, digest), 0.0) <= fresh
        }
        if not blobs:
            return
        expires = now + self.ttl_s
        try:
            await self.store.put_edge_blobs(tenant, blobs, expires)
        except Exception as error:  # the turn goes on from memory; another node would heal once
            _log.warning("edge.content.write_failed", error=type(error).__name__)
            return
        for digest in blobs:
            self._track((tenant, digest), expires)

    def _track(self, key: tuple[str, str], expires: float) -> None:
        self._stored[key] = expires
        self._stored.move_to_end(key)
        while len(self._stored) > self._max_tracked:
            self._stored.popitem(last=False)

    def _trim(self) -> None:
        while self.size > self.max_bytes and len(self._values) > 1:
            _, (_, size) = self._values.popitem(last=False)
            self.size -= size

    def _put(self, key: tuple[str, str], value: Any, size: int) -> None:
        held = self._values.get(key)
        if held is not None:
            self._values.move_to_end(key)
            return
        self._values[key] = (value, size)
        self.size += size
