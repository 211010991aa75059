"""Standalone compaction (``POST /v1/responses/compact``).

tether's compaction is lossless: the window it returns is one ``compaction`` item whose ``encrypted_content`` is an
opaque envelope (``tether:v1:`` + base64url of the items' JSON; not encrypted: it holds what the client already
has) followed by nothing else. A client starts a new chain with ``input = window + new items``; providers that
rebuild contexts for stateless upstreams expand the envelope back into the items it holds.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import orjson

from tether.protocol import ids
from tether.protocol.input_items import Compaction
from tether.protocol.json_depth import too_deep
from tether.types import Item

ENVELOPE_PREFIX = "tether:v1:"


def compaction_item(items: Sequence[Item]) -> Item:
    payload = base64.urlsafe_b64encode(orjson.dumps(list(items))).decode()
    return {"id": ids.new_id("cmp"), "type": "compaction", "encrypted_content": ENVELOPE_PREFIX + payload}


def expand_compaction(item: Compaction) -> list[Item] | None:
    """The items a tether compaction item holds, or ``None`` for another producer's opaque item."""
    content = item["encrypted_content"]
    if not content.startswith(ENVELOPE_PREFIX):
        return None
    try:
        items = orjson.loads(base64.urlsafe_b64decode(content[len(ENVELOPE_PREFIX) :]))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return items if isinstance(items, list) and not too_deep(items) else None
