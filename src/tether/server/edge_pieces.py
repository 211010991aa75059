"""The pieces of an answer every edge path builds: its head, a refusal in full, and the end of an interrupted turn."""

from __future__ import annotations

from typing import Final

import orjson

from tether.protocol.edge_wire import Piece
from tether.protocol.errors import ProtocolError
from tether.types import JSONObject

JSON_HEAD: Piece = {"head": {"status": 200, "headers": {"content-type": "application/json"}}}
SSE_HEAD: Piece = {
    "head": {"status": 200, "headers": {"content-type": "text/event-stream", "cache-control": "no-cache"}}
}

INTERRUPTED_END: Final[Piece] = {
    "end": True,
    "interrupted": True,
    "error": "The gateway node generating this answer stopped before it finished; nothing of it was kept.",
}
"""The end of a turn whose generation was interrupted (its node died): the edge retries the turn. ``error`` is what
an edge that does not know ``interrupted`` says to the agent."""


def with_generation(head: Piece, generation: str) -> Piece:
    """A head naming the generation that answers (the response id): a turn sent again after the gateway lost it is
    answered by the same generation (its pieces are the same, numbered alike) or by a new one (start over)."""
    return {**head, "gen": generation}


def error_pieces(error: ProtocolError, body: JSONObject | None = None) -> list[Piece]:
    """A refusal as the agent's API renders it: the status and the JSON error body."""
    headers = {"content-type": "application/json", **error.headers}
    rendered = orjson.dumps(body if body is not None else error.http_body()).decode()
    return [{"head": {"status": error.status, "headers": headers}}, {"body": rendered}, {"end": True}]
