"""Exporting chains to one JSON-lines file with a manifest, and reading an export back for verification."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tether.audit.log import AuditLog, timestamp
from tether.types import JSONObject

FORMAT = "tether-audit-export/1"


def manifest_path(export: Path) -> Path:
    return export.with_name(export.name + ".manifest.json")


def parse_time(text: str) -> str:
    """An ISO 8601 time (``Z`` or an offset; naive means UTC) in the entries' own form, for comparing as text."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return timestamp(moment.timestamp())


@dataclass(frozen=True, slots=True)
class ExportFilter:
    """Which entries to export: one tenant's chain (else every chain), within ``since``..``until`` inclusive."""

    tenant: str | None = None
    since: str | None = None
    until: str | None = None

    def chain_wanted(self, chain: str) -> bool:
        return self.tenant is None or chain == f"tenant:{self.tenant}"

    def entry_wanted(self, entry: JSONObject) -> bool:
        moment = str(entry.get("time", ""))
        return (self.since is None or moment >= self.since) and (self.until is None or moment <= self.until)


def export(log: AuditLog, output: Path, selection: ExportFilter, *, now: float) -> JSONObject:
    """Write the selected entries to ``output`` (chain by chain, each in order) and its manifest beside it.

    Returns:
        The manifest: per chain the first exported link, the count, the last exported hash, and the chain's head.
    """
    chains: dict[str, Any] = {}
    lines = 0
    with output.open("wb") as handle:
        for chain in log.chains():
            if not selection.chain_wanted(chain):
                continue
            summary: JSONObject | None = None
            length = 0
            for entry in log.entries(chain):
                length += 1
                if not selection.entry_wanted(entry):
                    continue
                handle.write(orjson.dumps(entry) + b"\n")
                lines += 1
                if summary is None:
                    summary = {"first_seq": entry["seq"], "first_prev": entry["prev"], "count": 0}
                summary["count"] += 1
                summary["last_hash"] = entry["hash"]
            head = log.head(chain)
            if summary is not None:
                chains[chain] = {**summary, "chain_head": head.hash, "chain_length": length}
    manifest: JSONObject = {
        "format": FORMAT,
        "exported_at": timestamp(now),
        "filter": {"tenant": selection.tenant, "since": selection.since, "until": selection.until},
        "lines": lines,
        "chains": chains,
    }
    manifest_path(output).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest
