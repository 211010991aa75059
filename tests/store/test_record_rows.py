"""The SQL stores' row layout: a record survives the round trip through either list encoding."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from tether.store.record_rows import COLUMNS, DumpList, LoadList, item_bodies, item_hashes, record_from_row, record_row

from .contract import make_record, message

# SQLite writes lists as JSON text, PostgreSQL as arrays (the driver hands back a list).
CODECS: dict[str, tuple[DumpList, LoadList]] = {"json-text": (orjson.dumps, orjson.loads), "array": (list, list)}


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("snapshot", [None, ["a", "b"]])
def test_a_record_survives_the_row_round_trip(codec: str, snapshot: list[str] | None) -> None:
    dump, load = CODECS[codec]
    shared = message("the same text twice")
    record = make_record("resp_1", inputs=[shared, shared, message("other")], snapshot=snapshot)
    record = dataclasses.replace(record, usage={"input_tokens": 3}, error=None, events=[{"type": "response.created"}])

    row: dict[str, Any] = record_row(record, dump)
    bodies = item_bodies(record)

    assert tuple(row) == COLUMNS
    assert len(bodies) == 3  # input items stored once per content hash, plus the output
    assert set(item_hashes(row, load)) == set(bodies)
    assert record_from_row(row, bodies, load) == record


def test_a_missing_item_body_is_a_key_error_not_a_silent_gap() -> None:
    record = make_record("resp_2")
    row = record_row(record, list)
    bodies = item_bodies(record)
    bodies.pop(record.output_hashes[0])
    with pytest.raises(KeyError):
        record_from_row(row, bodies, list)
