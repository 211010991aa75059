"""A database tether did not write, a damaged one, or one another process holds: refused at open, by name."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from tether.store import SQLiteStore
from tether.store.sqlite_check import StoreUnusableError, inventory

from .contract import TENANT, put_chain

PAGE = 4096


async def make_database(path: Path, responses: int = 300) -> None:
    async with await SQLiteStore.open(path) as store:
        await put_chain(store, responses, snapshot_every=None)


def damage_middle_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = len(data) // PAGE // 2
    data[page * PAGE : (page + 1) * PAGE] = b"\xab" * PAGE
    path.write_bytes(bytes(data))


async def test_an_empty_file_is_refused_not_started_empty(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    path.write_bytes(b"")
    with pytest.raises(StoreUnusableError, match=r"tether\.db is empty \(0 bytes\)"):
        await SQLiteStore.open(path)
    assert path.stat().st_size == 0


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    path.write_bytes(b"this is a text file, not a database\n" * 10)
    with pytest.raises(StoreUnusableError, match="is not an SQLite database"):
        await SQLiteStore.open(path)


async def test_someone_elses_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE invoices (id INTEGER)")
    connection.commit()
    connection.close()
    with pytest.raises(StoreUnusableError, match="holds other tables"):
        await SQLiteStore.open(path)


async def test_a_damaged_database_is_refused_and_check_says_what_would_be_lost(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    await make_database(path)
    assert inventory(path).ok
    damage_middle_page(path)

    with pytest.raises(StoreUnusableError, match=r"is damaged .*tether check"):
        await SQLiteStore.open(path)
    found = inventory(path)
    assert not found.ok
    assert found.problems
    lines = found.lines()
    assert lines[0].endswith("DAMAGED")
    lost = len(found.unreadable_responses) + len(found.broken_chains) + len(found.missing_items)
    assert lost > 0
    assert f"  would lose {lost} of 300 responses" in lines


def read(path: Path) -> bytes:
    return path.read_bytes()


def point_cells_outside(path: Path, original: bytes, page: int) -> None:
    """Write ``original`` to ``path`` with the cell pointers of ``page`` far outside it, and no WAL beside it."""
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    data = bytearray(original)
    data[page * PAGE + 8 : page * PAGE + 12] = b"\xff\xff\xff\x7f"
    path.write_bytes(bytes(data))


async def refusal_with_several_problems(path: Path) -> str:
    """Point a page's cells far outside it, trying pages from the middle of the file on, until the refusal reports the
    damage as several problems, and return that refusal's message.

    Which page does depends on how the rows fell into pages (on some, SQLite says only that the image is malformed).
    Each try starts from the undamaged bytes with no WAL beside them: a store opened on an earlier try can leave a WAL
    that the next open replays and its close checkpoints into the file, so opening the same file twice could give two
    different answers (a CI failure on dee3dc7, which opened it again to read the refusal).
    """
    original = read(path)
    pages = len(original) // PAGE
    for page in sorted(range(1, pages), key=lambda number: abs(number - pages // 2)):
        point_cells_outside(path, original, page)
        try:
            store = await SQLiteStore.open(path)
        except StoreUnusableError as refused:
            if str(refused).count("On tree page") >= 2:
                return str(refused)
        else:
            await store.close()
    raise AssertionError("no page of the database gives quick_check several problems in one row")


async def test_the_refusal_is_one_line_when_sqlite_reports_several_problems(tmp_path: Path) -> None:
    """quick_check reports some damage as several lines in one row; tether serve's error is one line all the same."""
    path = tmp_path / "tether.db"
    await make_database(path)
    refusal = await refusal_with_several_problems(path)
    assert re.search(r"is damaged \(On tree page \d+ cell \d+: .*; On tree page", refusal), refusal
    assert "\n" not in refusal
    assert "***" not in refusal
    assert refusal.endswith("to see what would be lost")


async def test_check_of_a_whole_database(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    await make_database(path, responses=5)
    found = inventory(path)
    assert found.ok
    assert found.lines() == [f"{path}: 5 responses, 11 items: ok"]


async def test_a_second_store_on_the_same_file_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    async with await SQLiteStore.open(path) as first:
        await put_chain(first, 2, snapshot_every=None)
        with pytest.raises(StoreUnusableError, match=r"in use by another tether process \(pid \d+\)"):
            await SQLiteStore.open(path)
    async with await SQLiteStore.open(path) as again:
        assert await again.get(TENANT, "resp_1") is not None


@pytest.mark.parametrize("name", ["symlink", "relative"])
async def test_a_second_store_on_the_same_file_by_another_name_is_refused(tmp_path: Path, name: str) -> None:
    """The lock file was named after the path as given, so a symbolic link to the database took a lock of its own."""
    path = tmp_path / "tether.db"
    other = tmp_path / "link.db"
    if name == "symlink":
        other.symlink_to(path)
    else:
        (tmp_path / "sub").mkdir()
        other = tmp_path / "sub" / ".." / "tether.db"
    async with await SQLiteStore.open(path):
        with pytest.raises(StoreUnusableError, match=r"in use by another tether process"):
            await SQLiteStore.open(other)


async def test_a_second_store_on_the_same_file_through_a_hard_link_is_refused(tmp_path: Path) -> None:
    """A hard link is the same inode under a name the lock file's name cannot know."""
    path = tmp_path / "tether.db"
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.db"
    async with await SQLiteStore.open(path):
        link.hardlink_to(path)
        with pytest.raises(StoreUnusableError, match=rf"in use by another tether process \(pid {os.getpid()}, "):
            await SQLiteStore.open(link)
    async with await SQLiteStore.open(link) as again:  # the first has closed: the link may be served now
        assert again.path == link
