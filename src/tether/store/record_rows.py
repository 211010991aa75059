"""How the SQL stores lay one ``ResponseRecord`` out as a row, and read it back.

Items live in their own table keyed by content hash, so a row names its items by hash. SQLite keeps list columns
as JSON text and PostgreSQL as arrays: the caller passes how a list of hashes or ids is written and read
(``dump_list``/``load_list``); every other column is encoded the same way in both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tether.store.base import ResponseRecord

COLUMNS = (
    "id",
    "tenant",
    "parent_id",
    "depth",
    "model",
    "status",
    "created_at",
    "completed_at",
    "params",
    "input_hashes",
    "input_ids",
    "output_hashes",
    "usage",
    "error",
    "incomplete_details",
    "events",
    "snapshot",
    "expires_at",
    "idempotency_key",
)

DumpList = Callable[[list[str]], Any]
LoadList = Callable[[Any], list[str]]


def item_bodies(record: ResponseRecord) -> dict[str, bytes]:
    """The record's input and output items encoded once per content hash."""
    items: dict[str, bytes] = {}
    for digest, item in zip(
        record.input_hashes + record.output_hashes, record.input_items + record.output_items, strict=True
    ):
        if digest not in items:
            items[digest] = orjson.dumps(item)
    return items


def record_row(record: ResponseRecord, dump_list: DumpList) -> dict[str, Any]:
    """The row's column values, keyed by column name (in ``COLUMNS`` order)."""
    return {
        "id": record.id,
        "tenant": record.tenant,
        "parent_id": record.parent_id,
        "depth": record.depth,
        "model": record.model,
        "status": record.status,
        "created_at": record.created_at,
        "completed_at": record.completed_at,
        "params": orjson.dumps(record.params),
        "input_hashes": dump_list(record.input_hashes),
        "input_ids": dump_list(record.input_ids),
        "output_hashes": dump_list(record.output_hashes),
        "usage": dump_optional(record.usage),
        "error": dump_optional(record.error),
        "incomplete_details": dump_optional(record.incomplete_details),
        "events": orjson.dumps(record.events),
        "snapshot": None if record.snapshot is None else dump_list(record.snapshot),
        "expires_at": record.expires_at,
        "idempotency_key": record.idempotency_key,
    }


def item_hashes(fields: Mapping[str, Any], load_list: LoadList) -> list[str]:
    """Every item hash a row names (input then output), to fetch their bodies before ``record_from_row``."""
    return load_list(fields["input_hashes"]) + load_list(fields["output_hashes"])


def record_from_row(fields: Mapping[str, Any], bodies: Mapping[str, bytes], load_list: LoadList) -> ResponseRecord:
    """The record a row describes; ``bodies`` holds every item the row names, by hash."""
    input_hashes = load_list(fields["input_hashes"])
    output_hashes = load_list(fields["output_hashes"])
    snapshot = fields["snapshot"]
    return ResponseRecord(
        id=fields["id"],
        tenant=fields["tenant"],
        parent_id=fields["parent_id"],
        depth=fields["depth"],
        model=fields["model"],
        status=fields["status"],
        created_at=fields["created_at"],
        completed_at=fields["completed_at"],
        params=orjson.loads(fields["params"]),
        input_items=[orjson.loads(bodies[digest]) for digest in input_hashes],
        input_hashes=input_hashes,
        input_ids=load_list(fields["input_ids"]),
        output_items=[orjson.loads(bodies[digest]) for digest in output_hashes],
        output_hashes=output_hashes,
        usage=load_optional(fields["usage"]),
        error=load_optional(fields["error"]),
        incomplete_details=load_optional(fields["incomplete_details"]),
        expires_at=fields["expires_at"],
        events=orjson.loads(fields["events"]),
        snapshot=None if snapshot is None else load_list(snapshot),
        idempotency_key=fields["idempotency_key"],
    )


def dump_optional(value: object) -> bytes | None:
    return None if value is None else orjson.dumps(value)


def load_optional(blob: bytes | None) -> Any:
    return None if blob is None else orjson.loads(blob)
