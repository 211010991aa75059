"""``RedisStore``: the cluster store on Redis (redis-py asyncio).

Records, content-addressed items and snapshots are plain keys (layout in :mod:`tether.store.redis_scripts`); every
write that must not be split is one Lua script. A claimed turn's shared log is a Redis Stream that followers read
with blocking ``XREAD``; the claim of an idempotency key is ``SET NX``. Claims, turns and their logs expire by native
key TTLs. Response records do not: a live descendant keeps its expired ancestors' items (the context it continues),
so records go through :meth:`RedisStore.purge_expired`, like every store's.

Durability is Redis's: with ``appendonly yes`` and ``appendfsync everysec`` a crash loses at most about a second of
acknowledged writes; with RDB snapshots only, everything since the last snapshot. docs/cluster.md has the settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Self, cast

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from tether.store import redis_scripts as lua
from tether.store.base import ResponseRecord, StoredContext, StoreStats, check_record
from tether.store.local_turns import FINISHED_RETENTION_S
from tether.store.record_rows import item_bodies
from tether.store.turns import Claim, InterruptEvents, Lease, Renewal, TurnRead, TurnState
from tether.types import JSONObject

PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CHAIN_LIMIT = 100_000
_BATCH = 500
_RECORD_FIELDS = tuple(
    f.name for f in dataclasses.fields(ResponseRecord) if f.name not in ("input_items", "output_items", "events")
)


class RedisStore:
    """A :class:`~tether.store.base.Store` on Redis; create it with :meth:`open`.

    Attributes:
        prefix: every key of this store starts with it.
        stats: read counters.
    """

    def __init__(self, client: aioredis.Redis, prefix: str, clock: Callable[[], float]) -> None:
        self.prefix = prefix
        self.stats = StoreStats()
        self._redis = client
        self._clock = clock
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(getattr(lua, name)) for name in _SCRIPT_NAMES
        }

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        prefix: str = "tether:",
        clock: Callable[[], float] = time.time,
        max_connections: int = 512,
        timeout_s: float = 10.0,
    ) -> Self:
        """Connect to ``url`` (``redis://host:6379/0``) and check that the server answers.

        Raises:
            ValueError: for a prefix with characters other than letters, digits and ``_.:-``.
            redis.exceptions.ConnectionError: if the server cannot be reached.
        """
        if not PREFIX_PATTERN.fullmatch(prefix):
            raise ValueError(f"Redis key prefix {prefix!r} must match {PREFIX_PATTERN.pattern}")
        client = aioredis.Redis.from_url(url, max_connections=max_connections, socket_connect_timeout=timeout_s)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        return cls(client, prefix, clock)

    # -- responses -----------------------------------------------------------------------------------------

    async def put(self, record: ResponseRecord) -> None:
        """Store a response and its items atomically; a record with the same id is replaced."""
        check_record(record)
        await self._run("PUT", [], self._put_args(record))

    async def get(self, tenant: str, response_id: str) -> ResponseRecord | None:
        """The tenant's response, or ``None`` if it is missing, deleted, expired or another tenant's."""
        blob, events = await self._mget([self._key("resp", response_id), self._key("events", response_id)])
        return await self._materialised(blob, events, tenant)

    async def find_by_idempotency_key(self, tenant: str, key: str) -> ResponseRecord | None:
        """The tenant's most recently stored visible response created with this idempotency key, if any."""
        ids = cast(list[bytes], await self._redis.zrevrange(self._key("idem", _pair(tenant, key)), 0, -1))
        for raw_id in ids:
            response_id = raw_id.decode()
            blob, events = await self._mget([self._key("resp", response_id), self._key("events", response_id)])
            record = await self._materialised(blob, events, tenant)
            if record is not None and record.idempotency_key == key:
                return record
        return None

    async def load_context(self, tenant: str, response_id: str) -> StoredContext | None:
        """The whole context of a visible response: one script walks up to the nearest snapshot, one ``MGET``
        reads the items."""
        blobs = await self._run("CHAIN", [], [self.prefix, _CHAIN_LIMIT, response_id])
        rows = [orjson.loads(blob) for blob in blobs]
        self.stats.response_rows_read += len(rows)
        if not rows or not self._visible(rows[0], tenant) or len({row["id"] for row in rows}) != len(rows):
            return None
        if any(row["tenant"] != tenant for row in rows):
            return None
        last = rows[-1]
        if last["snapshot"] is None and last["parent_id"] is not None:
            return None  # an ancestor is gone
        segments: list[list[str]] = []
        for row in rows:
            if row["snapshot"] is not None:
                segments.append(row["snapshot"])
                break
            segments.append(row["output_hashes"])
            segments.append(row["input_hashes"])
        hashes = [digest for segment in reversed(segments) for digest in segment]
        bodies = await self._item_bodies(hashes)
        if bodies is None:
            return None
        return StoredContext(items=[orjson.loads(bodies[digest]) for digest in hashes], hashes=hashes)

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Tombstone a visible response (``WATCH``ed, so a concurrent put is not overwritten)."""
        key = self._key("resp", response_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(10):
                try:
                    await pipe.watch(key)
                    blob = await pipe.get(key)
                    row = None if blob is None else orjson.loads(blob)
                    if row is None or not self._visible(row, tenant):
                        return False
                    row.update(deleted=True, params={})
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, orjson.dumps(row))
                    pipe.set(self._key("events", response_id), b"[]")
                    await pipe.execute()
                    return True
                except aioredis.WatchError:
                    continue
        raise RuntimeError(f"could not delete {response_id}: it kept changing")

    async def is_visible(self, tenant: str, response_id: str) -> bool:
        """Whether the tenant's response exists and is neither deleted nor expired (one key read)."""
        blob = await self._redis.get(self._key("resp", response_id))
        return blob is not None and self._visible(orjson.loads(blob), tenant)

    async def put_edge_blobs(self, tenant: str, blobs: Mapping[str, bytes], expires_at: float) -> None:
        """See :meth:`tether.store.base.Store.put_edge_blobs`: one key a blob, its expiry a native TTL (and in the
        value, so that reads go by this store's clock)."""
        ttl_ms = int((expires_at - self._clock()) * 1000)
        if not blobs or ttl_ms <= 0:
            return
        stamp = repr(float(expires_at)).encode() + b"\n"
        async with self._redis.pipeline(transaction=False) as pipe:
            for digest, body in blobs.items():
                pipe.set(self._key("edge", _pair(tenant, digest)), stamp + bytes(body), px=ttl_ms)
            await pipe.execute()

    async def get_edge_blobs(self, tenant: str, digests: Collection[str]) -> dict[str, bytes]:
        """See :meth:`tether.store.base.Store.get_edge_blobs`."""
        wanted = list(dict.fromkeys(digests))
        now = self._clock()
        found: dict[str, bytes] = {}
        for chunk in _chunks(wanted):
            for digest, value in zip(chunk, await self._mget([self._key("edge", _pair(tenant, d)) for d in chunk]),
                                     strict=True):  # fmt: skip
                if value is not None:
                    stamp, _, body = value.partition(b"\n")
                    if float(stamp) > now:
                        found[digest] = body
        return found

    async def purge_expired(self, now: float) -> int:
        """Remove expired and tombstoned responses no remaining response descends from, then unreferenced items
        (an item written while the purge ran is kept). Returns how many responses were removed."""
        started = int(await self._redis.get(self._key("put_order")) or 0)
        ids = [raw.decode() for raw in cast(set[bytes], await self._redis.smembers(self._key("responses")))]
        rows: dict[str, Any] = {}
        for chunk in _chunks(ids):
            for response_id, blob in zip(chunk, await self._mget([self._key("resp", i) for i in chunk]), strict=True):
                if blob is not None:
                    rows[response_id] = orjson.loads(blob)
        doomed = {i for i, row in rows.items() if row["deleted"] or _expired(row, now)}
        kept: set[str] = set()
        for response_id, row in rows.items():
            if response_id in doomed:
                continue
            parent_id = row["parent_id"]
            while parent_id is not None and parent_id not in kept:
                kept.add(parent_id)
                parent = rows.get(parent_id)
                parent_id = None if parent is None else parent["parent_id"]
        removed = sorted(doomed - kept)
        for chunk in _chunks(removed):
            async with self._redis.pipeline(transaction=True) as pipe:
                for response_id in chunk:
                    row = rows[response_id]
                    pipe.delete(self._key("resp", response_id), self._key("events", response_id))
                    pipe.srem(self._key("responses"), response_id)
                    if row["idempotency_key"] is not None:
                        pipe.zrem(self._key("idem", _pair(row["tenant"], row["idempotency_key"])), response_id)
                await pipe.execute()
        if removed:
            referenced: set[str] = set()
            for response_id, row in rows.items():
                if response_id not in doomed or response_id in kept:
                    referenced.update(row["input_hashes"], row["output_hashes"], row["snapshot"] or ())
            stored = [member.decode() async for member, _ in self._redis.zscan_iter(self._key("touched"))]
            stale = [digest for digest in stored if digest not in referenced]
            for chunk in _chunks(stale):
                await self._run("COLLECT_ITEMS", [], [self.prefix, started, *chunk])
        return len(removed)

    async def ping(self) -> None:
        """Raise ``redis.exceptions.ConnectionError`` if Redis cannot be reached."""
        await self._redis.ping()

    async def close(self) -> None:
        """Close the connection pool. Closing twice is harmless."""
        await self._redis.aclose()

    # -- turns ---------------------------------------------------------------------------------------------

    async def claim_turn(self, tenant: str, response_id: str, *, key: str | None, node: str, lease_s: float) -> Claim:
        """Claim a turn; ``SET NX`` decides between nodes claiming one idempotency key."""
        turn = self._key("turn", response_id)
        claim_key = turn if key is None else self._key("claim", _pair(tenant, key))
        for _ in range(3):  # the holder's claim may expire between our SET and our GET
            won, value = await self._run(
                "CLAIM",
                [claim_key, turn, self._key("fence")],
                [response_id, tenant, node, key or "", repr(self._clock() + lease_s), int(FINISHED_RETENTION_S)],
            )
            if won:
                return Claim(lease=Lease(response_id, tenant, node, int(value)))
            if value is not None:
                return Claim(holder=value.decode())
        raise RuntimeError(f"could not claim idempotency key for {response_id}")

    async def renew_lease(self, lease: Lease, lease_s: float) -> Renewal:
        """Extend the lease while it is still held; the same script reads the cancellation mark."""
        now = self._clock()
        keys = [self._key("turn", lease.response_id)]
        args = [lease.token, repr(now), repr(now + lease_s), int(FINISHED_RETENTION_S)]
        outcome = await self._run("RENEW", keys, args)
        return {0: Renewal.LOST, 1: Renewal.HELD, 2: Renewal.CANCEL_REQUESTED}[int(outcome)]

    async def request_cancel(self, tenant: str, response_id: str) -> bool:
        """Mark the running turn for cancellation, in one script (its node reads the mark at its next heartbeat)."""
        return bool(await self._run("REQUEST_CANCEL", [self._key("turn", response_id)], [tenant]))

    async def append_events(self, lease: Lease, events: list[JSONObject]) -> bool:
        """Append events to the turn's stream while the lease is held."""
        keys = [self._key("turn", lease.response_id), self._key("log", lease.response_id)]
        args = [lease.token, repr(self._clock()), int(FINISHED_RETENTION_S), len(events), *_event_args(events)]
        return bool(await self._run("APPEND", keys, args))

    async def finish_turn(self, lease: Lease, record: ResponseRecord | None, events: list[JSONObject]) -> bool:
        """Store the record, append the last events and mark the turn done, in one script, if still held."""
        if record is not None:
            check_record(record)
        put_args = self._put_args(record) if record is not None else [self.prefix, "", "", "", "", 0]
        keys = [self._key("turn", lease.response_id), self._key("log", lease.response_id)]
        args = [
            *put_args,
            lease.token,
            repr(self._clock()),
            int(FINISHED_RETENTION_S),
            len(events),
            *_event_args(events),
        ]
        return bool(await self._run("FINISH", keys, args))

    async def read_turn(self, tenant: str, response_id: str, after: int) -> TurnRead | None:
        """The turn's state and its events after ``after``, read in one ``MULTI`` (one snapshot)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key("turn", response_id))
            pipe.xrange(self._key("log", response_id), f"0-{after + 2}", "+")
            turn, entries = await pipe.execute()
        if not turn or turn[b"tenant"].decode() != tenant:
            return None
        state = TurnState(turn[b"state"].decode())
        return TurnRead(
            events=[orjson.loads(fields[b"e"]) for _, fields in entries],
            state=state,
            node=turn[b"node"].decode(),
            lease_expired=state is TurnState.RUNNING and float(turn[b"lease_until"]) <= self._clock(),
            cancel_requested=turn.get(b"cancel_requested") == b"1",
        )

    async def wait_turn(self, response_id: str, after: int, timeout_s: float) -> None:
        """Block in ``XREAD`` until the stream has an entry after ``after`` (every state change appends one)."""
        with contextlib.suppress(aioredis.TimeoutError):
            await self._redis.xread(
                {self._key("log", response_id): f"0-{after + 1}"}, count=1, block=max(1, int(timeout_s * 1000))
            )

    async def interrupt_turn(self, response_id: str, build: InterruptEvents, *, lease: Lease | None = None) -> bool:
        """End a running turn whose lease expired (or that ``lease`` holds); one script checks and writes, retried
        if the log moved."""
        turn_key, log_key = self._key("turn", response_id), self._key("log", response_id)
        for _ in range(10):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(turn_key)
                pipe.xrevrange(log_key, "+", "-", count=1)
                turn, last = await pipe.execute()
            if not turn or turn[b"state"] != b"running":
                return False
            next_seq = int(last[0][0].decode().split("-")[1]) if last else 0
            key = turn[b"key"].decode()
            claim_key = self._key("claim", _pair(turn[b"tenant"].decode(), key)) if key else turn_key
            events = build(next_seq)
            token = -1 if lease is None else lease.token
            args = [repr(self._clock()), next_seq, int(FINISHED_RETENTION_S), response_id, token, len(events)]
            outcome = await self._run("INTERRUPT", [turn_key, log_key, claim_key], [*args, *_event_args(events)])
            if outcome != -1:
                return bool(outcome == 1)
        return False

    # -- helpers -------------------------------------------------------------------------------------------

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}:{name}" if name else f"{self.prefix}{kind}"

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        return cast(list[bytes | None], await self._redis.mget(keys))

    def _run(self, name: str, keys: list[str], args: Iterable[Any]) -> Awaitable[Any]:
        return self._scripts[name](keys=keys, args=list(args))

    def _put_args(self, record: ResponseRecord) -> list[object]:
        items = item_bodies(record)
        row = {name: getattr(record, name) for name in _RECORD_FIELDS}
        row["deleted"] = False
        index = (
            "" if record.idempotency_key is None else self._key("idem", _pair(record.tenant, record.idempotency_key))
        )
        pairs = [value for digest, body in items.items() for value in (digest, body)]
        return [self.prefix, record.id, orjson.dumps(row), orjson.dumps(record.events), index, len(items), *pairs]

    def _visible(self, row: dict[str, Any], tenant: str) -> bool:
        return row["tenant"] == tenant and not row["deleted"] and not _expired(row, self._clock())

    async def _materialised(self, blob: bytes | None, events: bytes | None, tenant: str) -> ResponseRecord | None:
        if blob is None:
            return None
        row = orjson.loads(blob)
        if not self._visible(row, tenant):
            return None
        self.stats.response_rows_read += 1
        bodies = await self._item_bodies(row["input_hashes"] + row["output_hashes"])
        if bodies is None:
            return None
        del row["deleted"]
        return ResponseRecord(
            **row,
            input_items=[orjson.loads(bodies[digest]) for digest in row["input_hashes"]],
            output_items=[orjson.loads(bodies[digest]) for digest in row["output_hashes"]],
            events=orjson.loads(events) if events is not None else [],
        )

    async def _item_bodies(self, hashes: list[str]) -> dict[str, bytes] | None:
        unique = list(dict.fromkeys(hashes))
        bodies: dict[str, bytes] = {}
        for chunk in _chunks(unique):
            values = await self._mget([self._key("item", digest) for digest in chunk])
            bodies.update((digest, body) for digest, body in zip(chunk, values, strict=True) if body is not None)
        self.stats.item_rows_read += len(bodies)
        return bodies if len(bodies) == len(unique) else None


_SCRIPT_NAMES = ("PUT", "CLAIM", "RENEW", "REQUEST_CANCEL", "APPEND", "FINISH", "INTERRUPT", "CHAIN", "COLLECT_ITEMS")


def _pair(tenant: str, key: str) -> str:
    """An unambiguous key name for (tenant, key): the tenant's length first."""
    return f"{len(tenant)}:{tenant}:{key}"


def _expired(row: dict[str, Any], now: float) -> bool:
    return row["expires_at"] is not None and row["expires_at"] <= now


def _event_args(events: list[JSONObject]) -> list[object]:
    return [value for event in events for value in (event["sequence_number"], orjson.dumps(event))]


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _BATCH):
        yield values[start : start + _BATCH]
