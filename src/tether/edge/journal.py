"""The edge's local journal: the requests the gateway rebuilt (the delta bases) and the content hashes it holds,
in one SQLite file, so an edge restarted mid-task continues its chains with deltas instead of whole requests.

The agent's headers (its credentials) are never written here. Every sqlite3 call runs on one worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from tether.edge.chains import ChainBook, Sent, message_keys

SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sent (digest TEXT PRIMARY KEY, api TEXT NOT NULL, path TEXT NOT NULL,"
    " request BLOB NOT NULL, at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS known (digest TEXT PRIMARY KEY)",
)


class EdgeJournal:
    """Keeps a :class:`ChainBook` on disk. Writes are queued in order and never block the event loop."""

    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor, book: ChainBook) -> None:
        self._connection = connection
        self._executor = executor
        self._book = book
        self._pending: set[Future[None]] = set()
        self._counter = 0

    @classmethod
    async def open(cls, path: str, book: ChainBook) -> EdgeJournal:
        """Open (or create) the journal at ``path`` and load it into ``book``."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="tether-edge-journal")
        loop = asyncio.get_running_loop()
        connection = await loop.run_in_executor(executor, _connect, path)
        journal = cls(connection, executor, book)
        rows, known, counter = await loop.run_in_executor(executor, _load, connection, book.max_chains)
        for digest, api, route, request in rows:
            body = orjson.loads(request)
            book.remember(Sent(digest, api, route, body, tuple(message_keys(api, body))))
        book.learn(known)
        journal._counter = counter
        return journal

    def record(self, sent: Sent) -> None:
        """The gateway rebuilt ``sent``: keep it, and the hashes of its large parts, as the book now has them."""
        self._counter += 1
        known = list(self._book.known)[-4096:]
        self._submit(_record, sent.digest, sent.api, sent.path, orjson.dumps(sent.request), self._counter, known,
                     self._book.max_chains)  # fmt: skip

    def forget(self) -> None:
        self._submit(_forget)

    def _submit(self, function: Any, *args: Any) -> None:
        future = self._executor.submit(function, self._connection, *args)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connection.close)
        self._executor.shutdown(wait=True)


def _connect(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    for statement in _SCHEMA:
        connection.execute(statement)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return connection


def _load(connection: sqlite3.Connection, limit: int) -> tuple[list[tuple[str, Any, str, bytes]], list[str], int]:
    rows = connection.execute(
        "SELECT digest, api, path, request FROM sent ORDER BY at DESC LIMIT ?", (limit,)
    ).fetchall()
    known = [row[0] for row in connection.execute("SELECT digest FROM known")]
    counter = connection.execute("SELECT COALESCE(MAX(at), 0) FROM sent").fetchone()[0]
    return list(reversed(rows)), known, int(counter)


def _record(
    connection: sqlite3.Connection, digest: str, api: str, path: str, request: bytes, at: int, known: list[str],
    limit: int,
) -> None:  # fmt: skip
    with connection:
        connection.execute("BEGIN")
        connection.execute(
            "INSERT OR REPLACE INTO sent (digest, api, path, request, at) VALUES (?, ?, ?, ?, ?)",
            (digest, api, path, request, at),
        )
        connection.execute("DELETE FROM sent WHERE at <= ?", (at - limit,))
        connection.executemany("INSERT OR IGNORE INTO known (digest) VALUES (?)", [(d,) for d in known])


def _forget(connection: sqlite3.Connection) -> None:
    with connection:
        connection.execute("BEGIN")
        connection.execute("DELETE FROM sent")
        connection.execute("DELETE FROM known")
