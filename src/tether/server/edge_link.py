"""The gateway's end of the ``tether:edge`` link: a WebSocket (permessage-deflate) at ``/v1/tether/edge``, and the
same frames over HTTP for an edge whose WebSocket is blocked (one uplink frame per ``POST``, the answer as SSE).

Each turn frame is rebuilt into the exact request the agent sent (its content hash is checked), held for later
deltas, and answered from the turn log (:mod:`tether.server.edge_turns`), so resumes and repeats never generate
twice. The agent's headers live only in this connection's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from tether.engine.cache import ConnectionState
from tether.engine.engine import Engine
from tether.protocol import edge_wire as wire
from tether.protocol.delta import MISSING, DeltaError, apply, references, size_at_least, value_hash
from tether.protocol.errors import ProtocolError
from tether.server.auth import Authenticator
from tether.server.edge_content import EdgeContent
from tether.server.edge_dispatch import dispatch
from tether.server.edge_turns import EdgeTurns, TurnLog
from tether.server.http import read_body

_log = structlog.get_logger("tether.server.edge")


@dataclass(frozen=True, slots=True)
class EdgeGateway:
    """What the edge endpoints share: the held content, the turn logs, the engine they run Responses turns on."""

    engine: Engine
    auth: Authenticator
    content: EdgeContent
    turns: EdgeTurns
    max_frame_bytes: int
    sessions: OrderedDict[tuple[str, str], ConnectionState] = field(default_factory=OrderedDict)
    max_sessions: int = 1024

    def session(self, tenant: str, name: str) -> ConnectionState:
        """The engine connection of an agent's WebSocket-mode connection on an edge (least recently used go)."""
        key = (tenant, name)
        state = self.sessions.get(key)
        if state is None:
            state = self.engine.connect(tenant)
            self.sessions[key] = state
            while len(self.sessions) > self.max_sessions:
                _, dropped = self.sessions.popitem(last=False)
                dropped.clear()
        self.sessions.move_to_end(key)
        return state

    async def open_turn(
        self, tenant: str, frame: wire.TurnFrame, headers: Mapping[str, str] | None
    ) -> TurnLog | wire.RefusedFrame:
        """The log answering a turn frame: the existing one for a repeated turn, else a new turn on the rebuilt
        request, or the refusal the edge heals from. The base and references come from this node's memory or,
        failing that, the store (another node, or this one before a restart, held them)."""
        turn = frame["turn"]
        existing = self.turns.get(tenant, turn)
        if existing is not None:
            return existing
        await self.content.load(tenant, [*([frame["base"]] if frame["base"] else []), *references(frame["patch"])])
        base = MISSING
        if frame["base"] is not None:
            try:
                base = self.content.get(tenant, frame["base"])
            except KeyError:
                return wire.refused_frame(turn, wire.UNKNOWN_BASE, "The gateway does not hold the delta's base.")
        try:
            request = apply(base, frame["patch"], lambda digest: self.content.get(tenant, digest))
        except DeltaError as error:
            code = wire.UNKNOWN_REFERENCE if error.missing else wire.DELTA_MISMATCH
            return wire.refused_frame(turn, code, str(error), error.missing)
        if size_at_least(request, self.max_frame_bytes) > self.max_frame_bytes:
            return wire.refused_frame(turn, "request_too_large", "The rebuilt request exceeds the gateway's limit.")
        if not isinstance(request, dict) or value_hash(request) != frame["id"]:
            return wire.refused_frame(turn, wire.DELTA_MISMATCH, "The rebuilt request does not match its hash.")
        # A request the agent asked not to be stored (Responses' store=false) stays in this node's memory.
        await self.content.hold(tenant, request, durable=request.get("store") is not False)
        api, path = frame["api"], frame["path"]
        connection = self.session(tenant, frame["session"]) if "session" in frame else None
        _log.info("edge.turn", turn=turn, api=api, base=frame["base"] is not None, websocket=connection is not None)
        return self.turns.start(
            tenant,
            turn,
            lambda: dispatch(
                self.engine, api, path, request, dict(headers or {}), tenant=tenant, turn=turn, connection=connection
            ),
        )


def edge_gateway(connection: Request | WebSocket) -> EdgeGateway:
    gateway: EdgeGateway = connection.app.state.tether_edge
    return gateway


def _decode_frame(raw: str | bytes) -> wire.TurnFrame | wire.ResumeFrame:
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError(400, "invalid_json", "An edge frame must be JSON.") from None
    return wire.parse_uplink(decoded)


async def edge_websocket(websocket: WebSocket) -> None:
    gateway = edge_gateway(websocket)
    try:
        tenant = gateway.auth.tenant(websocket.headers)
    except ProtocolError as error:
        await websocket.accept()
        await websocket.send_text(orjson.dumps(error.ws_event()).decode())
        await websocket.close(1008)
        return
    await websocket.accept()
    link = _LinkConnection(websocket, gateway, tenant)
    try:
        await link.run()
    finally:
        await link.aclose()


class _LinkConnection:
    def __init__(self, websocket: WebSocket, gateway: EdgeGateway, tenant: str) -> None:
        self.websocket = websocket
        self.gateway = gateway
        self.tenant = tenant
        self.headers: dict[str, str] | None = None
        self._send_lock = asyncio.Lock()
        self._followers: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        while True:
            try:
                message = await self.websocket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes") or b""
            try:
                if len(raw) > self.gateway.max_frame_bytes:
                    raise ProtocolError(413, "frame_too_large", "The edge frame exceeds the gateway's limit.")
                frame = _decode_frame(raw)
            except ProtocolError as error:
                await self._send(error.ws_event())
                continue
            await self._handle(frame)

    async def _handle(self, frame: wire.TurnFrame | wire.ResumeFrame) -> None:
        turn = frame["turn"]
        if frame["type"] == wire.RESUME:
            log: TurnLog | wire.RefusedFrame | None = self.gateway.turns.get(self.tenant, turn)
            after = frame["after"]
            if log is None:
                log = wire.refused_frame(turn, wire.TURN_NOT_FOUND, "The gateway has no log of this turn.")
        else:
            if "headers" in frame:
                try:
                    self.headers = wire.headers_of(self.headers, frame["headers"])
                except ProtocolError as error:
                    self._followers[turn] = asyncio.create_task(self._send(error.ws_event()))
                    return
            log = await self.gateway.open_turn(self.tenant, frame, self.headers)
            after = -1
        if isinstance(log, TurnLog):
            previous = self._followers.pop(turn, None)
            if previous is not None:
                previous.cancel()
            self._followers[turn] = asyncio.create_task(self._follow(turn, log, after))
        else:
            self._followers[turn] = asyncio.create_task(self._send(dict(log)))

    async def _follow(self, turn: str, log: TurnLog, after: int) -> None:
        async for seq, piece in log.follow(after):
            await self._send(wire.out_frame(turn, seq, piece))

    async def _send(self, frame: Mapping[str, object]) -> None:
        async with self._send_lock:
            with contextlib.suppress(Exception):  # a dropped link: the edge resumes from what it saw
                await self.websocket.send_text(orjson.dumps(frame).decode())

    async def aclose(self) -> None:
        for task in self._followers.values():
            task.cancel()
        await asyncio.gather(*self._followers.values(), return_exceptions=True)


async def edge_http(request: Request) -> Response:
    """One uplink frame in, the frames that answer it out as SSE (``data: <frame>``)."""
    gateway = edge_gateway(request)
    tenant = gateway.auth.tenant(request.headers)
    frame = _decode_frame(await read_body(request, gateway.max_frame_bytes))
    headers = wire.headers_of(None, frame["headers"]) if frame["type"] == wire.TURN and "headers" in frame else {}
    turn = frame["turn"]
    if frame["type"] == wire.RESUME:
        log: TurnLog | wire.RefusedFrame | None = gateway.turns.get(tenant, turn)
        after = frame["after"]
        if log is None:
            log = wire.refused_frame(turn, wire.TURN_NOT_FOUND, "The gateway has no log of this turn.")
    else:
        log = await gateway.open_turn(tenant, frame, headers)
        after = -1
    if not isinstance(log, TurnLog):
        return Response(orjson.dumps(log), status_code=409, media_type="application/json")
    return StreamingResponse(_frames(turn, log, after), media_type="text/event-stream")


async def _frames(turn: str, log: TurnLog, after: int) -> AsyncIterator[bytes]:
    async for seq, piece in log.follow(after):
        yield b"data: " + orjson.dumps(wire.out_frame(turn, seq, piece)) + b"\n\n"
