"""The hash chain of an audit log, sans I/O: sealing entries and verifying a sequence of lines.

Every entry carries its chain's sequence number ``seq`` (0 for the first), the hash of the entry before it
(``prev``, :data:`GENESIS` for the first) and its own ``hash``: SHA-256 of its canonical JSON without ``hash``. So
altering a line breaks its hash, and removing, inserting or reordering lines breaks the ``seq``/``prev`` links of the
line where it happened. The manifest of an export names each chain's first link and last hash, so lines cut from
either end are caught too. (Anyone can recompute a whole chain: compare the manifest's ``chain_head`` with the head
of the live log, or a copy kept elsewhere, to rule that out.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tether.types import JSONObject

GENESIS = "0" * 64
SYSTEM_CHAIN = "system"  # the chain of server-wide acts (start-up key changes, purges); tenant chains are "tenant:T"


def chain_of(entry: Mapping[str, Any]) -> str:
    tenant = entry.get("tenant")
    return SYSTEM_CHAIN if tenant is None else f"tenant:{tenant}"


def entry_hash(entry: Mapping[str, Any]) -> str:
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def seal(body: Mapping[str, Any], *, seq: int, prev: str) -> JSONObject:
    """The entry ``body`` as the next link of a chain whose last entry is ``seq - 1`` with hash ``prev``."""
    entry: JSONObject = {**body, "seq": seq, "prev": prev}
    entry["hash"] = entry_hash(entry)
    return entry


@dataclass(frozen=True, slots=True)
class Problem:
    """The first bad line of a file (1-based; one past the end when lines are missing there) and what is wrong."""

    line: int
    reason: str


@dataclass(slots=True)
class _Link:
    seq: int
    hash: str
    line: int
    count: int


def verify(lines: Iterable[str], manifest: Mapping[str, Any] | None = None) -> Problem | None:
    """Check an exported file's lines; ``None`` when every chain in it is whole.

    Args:
        lines: the file's lines, in order.
        manifest: the export's manifest; without one, lines cut from the start or end of a chain go unnoticed.
    """
    expected: Mapping[str, Any] = (manifest or {}).get("chains", {})
    last: dict[str, _Link] = {}
    number = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            return Problem(number, "not a JSON line")
        if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
            return Problem(number, "not an audit entry (no seq)")
        if entry.get("hash") != entry_hash(entry):
            return Problem(number, "altered: its hash does not match its content")
        chain = chain_of(entry)
        link = last.get(chain)
        if link is not None:
            if entry["seq"] != link.seq + 1 or entry.get("prev") != link.hash:
                return Problem(
                    number,
                    f"does not follow line {link.line} of chain {chain} (seq {entry['seq']} after {link.seq}): a "
                    "line was removed, inserted or moved here",
                )
        elif chain in expected:
            first = expected[chain]
            if entry["seq"] != first.get("first_seq") or entry.get("prev") != first.get("first_prev"):
                return Problem(number, f"chain {chain} does not start where the manifest says: lines removed before")
        elif manifest is not None:
            return Problem(number, f"chain {chain} is not in the manifest: the line was inserted")
        last[chain] = _Link(entry["seq"], entry["hash"], number, (link.count if link else 0) + 1)
    for chain, first in expected.items():
        link = last.get(chain)
        if link is None or link.count != first.get("count") or link.hash != first.get("last_hash"):
            return Problem(number + 1, f"chain {chain} ends early: the manifest has lines the file has not")
    return None
