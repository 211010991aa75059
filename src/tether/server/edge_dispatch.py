"""Where a rebuilt edge request goes, and the pieces of its answer.

- A Responses request runs on tether's own engine exactly as if the agent had sent it to ``POST /v1/responses``; its
  events cross in compact form (the request fields a lifecycle event echoes are left out, and the edge puts them
  back). The agent's credential headers ride with the turn (:attr:`TurnOrigin.credentials`, in memory only), for a
  provider with no key of its own to send upstream.
- An Anthropic Messages or Chat Completions request whose model routes to an upstream of the same API is forwarded
  untouched (:mod:`tether.server.edge_forward`); to any other upstream, translated
  (:mod:`tether.server.edge_translated`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from tether.engine.cache import ConnectionState
from tether.engine.engine import Engine
from tether.engine.observer import TurnOrigin
from tether.protocol.delta import diff
from tether.protocol.edge_wire import API, Piece
from tether.protocol.errors import ProtocolError, sse_error_shape
from tether.protocol.events import ErrorEvent, TerminalEvent, is_terminal
from tether.protocol.interrupted import is_interrupted_error
from tether.protocol.request import Transport, parse_create
from tether.protocol.stream import with_stream_id
from tether.providers.raw_forward import CREDENTIAL_HEADERS, raw_forwarder
from tether.server.edge_forward import forwarded_pieces
from tether.server.edge_pieces import INTERRUPTED_END, JSON_HEAD, SSE_HEAD, error_pieces, with_generation
from tether.server.edge_translated import CODECS, translated_pieces
from tether.types import JSONObject

ECHOED_FIELDS = ("instructions", "tools")
"""Request fields a Responses lifecycle event repeats in its ``response`` object."""


def compact(event: Mapping[str, Any], request: Mapping[str, Any]) -> Piece:
    """A Responses event without the request fields it echoes: ``x`` lists each as ``[field, position, delta]``,
    the delta rebuilding the echoed value from the request's (the engine normalises tools, so they differ a little).
    """
    response = event.get("response")
    if not isinstance(response, dict):
        return {"event": event}
    left_out: list[list[Any]] = []
    kept: JSONObject = {}
    for position, (key, value) in enumerate(response.items()):
        if key in ECHOED_FIELDS and key in request:
            left_out.append([key, position, diff(request[key], value)])
        else:
            kept[key] = value
    if not left_out:
        return {"event": event}
    return {"event": {**event, "response": kept}, "x": left_out}


def agent_origin(headers: Mapping[str, str]) -> TurnOrigin:
    """The origin of a turn an edge relayed: it carries the agent's credential headers (never its other headers)."""
    credentials = {name.lower(): value for name, value in headers.items() if name.lower() in CREDENTIAL_HEADERS}
    return TurnOrigin(credentials=credentials)


async def responses_pieces(
    engine: Engine, request: JSONObject, headers: Mapping[str, str], *, tenant: str, turn: str
) -> AsyncIterator[Piece]:
    """Run a Responses request on the engine, as ``POST /v1/responses`` would."""
    try:
        create = parse_create(request, Transport.HTTP)
        if create.idempotency_key is None:
            create.idempotency_key = f"edge:{turn}"
        live = await engine.create(create, tenant=tenant, origin=agent_origin(headers))
    except ProtocolError as error:
        for piece in error_pieces(error):
            yield piece
        return
    events = engine.follow(live)
    if create.stream:
        yield with_generation(SSE_HEAD, live.response_id)
        async for event in events:
            if is_interrupted_error(event):
                yield INTERRUPTED_END
                return
            event = with_stream_id(event, None)
            yield compact(sse_error_shape(event) if event["type"] == "error" else event, request)
        yield {"sse": [None, "[DONE]"]}
        yield {"end": True}
        return
    terminal: TerminalEvent | None = None
    failure: ErrorEvent | None = None
    async for event in events:
        if is_terminal(event):
            terminal = event
        elif event["type"] == "error":
            failure = event
    if failure is not None:
        if is_interrupted_error(failure):
            yield INTERRUPTED_END
            return
        inner = failure["error"]
        body = {key: value for key, value in inner.items() if key != "headers"}
        failed = ProtocolError(failure["status"], inner["code"], inner["message"])
        failed.headers = dict(inner.get("headers") or {})
        for piece in error_pieces(failed, {"error": body}):
            yield piece
        return
    if terminal is None:
        stopped = ProtocolError(503, "server_shutting_down", "The server stopped before the response finished.")
        for piece in error_pieces(stopped):
            yield piece
        return
    yield with_generation(JSON_HEAD, live.response_id)
    whole = compact({"type": "body", "response": terminal["response"]}, request)
    yield {"json": whole["event"]["response"], "x": whole.get("x", [])}
    yield {"end": True}


async def websocket_pieces(
    engine: Engine,
    request: JSONObject,
    headers: Mapping[str, str],
    connection: ConnectionState,
    *,
    tenant: str,
    turn: str,
) -> AsyncIterator[Piece]:
    """Run a WebSocket-mode ``response.create`` on the engine, on the agent connection's own engine connection (so
    ``store=false`` continuations find their parent), as tether's WebSocket endpoint would."""
    try:
        create = parse_create(request, Transport.WEBSOCKET)
        if create.idempotency_key is None:
            create.idempotency_key = f"edge:{turn}"
        origin = agent_origin(headers)
        live = await engine.create(create, tenant=tenant, connection=connection, lane=create.stream_id, origin=origin)
    except ProtocolError as error:
        yield {"head": {"status": 101, "headers": {}}}
        yield {"event": error.ws_event()}
        yield {"end": True}
        return
    yield with_generation({"head": {"status": 101, "headers": {}}}, live.response_id)
    async for event in engine.follow(live):
        if is_interrupted_error(event):
            yield INTERRUPTED_END
            return
        yield compact(with_stream_id(event, create.stream_id), request)
    yield {"end": True}


def dispatch(
    engine: Engine,
    api: API,
    path: str,
    request: JSONObject,
    headers: Mapping[str, str],
    *,
    tenant: str,
    turn: str,
    connection: ConnectionState | None = None,
) -> AsyncIterator[Piece]:
    """The pieces of the answer to one rebuilt request (``connection``: a WebSocket-mode session's)."""
    if connection is not None:
        return websocket_pieces(engine, request, headers, connection, tenant=tenant, turn=turn)
    if api == "responses":
        return responses_pieces(engine, request, headers, tenant=tenant, turn=turn)
    forwarder = raw_forwarder(engine.router.resolve(str(request.get("model", ""))), api)
    if forwarder is not None:  # the upstream speaks the agent's API: the request goes on untouched
        return forwarded_pieces(forwarder, path, request, headers, CODECS[api].error_body)
    return translated_pieces(engine, api, path, request, tenant=tenant, turn=turn)
