"""The local journal: every item of every session in one SQLite file, so an agent survives its own crashes.

A turn is written twice, each time in one transaction: :meth:`Journal.begin_turn` records its idempotency key,
request and new input items (status ``pending``) before anything is sent; :meth:`Journal.complete_turn` records
its output items and moves the session's ``last_response_id``. A process that dies between the two finds the turn
``pending`` on restart and can finish it by idempotency key, without a second generation.

Every sqlite3 call runs on one worker thread (as ``tether.store.sqlite`` does), so the event loop never waits on
disk and the connection only ever sees the thread that opened it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, ParamSpec, Self, TypeVar

import orjson

from tether.types import Item, JSONObject

P = ParamSpec("P")
T = TypeVar("T")

TurnStatus = Literal["pending", "completed", "incomplete", "failed", "discarded"]
MEMORY = ":memory:"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY,
        config BLOB NOT NULL,
        last_response_id TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS turns (
        session_id TEXT NOT NULL,
        turn INTEGER NOT NULL,
        idempotency_key TEXT NOT NULL,
        status TEXT NOT NULL,
        request BLOB NOT NULL,
        response_id TEXT,
        resume_token TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        finished_at REAL,
        PRIMARY KEY (session_id, turn)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS items (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        turn INTEGER NOT NULL,
        role TEXT NOT NULL,
        item BLOB NOT NULL,
        response_id TEXT,
        PRIMARY KEY (session_id, seq)
    )
    """,
)
SCHEMA_VERSION = 1
_IN_CONTEXT = "('pending', 'completed', 'incomplete')"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as the journal has it: its configuration (model, instructions, tools, params, store) and head."""

    session_id: str
    config: JSONObject
    last_response_id: str | None


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One turn of a session.

    Attributes:
        turn: the turn's number in its session, from 1.
        idempotency_key: sent with every attempt of the turn.
        request: the create parameters other than ``input`` (``previous_response_id``, ``model``, ...).
        inputs: the new input items of the turn.
        response_id: the response, once ``response.created`` was seen.
        resume_token: its ``tether:resume_token``, if the server sent one.
    """

    turn: int
    idempotency_key: str
    status: TurnStatus
    request: JSONObject
    inputs: list[Item] = field(default_factory=list)
    response_id: str | None = None
    resume_token: str | None = None


@dataclass(frozen=True, slots=True)
class JournalItem:
    """One journaled item: ``role`` is ``input`` (sent) or ``output`` (the model's)."""

    seq: int
    turn: int
    role: Literal["input", "output"]
    item: Item
    response_id: str | None


class Journal:
    """A SQLite file of sessions, turns and items; open it with :meth:`open`.

    Args are internal: use :meth:`open`.
    """

    def __init__(self, path: str, database: _Database, executor: ThreadPoolExecutor) -> None:
        self.path = path
        self._database = database
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(cls, path: str | os.PathLike[str] = MEMORY) -> Self:
        """Open (creating it if needed) the journal at ``path``; ``":memory:"`` keeps it in this process only.

        Raises:
            sqlite3.Error: if the file cannot be opened as a database.
            RuntimeError: if the file was written by a newer journal schema.
        """
        location = os.fspath(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-journal")
        try:
            database = await asyncio.get_running_loop().run_in_executor(executor, _Database, location)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(location, database, executor)

    async def close(self) -> None:
        """Close the file and stop the worker thread. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._database.close)
        finally:
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def load_session(self, session_id: str) -> SessionRecord | None:
        """The session, or ``None`` if the journal has never seen it."""
        return await self._run(self._database.load_session, session_id)

    async def save_session(self, session_id: str, config: JSONObject) -> None:
        """Create the session or update its configuration (its turns and head are kept)."""
        await self._run(self._database.save_session, session_id, orjson.dumps(config))

    async def begin_turn(self, session_id: str, turn: TurnRecord) -> None:
        """Record a new pending turn and its input items, atomically, before anything is sent."""
        await self._run(self._database.begin_turn, session_id, turn)

    async def note_response(self, session_id: str, turn: int, response_id: str, resume_token: str | None) -> None:
        """Record the response a pending turn started (seen in ``response.created``), for resuming after a crash."""
        await self._run(self._database.note_response, session_id, turn, response_id, resume_token)

    async def complete_turn(
        self, session_id: str, turn: int, response_id: str, status: TurnStatus, outputs: Sequence[Item]
    ) -> None:
        """Record the output items and make ``response_id`` the session's head, atomically."""
        await self._run(self._database.complete_turn, session_id, turn, response_id, status, list(outputs))

    async def end_turn(self, session_id: str, turn: int, status: TurnStatus, error: str | None = None) -> None:
        """Mark a turn ``failed`` or ``discarded``: its items leave the context, the head stays where it was."""
        await self._run(self._database.end_turn, session_id, turn, status, error)

    async def pending_turn(self, session_id: str) -> TurnRecord | None:
        """The session's unfinished turn (with its inputs), if one is pending."""
        return await self._run(self._database.pending_turn, session_id)

    async def last_turn_number(self, session_id: str) -> int:
        """The highest turn number of the session (0 before the first)."""
        return await self._run(self._database.last_turn_number, session_id)

    async def context(self, session_id: str) -> list[Item]:
        """Every item of the session's conversation in order (failed and discarded turns left out): the input a
        server needs to rebuild the conversation from nothing."""
        return await self._run(self._database.context, session_id)

    async def items(self, session_id: str) -> list[JournalItem]:
        """Every journaled item of the session, with its turn and role, in order."""
        return await self._run(self._database.items, session_id)

    async def _run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("the journal is closed")
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


class _Database:
    """The synchronous core; every method runs on the journal's worker thread."""

    def __init__(self, location: str) -> None:
        if location != MEMORY:
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(location, isolation_level=None)
        try:
            if location != MEMORY:
                self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a turn the journal says was sent must survive a power cut, not only a process crash.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def _migrate(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"journal schema {version} is newer than this client's {SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            with self._transaction():
                for statement in _SCHEMA:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def load_session(self, session_id: str) -> SessionRecord | None:
        row = self._conn.execute(
            "SELECT config, last_response_id FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return None if row is None else SessionRecord(session_id, orjson.loads(row[0]), row[1])

    def save_session(self, session_id: str, config: bytes) -> None:
        now = time.time()
        self._conn.execute(
            "INSERT INTO sessions (session_id, config, created_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
            (session_id, config, now, now),
        )

    def begin_turn(self, session_id: str, turn: TurnRecord) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT INTO turns (session_id, turn, idempotency_key, status, request, created_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (session_id, turn.turn, turn.idempotency_key, orjson.dumps(turn.request), time.time()),
            )
            self._append(session_id, turn.turn, "input", turn.inputs, None)

    def note_response(self, session_id: str, turn: int, response_id: str, resume_token: str | None) -> None:
        self._conn.execute(
            "UPDATE turns SET response_id = ?, resume_token = ? WHERE session_id = ? AND turn = ?",
            (response_id, resume_token, session_id, turn),
        )

    def complete_turn(
        self, session_id: str, turn: int, response_id: str, status: TurnStatus, outputs: list[Item]
    ) -> None:
        with self._transaction():
            self._append(session_id, turn, "output", outputs, response_id)
            self._conn.execute(
                "UPDATE items SET response_id = ? WHERE session_id = ? AND turn = ? AND role = 'input'",
                (response_id, session_id, turn),
            )
            self._conn.execute(
                "UPDATE turns SET status = ?, response_id = ?, finished_at = ? WHERE session_id = ? AND turn = ?",
                (status, response_id, time.time(), session_id, turn),
            )
            self._conn.execute(
                "UPDATE sessions SET last_response_id = ?, updated_at = ? WHERE session_id = ?",
                (response_id, time.time(), session_id),
            )

    def end_turn(self, session_id: str, turn: int, status: TurnStatus, error: str | None) -> None:
        self._conn.execute(
            "UPDATE turns SET status = ?, error = ?, finished_at = ? WHERE session_id = ? AND turn = ?",
            (status, error, time.time(), session_id, turn),
        )

    def pending_turn(self, session_id: str) -> TurnRecord | None:
        row = self._conn.execute(
            "SELECT turn, idempotency_key, request, response_id, resume_token FROM turns "
            "WHERE session_id = ? AND status = 'pending' ORDER BY turn DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        inputs = [
            orjson.loads(body)
            for (body,) in self._conn.execute(
                "SELECT item FROM items WHERE session_id = ? AND turn = ? AND role = 'input' ORDER BY seq",
                (session_id, row[0]),
            )
        ]
        return TurnRecord(row[0], row[1], "pending", orjson.loads(row[2]), inputs, row[3], row[4])

    def last_turn_number(self, session_id: str) -> int:
        (number,) = self._conn.execute(
            "SELECT COALESCE(MAX(turn), 0) FROM turns WHERE session_id = ?", (session_id,)
        ).fetchone()
        return int(number)

    def context(self, session_id: str) -> list[Item]:
        rows = self._conn.execute(
            "SELECT items.item FROM items JOIN turns USING (session_id, turn) "
            f"WHERE items.session_id = ? AND turns.status IN {_IN_CONTEXT} ORDER BY items.seq",
            (session_id,),
        )
        return [orjson.loads(body) for (body,) in rows]

    def items(self, session_id: str) -> list[JournalItem]:
        rows = self._conn.execute(
            "SELECT seq, turn, role, item, response_id FROM items WHERE session_id = ? ORDER BY seq", (session_id,)
        )
        return [JournalItem(seq, turn, role, orjson.loads(body), rid) for seq, turn, role, body, rid in rows]

    def _append(self, session_id: str, turn: int, role: str, items: list[Item], response_id: str | None) -> None:
        (last,) = self._conn.execute(
            "SELECT COALESCE(MAX(seq), -1) FROM items WHERE session_id = ?", (session_id,)
        ).fetchone()
        rows: list[tuple[Any, ...]] = [
            (session_id, last + 1 + index, turn, role, orjson.dumps(item), response_id)
            for index, item in enumerate(items)
        ]
        self._conn.executemany(
            "INSERT INTO items (session_id, seq, turn, role, item, response_id) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
