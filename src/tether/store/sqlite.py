"""``SQLiteStore``: the embedded default store, one SQLite file in WAL mode.

Every sqlite3 call runs on one dedicated worker thread (:class:`_Database` is the synchronous core, used only from
that thread), so the event loop never waits on disk and the connection only ever sees the thread that opened it.
Records are encoded on the caller's side before the hop, so ``put`` stores the record as it was when called.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

import orjson

from tether.store.base import ResponseRecord, StoredContext, StoreStats, check_record
from tether.store.local_turns import LocalTurns, OneNodeTurns
from tether.store.record_rows import COLUMNS, item_bodies, item_hashes, record_from_row, record_row
from tether.store.sqlite_check import (
    FileLock,
    StoreUnusableError,
    check_before_connect,
    check_connected,
    damaged,
)

P = ParamSpec("P")
T = TypeVar("T")

# SQLite's default limit on host parameters is far higher in recent builds, but 999 in old ones.
_MAX_PARAMS = 500

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS items (hash TEXT PRIMARY KEY, body BLOB NOT NULL)",
        """
        CREATE TABLE IF NOT EXISTS responses (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            parent_id TEXT,
            depth INTEGER NOT NULL,
            model TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            completed_at INTEGER,
            params BLOB NOT NULL,
            input_hashes BLOB NOT NULL,
            input_ids BLOB NOT NULL,
            output_hashes BLOB NOT NULL,
            usage BLOB,
            error BLOB,
            incomplete_details BLOB,
            events BLOB NOT NULL,
            snapshot BLOB,
            deleted INTEGER NOT NULL DEFAULT 0,
            expires_at REAL,
            idempotency_key TEXT
        )
        """,
        "CREATE INDEX IF NOT EXISTS responses_idempotency ON responses (tenant, idempotency_key)",
        "CREATE INDEX IF NOT EXISTS responses_expires_at ON responses (expires_at)",
        "CREATE INDEX IF NOT EXISTS responses_parent_id ON responses (parent_id)",
    ),
    (
        """
        CREATE TABLE IF NOT EXISTS edge_blobs (
            tenant TEXT NOT NULL,
            hash TEXT NOT NULL,
            body BLOB NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (tenant, hash)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX IF NOT EXISTS edge_blobs_expires_at ON edge_blobs (expires_at)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_SELECT_RECORD = f"SELECT {', '.join(COLUMNS)} FROM responses"
_INSERT_RECORD = (
    f"INSERT OR REPLACE INTO responses ({', '.join(COLUMNS)}, deleted) VALUES ({', '.join('?' * len(COLUMNS))}, 0)"
)
_VISIBLE = "deleted = 0 AND (expires_at IS NULL OR expires_at > ?)"

# A row may go once it is expired or tombstoned and no remaining row descends from it: `kept` is every ancestor of a
# live row, found in one recursive pass rather than by peeling leaves one layer at a time. (The CTE sits inside the
# DELETE so that sqlite3 still reports the statement's rowcount.)
_PURGE = """
    DELETE FROM responses
    WHERE NOT (deleted = 0 AND (expires_at IS NULL OR expires_at > :now))
    AND id NOT IN (
        WITH RECURSIVE kept(id) AS (
            SELECT parent_id FROM responses
            WHERE parent_id IS NOT NULL AND deleted = 0 AND (expires_at IS NULL OR expires_at > :now)
            UNION
            SELECT r.parent_id FROM responses AS r JOIN kept ON r.id = kept.id WHERE r.parent_id IS NOT NULL
        )
        SELECT id FROM kept
    )
"""

_Row = tuple[Any, ...]
_EncodedItems = list[tuple[str, bytes]]


class SQLiteStore(OneNodeTurns):
    """A :class:`~tether.store.base.Store` in one SQLite file; create it with :meth:`open`.

    Attributes:
        path: the database file.
        stats: read counters (response rows and item bodies read).
    """

    def __init__(
        self,
        path: Path,
        database: _Database,
        executor: ThreadPoolExecutor,
        stats: StoreStats,
        clock: Callable[[], float],
        lock: FileLock,
    ) -> None:
        self.path = path
        self.stats = stats
        self._database = database
        self._executor = executor
        self._clock = clock
        self._lock = lock
        self._closed = False
        self.turns = LocalTurns(clock, self.put, self.get)

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time, read_only: bool = False
    ) -> Self:
        """Open (creating it and its parent directories if needed) and migrate the database at ``path``.

        Args:
            path: the database file.
            clock: the time source deciding expiry on reads (``time.time`` by default).
            read_only: read an existing database, also one a running server holds (``tether replay``): no lock,
                no migration, and every write fails.

        Raises:
            StoreUnusableError: the file is not a database tether wrote (empty, not SQLite, someone else's), it is
                damaged, or another process has it open.
            sqlite3.Error: if the file cannot be opened as a database.
            RuntimeError: if the database was written by a newer schema version.
        """
        file = Path(path)
        stats = StoreStats()
        if not read_only:
            file.parent.mkdir(parents=True, exist_ok=True)
        check_before_connect(file)
        lock = FileLock(file)
        if not read_only:
            lock.acquire()  # a reader caches nothing, so it may share the file with the server that holds it
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-sqlite")
        try:
            database = await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(_Database, file, stats, read_only=read_only)
            )
        except BaseException:
            executor.shutdown(wait=False)
            lock.release()
            raise
        if not read_only:
            try:
                lock.hold_database()  # a new file exists only now
            except BaseException:
                await asyncio.get_running_loop().run_in_executor(executor, database.close)
                executor.shutdown(wait=False)
                lock.release()
                raise
        return cls(file, database, executor, stats, clock, lock)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def put(self, record: ResponseRecord) -> None:
        """Store a response and its items in one transaction; a record with the same id is replaced.

        Raises:
            ValueError: if the record's item, hash and id lists disagree in length.
        """
        check_record(record)
        row, items = _encode(record)
        await self._run(self._database.put, row, items)

    async def get(self, tenant: str, response_id: str) -> ResponseRecord | None:
        """The tenant's response, or ``None`` if it is missing, deleted, expired or another tenant's."""
        return await self._run(self._database.get, tenant, response_id, self._clock())

    async def load_context(self, tenant: str, response_id: str) -> StoredContext | None:
        """The whole context of a visible response (its sampled context followed by its output).

        Reads one row per response from this one up to the nearest snapshot (tombstoned ancestors still count),
        then the item bodies in batches. Returns ``None`` if the response is not visible or an ancestor is gone.
        """
        return await self._run(self._database.load_context, tenant, response_id, self._clock())

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Tombstone a visible response: hidden from every read, its hashes kept for its descendants' contexts.

        Returns:
            ``False`` if there was nothing visible to delete.
        """
        return await self._run(self._database.delete, tenant, response_id, self._clock())

    async def find_by_idempotency_key(self, tenant: str, key: str) -> ResponseRecord | None:
        """The tenant's most recently stored visible response created with this idempotency key, if any."""
        return await self._run(self._database.find_by_idempotency_key, tenant, key, self._clock())

    async def purge_expired(self, now: float) -> int:
        """Remove expired and tombstoned responses that no remaining response descends from, then their items.

        Args:
            now: unix time; a response with ``expires_at <= now`` is expired.

        Returns:
            The number of responses removed.
        """
        self.turns.purge(now)
        return await self._run(self._database.purge, now)

    async def is_visible(self, tenant: str, response_id: str) -> bool:
        """Whether the tenant's response exists and is neither deleted nor expired (one indexed row)."""
        return await self._run(self._database.is_visible, tenant, response_id, self._clock())

    async def put_edge_blobs(self, tenant: str, blobs: Mapping[str, bytes], expires_at: float) -> None:
        """See :meth:`tether.store.base.Store.put_edge_blobs`."""
        rows = [(tenant, digest, bytes(body), expires_at) for digest, body in blobs.items()]
        if rows:
            await self._run(self._database.put_edge_blobs, rows)

    async def get_edge_blobs(self, tenant: str, digests: Collection[str]) -> dict[str, bytes]:
        """See :meth:`tether.store.base.Store.get_edge_blobs`."""
        return await self._run(self._database.get_edge_blobs, tenant, list(dict.fromkeys(digests)), self._clock())

    async def close(self) -> None:
        """Close the connection and stop the worker thread. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._database.close)
        finally:
            # The worker is idle once its last job is done, so this join does not stall the loop.
            self._executor.shutdown(wait=True)
            self._lock.release()

    async def _run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("the SQLite store is closed")
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


class _Database:
    """The synchronous core; every method runs on the store's worker thread."""

    def __init__(self, path: Path, stats: StoreStats, *, read_only: bool = False) -> None:
        self._stats = stats
        self._path = path
        if read_only:
            if not path.is_file():
                raise StoreUnusableError(f"no database at {path}: check --store-url")
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            try:
                check_connected(path, self._conn, SCHEMA_VERSION)
                self._conn.execute("PRAGMA busy_timeout = 5000")
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            except BaseException:
                self._conn.close()
                raise
            if version != SCHEMA_VERSION:
                self._conn.close()
                raise StoreUnusableError(f"database {path} has schema version {version}, not {SCHEMA_VERSION}")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None)
        try:
            check_connected(path, self._conn, SCHEMA_VERSION)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def put(self, row: _Row, items: _EncodedItems) -> None:
        with self._transaction("IMMEDIATE"):
            self._conn.executemany("INSERT OR IGNORE INTO items (hash, body) VALUES (?, ?)", items)
            self._conn.execute(_INSERT_RECORD, row)

    def get(self, tenant: str, response_id: str, now: float) -> ResponseRecord | None:
        with self._transaction():
            row = self._conn.execute(
                f"{_SELECT_RECORD} WHERE id = ? AND tenant = ? AND {_VISIBLE}", (response_id, tenant, now)
            ).fetchone()
            return None if row is None else self._decode(row)

    def is_visible(self, tenant: str, response_id: str, now: float) -> bool:
        row = self._conn.execute(
            f"SELECT 1 FROM responses WHERE id = ? AND tenant = ? AND {_VISIBLE}", (response_id, tenant, now)
        ).fetchone()
        return row is not None

    def find_by_idempotency_key(self, tenant: str, key: str, now: float) -> ResponseRecord | None:
        # INSERT OR REPLACE gives a replaced row a new rowid, so the highest rowid is the latest put.
        with self._transaction():
            row = self._conn.execute(
                f"{_SELECT_RECORD} WHERE tenant = ? AND idempotency_key = ? AND {_VISIBLE} ORDER BY rowid DESC LIMIT 1",
                (tenant, key, now),
            ).fetchone()
            return None if row is None else self._decode(row)

    def load_context(self, tenant: str, response_id: str, now: float) -> StoredContext | None:
        with self._reading():
            return self._load_context(tenant, response_id, now)

    def _load_context(self, tenant: str, response_id: str, now: float) -> StoredContext | None:
        select = "SELECT id, parent_id, input_hashes, output_hashes, snapshot FROM responses"
        segments: list[list[str]] = []
        seen: set[str] = set()
        with self._transaction():
            row = self._conn.execute(
                f"{select} WHERE id = ? AND tenant = ? AND {_VISIBLE}", (response_id, tenant, now)
            ).fetchone()
            while True:
                if row is None or row[0] in seen:
                    return None
                seen.add(row[0])
                self._stats.response_rows_read += 1
                _, parent_id, input_hashes, output_hashes, snapshot = row
                if snapshot is not None:
                    segments.append(orjson.loads(snapshot))
                    break
                segments.append(orjson.loads(output_hashes))
                segments.append(orjson.loads(input_hashes))
                if parent_id is None:
                    break
                row = self._conn.execute(f"{select} WHERE id = ? AND tenant = ?", (parent_id, tenant)).fetchone()
            hashes = [digest for segment in reversed(segments) for digest in segment]
            bodies = self._item_bodies(hashes)
        if bodies is None:
            return None
        return StoredContext(items=[orjson.loads(bodies[digest]) for digest in hashes], hashes=hashes)

    def delete(self, tenant: str, response_id: str, now: float) -> bool:
        with self._transaction("IMMEDIATE"):
            cursor = self._conn.execute(
                f"UPDATE responses SET deleted = 1, events = ?, params = ? WHERE id = ? AND tenant = ? AND {_VISIBLE}",
                (b"[]", b"{}", response_id, tenant, now),
            )
            return cursor.rowcount > 0

    def put_edge_blobs(self, rows: list[tuple[str, str, bytes, float]]) -> None:
        with self._transaction("IMMEDIATE"):
            self._conn.executemany(
                "INSERT INTO edge_blobs (tenant, hash, body, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant, hash) DO UPDATE SET expires_at = excluded.expires_at",
                rows,
            )

    def get_edge_blobs(self, tenant: str, digests: list[str], now: float) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for chunk in _chunks(digests):
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT hash, body FROM edge_blobs WHERE tenant = ? AND expires_at > ? AND hash IN ({marks})"
            found.update(self._conn.execute(query, [tenant, now, *chunk]))
        return found

    def purge(self, now: float) -> int:
        with self._transaction("IMMEDIATE"):
            self._conn.execute("DELETE FROM edge_blobs WHERE expires_at <= ?", (now,))
            removed = self._conn.execute(_PURGE, {"now": now}).rowcount
            if removed:
                self._collect_items()
            return removed

    def _collect_items(self) -> None:
        referenced: set[str] = set()
        for input_hashes, output_hashes, snapshot in self._conn.execute(
            "SELECT input_hashes, output_hashes, snapshot FROM responses"
        ):
            referenced.update(orjson.loads(input_hashes), orjson.loads(output_hashes))
            if snapshot is not None:
                referenced.update(orjson.loads(snapshot))
        stale = [digest for (digest,) in self._conn.execute("SELECT hash FROM items") if digest not in referenced]
        for chunk in _chunks(stale):
            self._conn.execute(f"DELETE FROM items WHERE hash IN ({', '.join('?' * len(chunk))})", chunk)

    def _decode(self, row: _Row) -> ResponseRecord | None:
        self._stats.response_rows_read += 1
        fields = dict(zip(COLUMNS, row, strict=True))
        with self._reading():
            bodies = self._item_bodies(item_hashes(fields, orjson.loads))
            return None if bodies is None else record_from_row(fields, bodies, orjson.loads)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A row that cannot be decoded, or a page SQLite finds corrupt, is :class:`StoreDamagedError`."""
        try:
            yield
        except sqlite3.OperationalError:  # busy, locked, out of memory: not damage
            raise
        except (ValueError, sqlite3.DatabaseError) as error:  # orjson's and UTF-8's decode errors are ValueErrors
            raise damaged(self._path, error) from error

    def _item_bodies(self, hashes: list[str]) -> dict[str, bytes] | None:
        """The bodies of the given items by hash, or ``None`` if any is missing."""
        unique = list(dict.fromkeys(hashes))
        bodies: dict[str, bytes] = {}
        for chunk in _chunks(unique):
            marks = ", ".join("?" * len(chunk))
            bodies.update(self._conn.execute(f"SELECT hash, body FROM items WHERE hash IN ({marks})", chunk))
        self._stats.item_rows_read += len(bodies)
        return bodies if len(bodies) == len(unique) else None

    def _migrate(self) -> None:
        with self._transaction("IMMEDIATE"):
            version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"database schema version {version} is newer than this tether ({SCHEMA_VERSION})")
            for target, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {target}")

    @contextmanager
    def _transaction(self, mode: str = "DEFERRED") -> Iterator[None]:
        self._conn.execute(f"BEGIN {mode}")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


def _encode(record: ResponseRecord) -> tuple[_Row, _EncodedItems]:
    row = tuple(record_row(record, orjson.dumps).values())
    return row, list(item_bodies(record).items())


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _MAX_PARAMS):
        yield values[start : start + _MAX_PARAMS]
