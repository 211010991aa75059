"""Is this SQLite file the one tether wrote? The checks at open, the file lock, and ``tether check``'s inventory.

At open, :func:`check_before_connect` and :func:`check_connected` refuse a file that tether did not write (0 bytes,
not SQLite, someone else's tables) or that is damaged (``PRAGMA quick_check``), naming the file and the problem:
starting empty over a damaged file would turn every stored response into a silent 404.

:class:`FileLock` keeps a second process off the same file: each process caches contexts in memory, so two of them on
one file would serve each other's deleted responses from stale caches.

:func:`inventory` is the slow, thorough check behind ``tether check``: ``PRAGMA integrity_check``, then every row
decoded and every item it names looked up, so it can say what a damaged file would lose.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tether.store.base import StoreDamagedError

SQLITE_HEADER = b"SQLite format 3\x00"
TABLES = frozenset({"items", "responses"})
_JSON_COLUMNS = ("params", "input_hashes", "input_ids", "output_hashes", "events")


class StoreUnusableError(Exception):
    """The database cannot be used as it is; the message names the file, what is wrong and what to do."""


def check_before_connect(path: Path) -> None:
    """Refuse a file that exists but is not an SQLite database (an empty file included).

    Raises:
        StoreUnusableError: the file is empty or its header is not SQLite's.
    """
    if not path.exists():
        return
    if path.is_dir():
        raise StoreUnusableError(f"database {path} is a directory, not a file")
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header:
        raise StoreUnusableError(
            f"database {path} is empty (0 bytes), so its stored responses are gone: restore it from a backup, "
            "or delete the file to start with none"
        )
    if header != SQLITE_HEADER:
        raise StoreUnusableError(f"database {path} is not an SQLite database (its header is wrong): check --store-url")


def _one_line(problem: str) -> str:
    """A quick_check row on one line: it can hold several, under a '*** in database main ***' heading."""
    return "; ".join(line.strip() for line in problem.splitlines() if line.strip() and not line.startswith("***"))


def check_connected(path: Path, conn: sqlite3.Connection, schema_version: int) -> None:
    """Refuse a database that is damaged, or that holds tables but not tether's (a newer schema is not judged).

    Raises:
        StoreUnusableError: ``quick_check`` fails, or the schema is not tether's.
    """
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as error:
        problems = [str(error)]
    if problems != ["ok"]:
        raise StoreUnusableError(
            f"database {path} is damaged ({_one_line(problems[0])}): run 'tether check --store-url "
            f"sqlite:///{path}' to see what would be lost"
        )
    if 0 < version <= schema_version and not tables >= TABLES:
        raise StoreUnusableError(
            f"database {path} is not a tether database (tables {sorted(tables)}): check --store-url"
        )
    if version == 0 and tables:
        raise StoreUnusableError(
            f"database {path} holds other tables ({sorted(tables)}), not tether's: check --store-url"
        )


def damaged(path: Path, error: Exception) -> StoreDamagedError:
    """A stored row that cannot be read back: damage inside a page, which quick_check at start-up does not read."""
    return StoreDamagedError(
        f"database {path} is damaged: a stored row cannot be read ({error}); run 'tether check --store-url "
        f"sqlite:///{path}' to see what would be lost"
    )


class FileLock:
    """An exclusive ``flock`` on ``<database>.lock``, and on the database file itself, for as long as the store is open.

    The lock file says which process holds it; the lock on the database file is tied to its inode, so a hard link
    (another name the lock file's name cannot know) is refused too. The locks are the operating system's, so they go
    with the process however the process ends. ``flock`` and SQLite's own POSIX locks do not interact on Linux.
    """

    def __init__(self, database: Path) -> None:
        self.database = database.resolve()  # a symbolic link, or another spelling of the path, shares the lock
        self.path = self.database.with_name(self.database.name + ".lock")
        self._fd: int | None = None
        self._database_fd: int | None = None

    def acquire(self) -> None:
        """Lock the lock file, and the database file if it exists (call :meth:`hold_database` once it does).

        Raises:
            StoreUnusableError: another process (or another store in this one) holds the lock.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise self._in_use(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        if self.database.exists():
            try:
                self.hold_database()
            except BaseException:
                self.release()
                raise

    def hold_database(self) -> None:
        """Lock the database file's inode (once it exists): a hard link to it is the same inode.

        Raises:
            StoreUnusableError: another process holds it, through another name.
        """
        if self._database_fd is not None:
            return
        fd = os.open(self.database, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _flock_holder(os.fstat(fd)) or "unknown"
            os.close(fd)
            raise self._in_use(f"{holder}, through another name for this file: a hard link") from None
        self._database_fd = fd

    def _in_use(self, holder: str) -> StoreUnusableError:
        return StoreUnusableError(
            f"database {self.database} is in use by another tether process (pid {holder}): stop it, "
            "or give this server its own --store-url (one process per SQLite file)"
        )

    def release(self) -> None:
        if self._database_fd is not None:
            fd, self._database_fd = self._database_fd, None
            os.close(fd)
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


def _flock_holder(stat: os.stat_result) -> str | None:
    """The pid holding a flock on this inode, from ``/proc/locks`` (Linux), if it can be read."""
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode:
                return fields[4]
    return None


@dataclass
class Inventory:
    """What ``tether check`` found."""

    path: Path
    problems: list[str] = field(default_factory=list)
    responses: int = 0
    items: int = 0
    unreadable_responses: list[str] = field(default_factory=list)
    missing_items: list[str] = field(default_factory=list)
    broken_chains: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.problems or self.unreadable_responses or self.missing_items or self.broken_chains)

    def lines(self) -> list[str]:
        head = f"{self.path}: {self.responses} responses, {self.items} items"
        if self.ok:
            return [f"{head}: ok"]
        out = [f"{head}: DAMAGED", *(f"  {problem}" for problem in self.problems)]
        lost = sorted(set(self.unreadable_responses) | set(self.missing_items) | set(self.broken_chains))
        if self.unreadable_responses:
            out.append(f"  {len(self.unreadable_responses)} responses cannot be read")
        if self.missing_items:
            out.append(f"  {len(self.missing_items)} responses name items that cannot be read")
        if self.broken_chains:
            out.append(f"  {len(self.broken_chains)} responses continue a chain that cannot be rebuilt")
        out.append(f"  would lose {len(lost)} of {self.responses + len(self.unreadable_responses)} responses")
        out.extend(f"    {response_id}" for response_id in lost[:20])
        if len(lost) > 20:
            out.append(f"    ... and {len(lost) - 20} more")
        return out


def inventory(path: Path) -> Inventory:
    """Check every page, row and item reference of the database at ``path``, read-only.

    Raises:
        StoreUnusableError: the file is missing, empty or not an SQLite database.
    """
    if not path.exists():
        raise StoreUnusableError(f"database {path} does not exist")
    check_before_connect(path)
    found = Inventory(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            found.problems = [row[0] for row in conn.execute("PRAGMA integrity_check(20)") if row[0] != "ok"]
        except sqlite3.DatabaseError as error:
            found.problems = [str(error)]
        _check_rows(conn, found)
    finally:
        conn.close()
    return found


def _check_rows(conn: sqlite3.Connection, found: Inventory) -> None:
    try:
        found.items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        last: int = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM responses").fetchone()[0]
    except sqlite3.DatabaseError as error:
        found.problems.append(f"the tables cannot be read: {error}")
        return
    parents: dict[str, str | None] = {}
    snapshots: set[str] = set()
    select = f"SELECT id, parent_id, snapshot, {', '.join(_JSON_COLUMNS)} FROM responses WHERE rowid = ?"
    for rowid in range(1, last + 1):
        try:
            row = conn.execute(select, (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            found.unreadable_responses.append(f"rowid {rowid}")
            continue
        if row is None:
            continue
        response_id, parent_id, snapshot, *blobs = row
        try:
            decoded = [orjson.loads(blob) for blob in blobs]
            if snapshot is not None:
                orjson.loads(snapshot)
        except orjson.JSONDecodeError:
            found.unreadable_responses.append(response_id)
            continue
        found.responses += 1
        parents[response_id] = parent_id
        if snapshot is not None:
            snapshots.add(response_id)
        hashes = [*decoded[1], *decoded[3]]
        if not _items_readable(conn, hashes):
            found.missing_items.append(response_id)
    found.broken_chains = _broken_chains(parents, snapshots, set(found.missing_items))


def _broken_chains(parents: dict[str, str | None], snapshots: set[str], lost: set[str]) -> list[str]:
    """Responses whose context cannot be rebuilt: an ancestor before the nearest snapshot is missing or lost."""
    whole: dict[str, bool] = {}
    for start in parents:
        path: list[str] = []
        node: str | None = start
        verdict = True
        while node is not None:
            if node in whole:
                verdict = whole[node]
                break
            if node not in parents or node in lost:
                verdict = False
                break
            path.append(node)
            if node in snapshots:
                break
            node = parents[node]
        for visited in path:
            whole[visited] = verdict
    return sorted(rid for rid, ok in whole.items() if not ok and rid not in lost)


def _items_readable(conn: sqlite3.Connection, hashes: list[str]) -> bool:
    for digest in dict.fromkeys(hashes):
        try:
            row = conn.execute("SELECT body FROM items WHERE hash = ?", (digest,)).fetchone()
            if row is None:
                return False
            orjson.loads(row[0])
        except (sqlite3.DatabaseError, orjson.JSONDecodeError):
            return False
    return True
