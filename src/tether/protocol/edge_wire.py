"""The edge ↔ gateway link (``tether:edge``, version 1): the frames and their parsing. See ``docs/edge.md``.

Uplink (edge → gateway), one JSON text message each:

- ``tether:edge.turn``: run one agent request. The request is named by its content hash (``id``) and crosses as a
  structural delta (:mod:`tether.protocol.delta`) against a request the gateway holds (``base``, or ``null``).
  ``headers`` are the agent's own request headers (its credentials among them) as a delta against the previous
  turn's on the same connection, kept only in that connection's memory; omitted, they are unchanged.
  ``session`` (Responses only) names the agent's WebSocket-mode connection on the edge: its turns share one engine
  connection on the gateway (``store=false`` continuations), and their events cross without SSE framing.
- ``tether:edge.resume``: send the events of a turn after sequence number ``after``.

Downlink (gateway → edge):

- ``tether:edge.out``: one numbered piece of a turn's answer: its ``head`` (status and headers), an SSE event of the
  upstream (``sse``: ``[event name or null, data]``), a Responses event in compact form (``event``, with ``x``
  naming the request fields it echoed and that were left out), a whole ``body``, a whole JSON body in compact form
  (``json`` with ``x``), or the ``end``.
- ``tether:edge.refused``: a turn or resume the gateway cannot serve, with a ``code`` the edge acts on
  (``unknown_base``/``unknown_reference``/``delta_mismatch`` → resend the whole request; ``turn_not_found`` → send
  the turn again; ``headers_unknown`` → send the turn again with its whole headers: a frame refused unread may
  have carried a headers delta the gateway never applied).
- ``error``: the WebSocket error event (``status``, ``error`` with ``code``, ``message``, ``param``). With ``turn``
  it ends that turn with the agent's error (a request over a client's limits: ``too_many_json_values``,
  ``json_too_deep``, ``request_too_large``); without, the link's (a refused key, a frame that cannot be read),
  which ends every turn in flight.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NotRequired, TypeAlias, TypedDict

from tether.protocol.delta import MISSING, DeltaError, apply
from tether.protocol.errors import ProtocolError
from tether.types import JSONObject

VERSION: Final = 1
PATH: Final = "/v1/tether/edge"
TURN: Final = "tether:edge.turn"
RESUME: Final = "tether:edge.resume"
OUT: Final = "tether:edge.out"
REFUSED: Final = "tether:edge.refused"

API: TypeAlias = Literal["anthropic-messages", "chat-completions", "responses"]
APIS: Final[frozenset[str]] = frozenset({"anthropic-messages", "chat-completions", "responses"})

UNKNOWN_BASE: Final = "unknown_base"
UNKNOWN_REFERENCE: Final = "unknown_reference"
DELTA_MISMATCH: Final = "delta_mismatch"
TURN_NOT_FOUND: Final = "turn_not_found"
HEADERS_UNKNOWN: Final = "headers_unknown"
HEAL_CODES: Final[frozenset[str]] = frozenset({UNKNOWN_BASE, UNKNOWN_REFERENCE, DELTA_MISMATCH})


class TurnFrame(TypedDict):
    type: Literal["tether:edge.turn"]
    turn: str
    api: API
    path: str
    id: str
    base: str | None
    patch: list[Any]
    headers: NotRequired[list[Any]]
    session: NotRequired[str]


class ResumeFrame(TypedDict):
    type: Literal["tether:edge.resume"]
    turn: str
    after: int


class Head(TypedDict):
    status: int
    headers: dict[str, str]


class OutFrame(TypedDict):
    type: Literal["tether:edge.out"]
    turn: str
    seq: int
    head: NotRequired[Head]
    sse: NotRequired[list[str | None]]
    event: NotRequired[JSONObject]
    x: NotRequired[list[list[Any]]]
    body: NotRequired[str]
    json: NotRequired[JSONObject]
    end: NotRequired[bool]


class RefusedFrame(TypedDict):
    type: Literal["tether:edge.refused"]
    turn: str
    code: str
    message: str
    missing: NotRequired[list[str]]


Piece: TypeAlias = dict[str, Any]
"""The payload of an ``out`` frame without ``type``/``turn``/``seq``: what the gateway's turn log holds."""


def out_frame(turn: str, seq: int, piece: Piece) -> JSONObject:
    return {"type": OUT, "turn": turn, "seq": seq, **piece}


def error_frame(error: ProtocolError, turn: str | None) -> JSONObject:
    """The WebSocket error event of ``error``, naming the turn it ends (``None``: the link's, which ends every turn
    in flight, as a refused link does)."""
    frame: JSONObject = {**error.ws_event()}
    if turn is not None:
        frame["turn"] = turn
    return frame


def refused_frame(turn: str, code: str, message: str, missing: tuple[str, ...] = ()) -> RefusedFrame:
    frame: RefusedFrame = {"type": REFUSED, "turn": turn, "code": code, "message": message}
    if missing:
        frame["missing"] = list(missing)
    return frame


def _bad(message: str, param: str) -> ProtocolError:
    return ProtocolError(400, "invalid_edge_frame", message, param=param)


def parse_uplink(frame: Any) -> TurnFrame | ResumeFrame:
    """Check a decoded uplink frame.

    Raises:
        ProtocolError: 400 ``invalid_edge_frame`` naming the field at fault.
    """
    if not isinstance(frame, dict):
        raise _bad("An edge frame must be a JSON object.", "type")
    kind = frame.get("type")
    turn = frame.get("turn")
    if not isinstance(turn, str) or not 0 < len(turn) <= 128:
        raise _bad("'turn' must be a string of 1 to 128 characters.", "turn")
    if kind == RESUME:
        after = frame.get("after")
        if not isinstance(after, int) or isinstance(after, bool) or after < -1:
            raise _bad("'after' must be an integer of at least -1.", "after")
        return {"type": RESUME, "turn": turn, "after": after}
    if kind != TURN:
        raise _bad(f"Unknown edge frame type {kind!r}.", "type")
    api, path, digest, base, patch = (frame.get(key) for key in ("api", "path", "id", "base", "patch"))
    if api not in APIS:
        raise _bad(f"'api' must be one of {sorted(APIS)}.", "api")
    if not isinstance(path, str) or not path.startswith("/"):
        raise _bad("'path' must be the request's path.", "path")
    if not isinstance(digest, str):
        raise _bad("'id' must be the request's content hash.", "id")
    if base is not None and not isinstance(base, str):
        raise _bad("'base' must be a content hash or null.", "base")
    if not isinstance(patch, list):
        raise _bad("'patch' must be a delta node.", "patch")
    parsed: TurnFrame = {
        "type": TURN, "turn": turn, "api": api, "path": path, "id": digest, "base": base, "patch": patch
    }  # fmt: skip
    headers = frame.get("headers")
    if headers is not None:
        if not isinstance(headers, list):
            raise _bad("'headers' must be a delta node.", "headers")
        parsed["headers"] = headers
    session = frame.get("session")
    if session is not None:
        if not isinstance(session, str) or not 0 < len(session) <= 128 or api != "responses":
            raise _bad("'session' must be a string of 1 to 128 characters, on a responses turn.", "session")
        parsed["session"] = session
    return parsed


def whole_headers(node: object) -> bool:
    """Whether a turn frame's ``headers`` rebuild the headers from nothing (``["v", ...]``), whatever the previous."""
    return isinstance(node, list) and len(node) == 2 and node[0] == "v"


def headers_of(previous: dict[str, str] | None, node: list[Any]) -> dict[str, str]:
    """The agent headers a turn frame's ``headers`` delta rebuilds.

    Raises:
        ProtocolError: 400 ``invalid_edge_frame`` for a malformed delta or headers that are not strings.
    """
    try:
        headers = apply(MISSING if previous is None else previous, node, _no_references)
    except DeltaError as error:
        raise _bad(f"'headers': {error}", "headers") from None
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise _bad("'headers' must rebuild an object of strings.", "headers")
    return headers


def _no_references(digest: str) -> Any:
    raise KeyError(digest)
