"""``MemoryStore``: the :class:`~tether.store.base.Store` contract in plain dicts.

The reference implementation: the same semantics as the SQLite store, without durability. Values are copied through
orjson on the way in and out, so a caller can never alias stored state and anything that would not survive a real
store's serialisation fails here too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

import orjson

from tether.store.base import ResponseRecord, StoredContext, StoreStats, check_record
from tether.store.local_turns import LocalTurns, OneNodeTurns

T = TypeVar("T")


@dataclass(slots=True)
class _Entry:
    record: ResponseRecord
    deleted: bool = False


class MemoryStore(OneNodeTurns):
    """A :class:`~tether.store.base.Store` in process memory (tests, ``store=memory``).

    Args:
        clock: the time source deciding expiry on reads (``time.time`` by default).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._items: dict[str, bytes] = {}
        self._entries: dict[str, _Entry] = {}
        self._idempotency: dict[tuple[str, str], list[str]] = {}
        self._edge_blobs: dict[tuple[str, str], tuple[bytes, float]] = {}
        self.stats = StoreStats()
        self.turns = LocalTurns(clock, self.put, self.get)

    async def put(self, record: ResponseRecord) -> None:
        """Store a response and its items; a record with the same id is replaced.

        Raises:
            ValueError: if the record's item, hash and id lists disagree in length.
        """
        check_record(record)
        stored = _detached(record)
        for digest, item in zip(
            record.input_hashes + record.output_hashes, record.input_items + record.output_items, strict=True
        ):
            if digest not in self._items:
                self._items[digest] = orjson.dumps(item)
        previous = self._entries.pop(record.id, None)
        if previous is not None:
            self._unindex(previous.record)
        self._entries[record.id] = _Entry(stored)
        if record.idempotency_key is not None:
            self._idempotency.setdefault((record.tenant, record.idempotency_key), []).append(record.id)

    async def get(self, tenant: str, response_id: str) -> ResponseRecord | None:
        """The tenant's response, or ``None`` if it is missing, deleted, expired or another tenant's."""
        entry = self._visible(tenant, response_id, self._clock())
        return None if entry is None else self._materialised(entry.record)

    async def load_context(self, tenant: str, response_id: str) -> StoredContext | None:
        """The whole context of a visible response (its sampled context followed by its output).

        Walks parents up to the nearest snapshot; tombstoned ancestors still count. Returns ``None`` if the response
        is not visible or an ancestor is gone.
        """
        entry = self._visible(tenant, response_id, self._clock())
        segments: list[list[str]] = []
        seen: set[str] = set()
        while True:
            if entry is None or entry.record.id in seen:
                return None
            seen.add(entry.record.id)
            self.stats.response_rows_read += 1
            record = entry.record
            if record.snapshot is not None:
                segments.append(record.snapshot)
                break
            segments.append(record.output_hashes)
            segments.append(record.input_hashes)
            if record.parent_id is None:
                break
            entry = self._entries.get(record.parent_id)
            if entry is not None and entry.record.tenant != tenant:
                entry = None
        hashes = [digest for segment in reversed(segments) for digest in segment]
        if any(digest not in self._items for digest in hashes):
            return None
        self.stats.item_rows_read += len(set(hashes))
        return StoredContext(items=[orjson.loads(self._items[digest]) for digest in hashes], hashes=hashes)

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Tombstone a visible response: hidden from every read, its hashes kept for its descendants' contexts.

        Returns:
            ``False`` if there was nothing visible to delete.
        """
        entry = self._visible(tenant, response_id, self._clock())
        if entry is None:
            return False
        entry.deleted = True
        entry.record.params = {}
        entry.record.events = []
        return True

    async def find_by_idempotency_key(self, tenant: str, key: str) -> ResponseRecord | None:
        """The tenant's most recently stored visible response created with this idempotency key, if any."""
        now = self._clock()
        for response_id in reversed(self._idempotency.get((tenant, key), [])):
            entry = self._visible(tenant, response_id, now)
            if entry is not None:
                return self._materialised(entry.record)
        return None

    async def purge_expired(self, now: float) -> int:
        """Remove expired and tombstoned responses that no remaining response descends from, then their items.

        Args:
            now: unix time; a response with ``expires_at <= now`` is expired.

        Returns:
            The number of responses removed.
        """
        self._edge_blobs = {key: kept for key, kept in self._edge_blobs.items() if kept[1] > now}
        doomed = {
            response_id for response_id, entry in self._entries.items() if entry.deleted or _expired(entry.record, now)
        }
        kept: set[str] = set()
        for response_id, entry in self._entries.items():
            if response_id in doomed:
                continue
            parent_id = entry.record.parent_id
            while parent_id is not None and parent_id not in kept:
                kept.add(parent_id)
                parent = self._entries.get(parent_id)
                parent_id = None if parent is None else parent.record.parent_id
        self.turns.purge(now)
        removed = doomed - kept
        for response_id in removed:
            self._unindex(self._entries.pop(response_id).record)
        if removed:
            self._collect_items()
        return len(removed)

    async def put_edge_blobs(self, tenant: str, blobs: Mapping[str, bytes], expires_at: float) -> None:
        """See :meth:`tether.store.base.Store.put_edge_blobs`."""
        for digest, body in blobs.items():
            self._edge_blobs[(tenant, digest)] = (bytes(body), expires_at)

    async def get_edge_blobs(self, tenant: str, digests: Collection[str]) -> dict[str, bytes]:
        """See :meth:`tether.store.base.Store.get_edge_blobs`."""
        now = self._clock()
        found = {}
        for digest in digests:
            kept = self._edge_blobs.get((tenant, digest))
            if kept is not None and kept[1] > now:
                found[digest] = kept[0]
        return found

    async def is_visible(self, tenant: str, response_id: str) -> bool:
        """Whether the tenant's response exists and is neither deleted nor expired."""
        return self._visible(tenant, response_id, self._clock()) is not None

    async def close(self) -> None:
        """Nothing to release; present for the interface."""

    def _visible(self, tenant: str, response_id: str, now: float) -> _Entry | None:
        entry = self._entries.get(response_id)
        if entry is None or entry.deleted or entry.record.tenant != tenant or _expired(entry.record, now):
            return None
        return entry

    def _materialised(self, stored: ResponseRecord) -> ResponseRecord:
        self.stats.response_rows_read += 1
        self.stats.item_rows_read += len(set(stored.input_hashes + stored.output_hashes))
        record = _detached(stored)
        record.input_items = [orjson.loads(self._items[digest]) for digest in stored.input_hashes]
        record.output_items = [orjson.loads(self._items[digest]) for digest in stored.output_hashes]
        return record

    def _unindex(self, record: ResponseRecord) -> None:
        if record.idempotency_key is None:
            return
        key = (record.tenant, record.idempotency_key)
        ids = self._idempotency.get(key, [])
        if record.id in ids:
            ids.remove(record.id)
        if not ids:
            self._idempotency.pop(key, None)

    def _collect_items(self) -> None:
        referenced: set[str] = set()
        for entry in self._entries.values():
            referenced.update(entry.record.input_hashes, entry.record.output_hashes, entry.record.snapshot or ())
        for digest in self._items.keys() - referenced:
            del self._items[digest]


def _expired(record: ResponseRecord, now: float) -> bool:
    return record.expires_at is not None and record.expires_at <= now


def _copy(value: T) -> T:
    return cast(T, orjson.loads(orjson.dumps(value)))


def _detached(record: ResponseRecord) -> ResponseRecord:
    """A deep copy of the record without its item bodies (those live in the items table)."""
    return dataclasses.replace(
        record,
        params=_copy(record.params),
        input_items=[],
        input_hashes=list(record.input_hashes),
        input_ids=list(record.input_ids),
        output_items=[],
        output_hashes=list(record.output_hashes),
        usage=_copy(record.usage),
        error=_copy(record.error),
        incomplete_details=_copy(record.incomplete_details),
        events=_copy(record.events),
        snapshot=None if record.snapshot is None else list(record.snapshot),
    )
