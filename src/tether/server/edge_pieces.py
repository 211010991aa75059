"""The pieces of an answer every edge path builds: its head, and a refusal in full."""

from __future__ import annotations

import orjson

from tether.protocol.edge_wire import Piece
from tether.protocol.errors import ProtocolError
from tether.types import JSONObject

JSON_HEAD: Piece = {"head": {"status": 200, "headers": {"content-type": "application/json"}}}
SSE_HEAD: Piece = {
    "head": {"status": 200, "headers": {"content-type": "text/event-stream", "cache-control": "no-cache"}}
}


def error_pieces(error: ProtocolError, body: JSONObject | None = None) -> list[Piece]:
    """A refusal as the agent's API renders it: the status and the JSON error body."""
    headers = {"content-type": "application/json", **error.headers}
    rendered = orjson.dumps(body if body is not None else error.http_body()).decode()
    return [{"head": {"status": error.status, "headers": headers}}, {"body": rendered}, {"end": True}]
