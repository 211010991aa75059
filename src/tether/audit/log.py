"""The audit log on disk: one append-only JSON-lines file per chain (a tenant's, or the server's own).

Appends are single ``write`` calls on files opened for appending, flushed at once. The log is node-local: in a
cluster every node keeps its own chains beside its configuration.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tether.audit.chain import GENESIS, SYSTEM_CHAIN, chain_of, seal
from tether.types import JSONObject

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_TAIL_CHUNK = 64 * 1024


def timestamp(unix: float) -> str:
    """``2026-12-01T08:46:02.123Z``: the form every entry's ``time`` takes (sortable as text)."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_name(chain: str) -> str:
    if chain == SYSTEM_CHAIN:
        return "system.jsonl"
    tenant = chain.removeprefix("tenant:")
    if _SAFE_NAME.fullmatch(tenant):
        return f"tenant-{tenant}.jsonl"
    return f"tenant~{hashlib.sha256(tenant.encode()).hexdigest()[:32]}.jsonl"


@dataclass(slots=True)
class _Head:
    seq: int
    hash: str


class AuditLog:
    """Appends sealed entries to their chains' files and reads them back.

    Args:
        directory: where the chain files live (created on first append).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._heads: dict[str, _Head] = {}

    def append(self, body: JSONObject) -> JSONObject:
        """Seal ``body`` as the next entry of its chain (``tenant`` null: the server's chain) and write it."""
        chain = chain_of(body)
        head = self.head(chain)
        entry = seal(body, seq=head.seq + 1, prev=head.hash)
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / file_name(chain)).open("ab") as handle:
            handle.write(orjson.dumps(entry) + b"\n")
            handle.flush()
        self._heads[chain] = _Head(entry["seq"], entry["hash"])
        return entry

    def head(self, chain: str) -> _Head:
        """The chain's last ``seq`` and hash (``-1`` and :data:`GENESIS` for an empty chain)."""
        head = self._heads.get(chain)
        if head is None:
            last = _last_line(self.directory / file_name(chain))
            head = _Head(-1, GENESIS) if last is None else _Head(last["seq"], last["hash"])
            self._heads[chain] = head
        return head

    def chains(self) -> list[str]:
        """Every chain with a file, the server's first, then tenants by name."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.jsonl")):
            first = _first_line(path)
            if first is not None:
                found.append(chain_of(first))
        return sorted(found, key=lambda chain: (chain != SYSTEM_CHAIN, chain))

    def entries(self, chain: str) -> Iterator[JSONObject]:
        path = self.directory / file_name(chain)
        if not path.exists():
            return
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield orjson.loads(line)

    def last_of_kind(self, chain: str, kind: str) -> JSONObject | None:
        """The chain's latest entry of ``kind`` (a full read: for start-up checks, not per request)."""
        found = None
        for entry in self.entries(chain):
            if entry.get("kind") == kind:
                found = entry
        return found


def _first_line(path: Path) -> dict[str, Any] | None:
    with path.open("rb") as handle:
        line = handle.readline()
    return orjson.loads(line) if line.strip() else None


def _last_line(path: Path) -> dict[str, Any] | None:
    """The last entry of a file, read from its end (a chain file only ever grows)."""
    if not path.exists():
        return None
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        size = _TAIL_CHUNK
        while True:
            start = max(end - size, 0)
            handle.seek(start)
            lines = [line for line in handle.read(end - start).split(b"\n") if line.strip()]
            if lines and (start == 0 or len(lines) > 1):
                entry: dict[str, Any] = orjson.loads(lines[-1])
                return entry
            if start == 0:
                return None
            size *= 2
