from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tether.store import SQLiteStore, Store
from tether.store.sqlite import SCHEMA_VERSION

from .contract import TENANT, Reference, make_record, message, put_chain


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the database through a second connection, as another process would."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


async def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    reference = Reference()
    async with await SQLiteStore.open(path) as store:
        records = await put_chain(store, 20, snapshot_every=8, reference=reference)
        await store.delete(TENANT, "resp_3")

    async with await SQLiteStore.open(path) as store:
        assert await store.get(TENANT, "resp_19") == records[19]
        assert await store.get(TENANT, "resp_3") is None
        assert await store.load_context(TENANT, "resp_19") == reference.context("resp_19")


async def test_creates_parent_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "tether.db"
    async with await SQLiteStore.open(path):
        assert path.exists()
        assert query(path, "PRAGMA journal_mode") == [("wal",)]
        assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()

    with pytest.raises(RuntimeError, match="newer"):
        await SQLiteStore.open(path)


async def test_delete_keeps_a_tombstone_with_hashes_but_no_events(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    async with await SQLiteStore.open(path) as store:
        record = make_record("resp_1", inputs=[message("hello")])
        record.events = [{"type": "response.created", "sequence_number": 0}]
        await store.put(record)
        await store.delete(TENANT, "resp_1")

        [(deleted, events, input_hashes)] = query(path, "SELECT deleted, events, input_hashes FROM responses")
        assert deleted == 1
        assert events == b"[]"
        assert input_hashes == b'["' + record.input_hashes[0].encode() + b'"]'


async def test_runs_sqlite_on_one_worker_thread_until_closed(tmp_path: Path) -> None:
    def workers() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread.name.startswith("tether-sqlite")]

    before = len(workers())
    store = await SQLiteStore.open(tmp_path / "tether.db")
    await put_chain(store, 5, snapshot_every=None)
    assert len(workers()) == before + 1
    await store.close()
    await store.close()

    assert len(workers()) == before
    with pytest.raises(RuntimeError, match="closed"):
        await store.get(TENANT, "resp_1")


async def test_sqlite_store_satisfies_the_store_interface(tmp_path: Path) -> None:
    store: Store = await SQLiteStore.open(tmp_path / "tether.db")
    await store.close()


async def test_a_read_only_reader_shares_the_file_with_the_store_that_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    reference = Reference()
    async with await SQLiteStore.open(path) as writer:  # holds the lock
        records = await put_chain(writer, 5, snapshot_every=8, reference=reference)
        async with await SQLiteStore.open(path, read_only=True) as reader:
            assert await reader.get(TENANT, "resp_4") == records[4]
            assert await reader.load_context(TENANT, "resp_4") == reference.context("resp_4")
            with pytest.raises(sqlite3.OperationalError):
                await reader.put(make_record("resp_new", inputs=[message("x")], outputs=[message("y")]))
        await writer.put(make_record("resp_after", inputs=[message("a")], outputs=[message("b")]))  # the writer goes on


async def test_a_read_only_reader_needs_an_existing_database(tmp_path: Path) -> None:
    from tether.store.sqlite_check import StoreUnusableError

    with pytest.raises(StoreUnusableError, match="no database"):
        await SQLiteStore.open(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()
