"""An agent's request forwarded untouched to an upstream of its own API, and the answer relayed as it came.

The rebuilt request is serialised back to exactly the bytes the agent sent (the delta rebuilds it byte for byte), so
thinking blocks with signatures, ``cache_control``, images and fields tether does not know all reach the upstream.
Its SSE events cross the link one piece each (re-framed by the edge into the same events); a JSON answer crosses
whole.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping

import orjson

from tether.protocol.edge_wire import Piece
from tether.protocol.errors import ProtocolError
from tether.protocol.sse import SSEDecoder
from tether.providers.raw_forward import RawForwarding, RawRequest
from tether.server.edge_pieces import error_pieces
from tether.types import JSONObject


async def forwarded_pieces(
    forwarder: RawForwarding,
    path: str,
    request: JSONObject,
    headers: Mapping[str, str],
    error_body: Callable[[ProtocolError], JSONObject],
) -> AsyncIterator[Piece]:
    """Forward ``request`` through ``forwarder`` and yield the answer's pieces.

    Args:
        error_body: how the agent's API words an upstream that could not be reached.
    """
    raw = RawRequest("POST", path, orjson.dumps(request), headers)
    started = False
    try:
        async with forwarder.forward(raw) as reply:
            # every forward is a new generation upstream: a turn sent again after the gateway lost it starts over
            yield {"head": {"status": reply.status, "headers": reply.headers}, "gen": uuid.uuid4().hex}
            started = True
            streamed = reply.headers.get("content-type", "").startswith("text/event-stream")
            if not streamed:
                yield {"body": (await reply.read()).decode("utf-8", errors="replace")}
                yield {"end": True}
                return
            decoder = SSEDecoder()
            async for chunk in reply.body():
                for event in decoder.decode(chunk):
                    yield {"sse": [event.event, event.data]}
            for event in decoder.flush():
                yield {"sse": [event.event, event.data]}
            yield {"end": True}
    except ProtocolError as error:
        if started:  # the answer broke mid-way: the edge says so in the agent's stream
            yield {"end": True, "error": error.message}
            return
        for piece in error_pieces(error, error_body(error)):
            yield piece
