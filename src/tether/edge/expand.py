"""The compact downlink re-expanded into the agent's own stream, in its API's framing (sans-I/O).

Each piece of a turn's answer becomes the bytes the agent would have read from the upstream directly: an SSE event
of the upstream re-framed, a Responses event with the request fields it echoed put back where they were, or a
whole body. Keep-alives and errors the edge itself must say are rendered in the agent's API too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tether.protocol.agent_apis.anthropic_body import anthropic_error
from tether.protocol.delta import MISSING, apply
from tether.protocol.edge_wire import API, Piece
from tether.protocol.errors import ErrorType, ProtocolError
from tether.protocol.sse import encode_event

_ANTHROPIC_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_SSE_COMMENT = b": keep-alive\n\n"


def sse_frame(event: str | None, data: str) -> bytes:
    lines = [b"event: " + event.encode()] if event else []
    lines.extend(b"data: " + line.encode() for line in data.split("\n"))
    return b"\n".join(lines) + b"\n\n"


def expand_event(event: dict[str, Any], left_out: list[list[Any]], request: Mapping[str, Any]) -> dict[str, Any]:
    """Put the echoed request fields back into a compact Responses event, each rebuilt at its position.

    Raises:
        DeltaError: a malformed ``x``.
    """
    response = event.get("response")
    if not left_out or not isinstance(response, dict):
        return event
    entries = list(response.items())
    for key, position, node in sorted(left_out, key=lambda entry: int(entry[1])):
        entries.insert(int(position), (str(key), apply(request.get(str(key), MISSING), node, _no_references)))
    return {**event, "response": dict(entries)}


def _no_references(digest: str) -> Any:
    raise KeyError(digest)


def piece_bytes(piece: Piece, request: Mapping[str, Any]) -> bytes:
    """The bytes one downlink piece means for the agent (``b""`` for the head and the end)."""
    if "sse" in piece:
        name, data = piece["sse"]
        return sse_frame(name, data)
    if "event" in piece:
        return encode_event(expand_event(piece["event"], piece.get("x") or [], request))
    if "json" in piece:
        body_event = expand_event({"response": piece["json"]}, piece.get("x") or [], request)
        return orjson.dumps(body_event["response"])
    if "body" in piece:
        body: str = piece["body"]
        return body.encode()
    return b""


def keepalive(api: API, started: bool) -> bytes:
    """What keeps the agent's stream alive while its answer waits: Anthropic's own ``ping`` once its stream has
    started (the API sends none before ``message_start``), else an SSE comment, which every client skips."""
    return _ANTHROPIC_PING if api == "anthropic-messages" and started else _SSE_COMMENT


def refusal(status: int, code: str, message: str) -> ProtocolError:
    """A refusal of the edge or the gateway as a protocol error: a 4xx is the agent's request at fault."""
    return ProtocolError(
        status, code, message, error_type=ErrorType.INVALID_REQUEST if status < 500 else ErrorType.SERVER
    )


def error_body(api: API, status: int, code: str, message: str) -> bytes:
    """A refusal as the agent's API words it, for a response not yet started: its error type follows the status
    (a 4xx is the agent's request at fault, as each API says; a 503 is the gateway out of reach, which Anthropic's
    clients retry as an overload)."""
    error = refusal(status, code, message)
    if api == "anthropic-messages":
        body = anthropic_error(error)
        if status == 503:
            body["error"]["type"] = "overloaded_error"
        return orjson.dumps(body)
    return orjson.dumps(error.http_body())


def stream_error(api: API, code: str, message: str) -> bytes:
    """An error inside a stream already under way, in the agent's API's framing."""
    if api == "anthropic-messages":
        return sse_frame(
            "error", orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}}).decode()
        )
    if api == "chat-completions":
        return sse_frame(
            None, orjson.dumps({"error": {"message": message, "type": "server_error", "code": code}}).decode()
        )
    event = {"type": "error", "code": code, "message": message, "param": None}
    return encode_event(event)
