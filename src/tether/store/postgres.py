"""``PostgresStore``: the cluster store on PostgreSQL (psycopg 3 async, a ``psycopg_pool`` connection pool).

Responses, content-addressed items and snapshots as in SQLite (hash lists are ``text[]``; a context rebuild is one
recursive query plus one item query). A claimed turn's shared log is the ``turn_events`` table; appends ``NOTIFY``
the store's channel with the response id, and one ``LISTEN`` connection per node wakes that node's followers.
Which node runs a turn is settled by the primary key of ``turn_keys``; fencing tokens come from a sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Self

import orjson
import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from tether.store import postgres_sql as q
from tether.store.base import ResponseRecord, StoredContext, StoreStats, check_record
from tether.store.local_turns import FINISHED_RETENTION_S
from tether.store.record_rows import COLUMNS, item_bodies, item_hashes, record_from_row, record_row
from tether.store.turns import Claim, InterruptEvents, Lease, Renewal, TurnRead, TurnState
from tether.types import JSONObject

_log = structlog.get_logger("tether.store.postgres")

SCHEMA_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_CHAIN_LIMIT = 100_000
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]


class PostgresStore:
    """A :class:`~tether.store.base.Store` on PostgreSQL; create it with :meth:`open`.

    Attributes:
        schema: the PostgreSQL schema holding this store's tables.
        stats: read counters.
    """

    def __init__(self, pool: AsyncConnectionPool[_Conn], conninfo: str, schema: str, clock: Callable[[], float]):
        self.schema = schema
        self.stats = StoreStats()
        self._pool = pool
        self._clock = clock
        self._listener = _Listener(conninfo, f"tether_{schema}")

    @classmethod
    async def open(
        cls,
        conninfo: str,
        *,
        schema: str = "tether",
        clock: Callable[[], float] = time.time,
        max_connections: int = 10,
        timeout_s: float = 10.0,
    ) -> Self:
        """Connect, create the schema if needed and migrate it.

        Args:
            conninfo: a libpq URL or key=value string (``postgresql://user@host:5432/db``).
            schema: the schema to keep tables in (lowercase letters, digits, ``_``).
            clock: unix time, deciding expiry and leases.
            max_connections: the pool's size.
            timeout_s: how long to wait for the first connection.

        Raises:
            ValueError: for a schema name that is not a plain identifier.
            psycopg.OperationalError: if the server cannot be reached.
            RuntimeError: if the schema was migrated by a newer tether.
        """
        if not SCHEMA_PATTERN.fullmatch(schema):
            raise ValueError(f"PostgreSQL schema {schema!r} must match {SCHEMA_PATTERN.pattern}")
        set_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))
        # One connection first: a server that is down or refuses us fails here at once, with libpq's reason,
        # where the pool would retry (a warning line each time) until timeout_s and then say only that it timed out.
        probe = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=max(1, round(timeout_s)))
        await probe.close()

        async def configure(conn: _Conn) -> None:
            await conn.execute(set_path)

        pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True},
            configure=configure,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=timeout_s)
            async with pool.connection() as conn:
                await _migrate(conn, schema)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, conninfo, schema, clock)

    async def put(self, record: ResponseRecord) -> None:
        """Store a response and its items in one transaction; a record with the same id is replaced."""
        check_record(record)
        async with self._pool.connection() as conn, conn.transaction():
            await _put(conn, record)

    async def get(self, tenant: str, response_id: str) -> ResponseRecord | None:
        """The tenant's response, or ``None`` if it is missing, deleted, expired or another tenant's."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"{q.SELECT_RECORD} WHERE id = %(id)s AND tenant = %(tenant)s AND {q.VISIBLE}",
                {"id": response_id, "tenant": tenant, "now": self._clock()},
            )
            row = await cursor.fetchone()
            return None if row is None else await self._decode(conn, row)

    async def find_by_idempotency_key(self, tenant: str, key: str) -> ResponseRecord | None:
        """The tenant's most recently stored visible response created with this idempotency key, if any."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"{q.SELECT_RECORD} WHERE tenant = %(tenant)s AND idempotency_key = %(key)s AND {q.VISIBLE} "
                "ORDER BY put_order DESC LIMIT 1",
                {"tenant": tenant, "key": key, "now": self._clock()},
            )
            row = await cursor.fetchone()
            return None if row is None else await self._decode(conn, row)

    async def load_context(self, tenant: str, response_id: str) -> StoredContext | None:
        """The whole context of a visible response, from the nearest snapshot up (tombstones still count)."""
        async with self._pool.connection() as conn:
            params = {"id": response_id, "tenant": tenant, "now": self._clock(), "limit": _CHAIN_LIMIT}
            rows = await (await conn.execute(q.CHAIN, params)).fetchall()
            self.stats.response_rows_read += len(rows)
            if not rows or len({row[0] for row in rows}) != len(rows):
                return None
            last_parent, last_snapshot = rows[-1][1], rows[-1][4]
            if last_snapshot is None and last_parent is not None:
                return None  # an ancestor is gone
            segments: list[list[str]] = []
            for _, _, input_hashes, output_hashes, snapshot in rows:
                if snapshot is not None:
                    segments.append(snapshot)
                    break
                segments.append(output_hashes)
                segments.append(input_hashes)
            hashes = [digest for segment in reversed(segments) for digest in segment]
            bodies = await self._item_bodies(conn, hashes)
        if bodies is None:
            return None
        return StoredContext(items=[orjson.loads(bodies[digest]) for digest in hashes], hashes=hashes)

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Tombstone a visible response: hidden from every read, its hashes kept for its descendants."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE responses SET deleted = TRUE, events = %(empty_list)s, params = %(empty_object)s "
                f"WHERE id = %(id)s AND tenant = %(tenant)s AND {q.VISIBLE}",
                {"id": response_id, "tenant": tenant, "now": self._clock(), "empty_list": b"[]", "empty_object": b"{}"},
            )
            return cursor.rowcount > 0

    async def is_visible(self, tenant: str, response_id: str) -> bool:
        """Whether the tenant's response exists and is neither deleted nor expired (one indexed row)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT 1 FROM responses WHERE id = %(id)s AND tenant = %(tenant)s AND {q.VISIBLE}",
                {"id": response_id, "tenant": tenant, "now": self._clock()},
            )
            return await cursor.fetchone() is not None

    async def purge_expired(self, now: float) -> int:
        """Remove expired and tombstoned responses no remaining response descends from, their items, and turns
        that ended long ago. Returns the number of responses removed."""
        async with self._pool.connection() as conn, conn.transaction():
            removed = (await conn.execute(q.PURGE, {"now": now})).rowcount
            if removed:
                await conn.execute(q.COLLECT_ITEMS)
            await conn.execute(q.PURGE_TURNS, {"before": now - FINISHED_RETENTION_S})
            await conn.execute(q.PURGE_EDGE_BLOBS, {"now": now})
            return removed

    async def put_edge_blobs(self, tenant: str, blobs: Mapping[str, bytes], expires_at: float) -> None:
        """See :meth:`tether.store.base.Store.put_edge_blobs`."""
        if not blobs:
            return
        params = {"tenant": tenant, "hashes": list(blobs), "bodies": [bytes(body) for body in blobs.values()],
                  "expiries": [expires_at] * len(blobs)}  # fmt: skip
        async with self._pool.connection() as conn:
            await conn.execute(q.PUT_EDGE_BLOBS, params)

    async def get_edge_blobs(self, tenant: str, digests: Collection[str]) -> dict[str, bytes]:
        """See :meth:`tether.store.base.Store.get_edge_blobs`."""
        params = {"tenant": tenant, "hashes": list(dict.fromkeys(digests)), "now": self._clock()}
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(q.GET_EDGE_BLOBS, params)).fetchall()
        return {str(digest): bytes(body) for digest, body in rows}

    async def ping(self) -> None:
        """Raise ``psycopg.OperationalError`` (or a pool timeout) if PostgreSQL cannot be reached."""
        async with self._pool.connection(timeout=5.0) as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        """Stop listening and close the pool. Closing twice is harmless."""
        await self._listener.close()
        await self._pool.close()

    # -- turns ---------------------------------------------------------------------------------------------

    async def claim_turn(self, tenant: str, response_id: str, *, key: str | None, node: str, lease_s: float) -> Claim:
        """Claim a turn; the primary key of ``turn_keys`` decides between nodes claiming one idempotency key."""
        for _ in range(3):  # a key released between our insert and our read is claimed again
            claim = await self._try_claim(tenant, response_id, key, node, lease_s)
            if claim is not None:
                return claim
        raise RuntimeError(f"could not claim idempotency key for {response_id}")

    async def _try_claim(
        self, tenant: str, response_id: str, key: str | None, node: str, lease_s: float
    ) -> Claim | None:
        params = {"id": response_id, "tenant": tenant, "node": node, "key": key, "until": self._clock() + lease_s}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(q.CLAIM_TURN, params)).fetchone()
        assert row is not None
        token, holder = row
        if token is not None:
            return Claim(lease=Lease(response_id, tenant, node, token))
        return None if holder is None else Claim(holder=holder)

    async def renew_lease(self, lease: Lease, lease_s: float) -> Renewal:
        """Extend the lease while it is still held (not fenced off, not expired); the same statement reads the
        cancellation mark."""
        now = self._clock()
        params = {"id": lease.response_id, "token": lease.token, "now": now, "until": now + lease_s}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(q.RENEW_LEASE, params)).fetchone()
        if row is None:
            return Renewal.LOST
        return Renewal.CANCEL_REQUESTED if row[0] else Renewal.HELD

    async def request_cancel(self, tenant: str, response_id: str) -> bool:
        """Mark the running turn for cancellation (its node reads the mark at its next heartbeat)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(q.REQUEST_CANCEL, {"id": response_id, "tenant": tenant})
            return cursor.rowcount > 0

    async def append_events(self, lease: Lease, events: list[JSONObject]) -> bool:
        """Append events while the lease is held, and wake every node's followers."""
        params = {
            "id": lease.response_id,
            "token": lease.token,
            "now": self._clock(),
            "seqs": [event["sequence_number"] for event in events],
            "bodies": [orjson.dumps(event) for event in events],
            "channel": self._listener.channel,
        }
        async with self._pool.connection() as conn:
            row = await (await conn.execute(q.APPEND_EVENTS, params)).fetchone()
            return row is not None and row[0] > 0

    async def finish_turn(self, lease: Lease, record: ResponseRecord | None, events: list[JSONObject]) -> bool:
        """Store the record, append the last events and mark the turn done, in one transaction, if still held."""
        if record is not None:
            check_record(record)
        items = {} if record is None else item_bodies(record)
        ordered = sorted(items)
        params: dict[str, Any] = {
            "id": lease.response_id,
            "token": lease.token,
            "now": self._clock(),
            "item_hashes": ordered,
            "item_bodies": [items[digest] for digest in ordered],
            "has_record": record is not None,
            "seqs": [event["sequence_number"] for event in events],
            "bodies": [orjson.dumps(event) for event in events],
            "channel": self._listener.channel,
        }
        row_values = record_row(record, list) if record is not None else dict.fromkeys(COLUMNS)
        params.update({f"r_{name}": value for name, value in row_values.items()})
        async with self._pool.connection() as conn:
            row = await (await conn.execute(q.FINISH_TURN, params)).fetchone()
            return row is not None and row[0] > 0

    async def read_turn(self, tenant: str, response_id: str, after: int) -> TurnRead | None:
        """The turn's state and its events after ``after``, read in one statement (one snapshot)."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(q.READ_TURN, {"id": response_id, "after": after})).fetchone()
        if row is None or row[0] != tenant:
            return None
        _, node, state, lease_until, cancel_requested, bodies = row
        turn_state = TurnState(state)
        return TurnRead(
            events=[orjson.loads(body) for body in bodies or ()],
            state=turn_state,
            node=node,
            lease_expired=turn_state is TurnState.RUNNING and lease_until <= self._clock(),
            cancel_requested=cancel_requested,
        )

    async def wait_turn(self, response_id: str, after: int, timeout_s: float) -> None:
        """Wait for a NOTIFY about this turn (registered before re-checking, so none is missed)."""
        async with self._listener.waiting(response_id) as woken:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM turn_events WHERE response_id = %(id)s AND seq > %(after)s) "
                    "OR NOT EXISTS (SELECT 1 FROM turns WHERE response_id = %(id)s AND state = 'running')",
                    {"id": response_id, "after": after},
                )
                row = await cursor.fetchone()
            if row is not None and row[0]:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout_s)

    async def interrupt_turn(self, response_id: str, build: InterruptEvents, *, lease: Lease | None = None) -> bool:
        """End a running turn whose lease expired (or that ``lease`` holds): terminal events, state, key released;
        one transaction."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT tenant, idempotency_key FROM turns WHERE response_id = %(id)s AND state = 'running' "
                "AND (lease_until <= %(now)s OR (token = %(token)s AND lease_until > %(now)s)) FOR UPDATE",
                {"id": response_id, "now": self._clock(), "token": -1 if lease is None else lease.token},
            )
            row = await cursor.fetchone()
            if row is None:
                return False
            tenant, key = row
            last = await (
                await conn.execute("SELECT max(seq) FROM turn_events WHERE response_id = %s", (response_id,))
            ).fetchone()
            next_seq = 0 if last is None or last[0] is None else last[0] + 1
            await self._insert_events(conn, response_id, build(next_seq))
            await conn.execute(
                "UPDATE turns SET state = 'interrupted', ended_at = %s WHERE response_id = %s",
                (self._clock(), response_id),
            )
            if key is not None:
                await conn.execute(
                    "DELETE FROM turn_keys WHERE tenant = %s AND idempotency_key = %s AND response_id = %s",
                    (tenant, key, response_id),
                )
            await conn.execute("SELECT pg_notify(%s, %s)", (self._listener.channel, response_id))
            return True

    # -- helpers -------------------------------------------------------------------------------------------

    async def _insert_events(self, conn: _Conn, response_id: str, events: list[JSONObject]) -> None:
        if events:
            seqs = [event["sequence_number"] for event in events]
            await conn.execute(q.INSERT_EVENTS, (response_id, seqs, [orjson.dumps(event) for event in events]))

    async def _decode(self, conn: _Conn, row: tuple[Any, ...]) -> ResponseRecord | None:
        self.stats.response_rows_read += 1
        fields = dict(zip(COLUMNS, row, strict=True))
        bodies = await self._item_bodies(conn, item_hashes(fields, list))
        return None if bodies is None else record_from_row(fields, bodies, list)

    async def _item_bodies(self, conn: _Conn, hashes: list[str]) -> dict[str, bytes] | None:
        unique = list(dict.fromkeys(hashes))
        if not unique:
            return {}
        rows = await (await conn.execute(q.SELECT_ITEMS, (unique,))).fetchall()
        bodies = {digest: bytes(body) for digest, body in rows}
        self.stats.item_rows_read += len(bodies)
        return bodies if len(bodies) == len(unique) else None


async def _put(conn: _Conn, record: ResponseRecord) -> None:
    items = item_bodies(record)
    if items:
        ordered = sorted(items)  # one lock order for every writer: concurrent puts of shared items cannot deadlock
        await conn.execute(q.INSERT_ITEMS, (ordered, [items[digest] for digest in ordered]))
    await conn.execute(q.UPSERT_RECORD, record_row(record, list))


async def _migrate(conn: _Conn, schema: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tether:{schema}",))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL)")
        row = await (await conn.execute("SELECT max(version) FROM schema_migrations")).fetchone()
        version = 0 if row is None or row[0] is None else int(row[0])
        if version > q.SCHEMA_VERSION:
            raise RuntimeError(f"PostgreSQL schema {schema!r} is at version {version}, newer than this tether's")
        for target, statements in enumerate(q.MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (target,))
            _log.info("store.migrated", schema=schema, version=target)


class _Listener:
    """One LISTEN connection per store: wakes the waiters of a response id when a NOTIFY names it."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self.channel = channel
        self._conninfo = conninfo
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None

    @contextlib.asynccontextmanager
    async def waiting(self, response_id: str) -> Any:
        await self._start()
        woken = asyncio.Event()
        self._waiters.setdefault(response_id, set()).add(woken)
        try:
            yield woken
        finally:
            waiters = self._waiters.get(response_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[response_id]

    async def _start(self) -> None:
        if self._task is None:
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._listen(), name=f"listen-{self.channel}")
        assert self._ready is not None
        # Waiters poll on their timeout anyway, so a listener that cannot connect yet must not block them long.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5.0)

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    assert self._ready is not None
                    self._ready.set()
                    self._wake_all()  # anything sent while we were not listening
                    async for notify in conn.notifies():
                        for woken in self._waiters.get(notify.payload, ()):
                            woken.set()
            except psycopg.Error as error:
                _log.warning("store.listen_lost", channel=self.channel, error=type(error).__name__)
                await asyncio.sleep(1.0)

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for woken in waiters:
                woken.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
