"""Item helpers: content addressing and input-item ids."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from tether.protocol import ids
from tether.protocol.input_items import as_message
from tether.types import Item, JSONObject

_INPUT_ID_PREFIX = {"message": "msg", "function_call_output": "fco", "function_call": "fc", "reasoning": "rs"}


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The content hash of an item's canonical JSON, an estimate of its size in tokens, and its size in bytes.

    ``size`` is the length of the item's compact JSON (key order does not change it), so the size of a request
    carrying the item is known without serializing it again.
    """

    digest: str
    tokens: int
    size: int


def fingerprint(item: Item) -> Fingerprint:
    canonical = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.blake2b(canonical, digest_size=16).hexdigest()
    return Fingerprint(digest=digest, tokens=estimate_tokens(canonical), size=len(canonical))


def fingerprints(items: Sequence[Item]) -> list[Fingerprint]:
    """The fingerprint of each item, in order (pure, so a long list can be hashed on a worker thread)."""
    return [fingerprint(item) for item in items]


def estimate_tokens(data: bytes | str) -> int:
    """A cheap, deterministic token estimate (about four bytes per token), never zero for non-empty data."""
    return (len(data) + 3) // 4


def input_item_id(item: Item) -> str:
    """The id an input item is listed under: its own if it has one, else a new one with the type's prefix."""
    existing = item.get("id")
    if isinstance(existing, str) and existing:
        return existing
    return ids.new_id(_INPUT_ID_PREFIX.get(str(item.get("type")), "item"))


def listed_input_item(item: Item, item_id: str) -> Item:
    """An input item as ``GET /v1/responses/{id}/input_items`` lists it: with its id, a status, and message content
    as typed parts (clients validate string content there as an error)."""
    listed: Item = {**item, "id": item_id}
    message = as_message(listed)
    if message is not None and isinstance(text := message["content"], str):
        part_type = "output_text" if message["role"] == "assistant" else "input_text"
        part: JSONObject = {"type": part_type, "text": text}
        if part_type == "output_text":
            part["annotations"] = []
        message["content"] = [part]
    if listed.get("type") in ("message", "function_call", "function_call_output"):
        listed.setdefault("status", "completed")
    return listed
