"""In-memory state: the per-connection lane cache and the node-wide hot cache."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from tether.engine.context import Context
from tether.protocol import ids
from tether.protocol.lanes import Lane
from tether.types import Item, JSONObject


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A completed response's whole context, ready to be continued."""

    response_id: str
    context: Context
    depth: int
    store: bool
    params: JSONObject = field(default_factory=dict)


class HotCache:
    """A bounded LRU of stored (``store=true``) responses' contexts, keyed by tenant and id.

    Bounded twice: at most ``capacity`` entries, and at most ``max_bytes`` of their contexts' JSON (each entry
    counted whole, though a chain's entries share items: the bound errs on the side of memory). One entry larger
    than ``max_bytes`` is not kept at all.
    """

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str], CachedResponse] = OrderedDict()

    def get(self, tenant: str, response_id: str) -> CachedResponse | None:
        key = (tenant, response_id)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, tenant: str, entry: CachedResponse) -> None:
        size = entry.context.json_bytes
        if self.capacity <= 0 or not entry.store or (self.max_bytes is not None and size > self.max_bytes):
            return
        key = (tenant, entry.response_id)
        self.discard(*key)
        self._entries[key] = entry
        self.bytes += size
        while len(self._entries) > self.capacity or (self.max_bytes is not None and self.bytes > self.max_bytes):
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.context.json_bytes

    def discard(self, tenant: str, response_id: str) -> None:
        entry = self._entries.pop((tenant, response_id), None)
        if entry is not None:
            self.bytes -= entry.context.json_bytes

    def __len__(self) -> int:
        return len(self._entries)


class ConnectionState:
    """What one WebSocket connection remembers: the latest response of each of its lanes.

    ``store=false`` responses live only here and die with the connection.
    """

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.id = ids.new_id("conn")
        self._lanes: dict[Lane, CachedResponse] = {}
        # Steering input the upstream holds for a response of a lane that stopped for tool output
        # (``response.steer.pending``): it goes first in that lane's continuation of that response.
        self._steering: dict[Lane, tuple[str, list[Item]]] = {}

    def find(self, response_id: str) -> CachedResponse | None:
        for entry in self._lanes.values():
            if entry.response_id == response_id:
                return entry
        return None

    def remember(self, lane: Lane, entry: CachedResponse) -> None:
        self._lanes[lane] = entry

    def forget(self, response_id: str) -> None:
        """Drop ``response_id`` from every lane (it was deleted)."""
        for lane in [lane for lane, entry in self._lanes.items() if entry.response_id == response_id]:
            del self._lanes[lane]

    def evict(self, lane: Lane, response_id: str) -> bool:
        """Forget ``response_id`` if it is ``lane``'s latest response (a failed same-lane continuation)."""
        entry = self._lanes.get(lane)
        if entry is not None and entry.response_id == response_id:
            del self._lanes[lane]
            return True
        return False

    def hold_steering(self, lane: Lane, response_id: str, items: list[Item]) -> None:
        """Keep steering input pending for ``response_id`` (after any held for it already) until it is continued."""
        held = self._steering.get(lane)
        before = held[1] if held is not None and held[0] == response_id else []
        self._steering[lane] = (response_id, [*before, *items])

    def held_steering(self, lane: Lane, response_id: str) -> list[Item]:
        """The steering input pending for ``response_id`` on ``lane`` (empty when none)."""
        held = self._steering.get(lane)
        return list(held[1]) if held is not None and held[0] == response_id else []

    def drop_steering(self, lane: Lane) -> None:
        """The lane's pending steering input went into a continuation."""
        self._steering.pop(lane, None)

    def clear(self) -> None:
        self._lanes.clear()
        self._steering.clear()
