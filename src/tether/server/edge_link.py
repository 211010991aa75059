"""The gateway's end of the ``tether:edge`` link: a WebSocket (permessage-deflate) at ``/v1/tether/edge``, and the
same frames over HTTP for an edge whose WebSocket is blocked (one uplink frame per ``POST``, the answer as SSE).

Each turn frame is rebuilt into the exact request the agent sent (its content hash is checked), held for later
deltas, and answered from the turn log (:mod:`tether.server.edge_turns`), so resumes and repeats never generate
twice. The agent's headers live only in this connection's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
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
from tether.protocol.delta import MISSING, DeltaError, apply, limit_passed, references, value_hash
from tether.protocol.errors import ProtocolError
from tether.protocol.json_depth import MAX_JSON_DEPTH
from tether.protocol.request import too_deep_json, too_many_json_values
from tether.server.auth import Authenticator
from tether.server.edge_content import EdgeContent
from tether.server.edge_dispatch import dispatch
from tether.server.edge_turns import EdgeTurns, TurnLog
from tether.server.http import read_body
from tether.server.off_loop import OffLoop
from tether.server.value_counter import ValueCounter
from tether.server.websocket import utf8_size

_log = structlog.get_logger("tether.server.edge")


@dataclass(frozen=True, slots=True)
class EdgeGateway:
    """What the edge endpoints share: the held content, the turn logs, the engine they run Responses turns on, and
    the limits a client's request has (``max_frame_bytes`` for a frame and for the request it rebuilds)."""

    engine: Engine
    auth: Authenticator
    content: EdgeContent
    turns: EdgeTurns
    max_frame_bytes: int
    max_json_values: int = 100_000
    value_counter: ValueCounter = field(default_factory=ValueCounter)
    off_loop: OffLoop = field(default_factory=OffLoop)
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

    async def read_frame(self, raw: str | bytes) -> wire.TurnFrame | wire.ResumeFrame:
        """An uplink frame, read as a client's request is: never decoded when it holds more JSON values than the
        limit, and decoded off the event loop when it is large.

        Raises:
            TurnRefusedError: over the size or value limit (naming the frame's turn, when the count found it), or
                the count could not run (503, naming the turn when the frame begins as an edge writes it).
            ProtocolError: not a frame (``invalid_json``, ``invalid_edge_frame``).
        """
        if _over(raw, self.max_frame_bytes):  # a WebSocket message (an HTTP body is bounded as it is read)
            too_large = ProtocolError(413, "frame_too_large", "The edge frame exceeds the gateway's limit.")
            try:
                turn = await self.value_counter.find(raw, "turn")
            except ProtocolError:
                turn = _leading_turn(raw)
            raise TurnRefusedError(turn, too_large)
        try:
            excess = await self.value_counter.excess(raw, self.max_json_values, key="turn")
        except ProtocolError as error:  # the count could not run: a fault of this frame's, never the link's
            raise TurnRefusedError(_leading_turn(raw), error) from None
        if excess is not None:
            raise TurnRefusedError(excess.found, too_many_json_values(excess.values, self.max_json_values))
        return await self.off_loop.read(len(raw), functools.partial(_decode_frame, raw))

    async def open_turn(
        self, tenant: str, frame: wire.TurnFrame, headers: Mapping[str, str] | None
    ) -> TurnLog | wire.RefusedFrame:
        """The log answering a turn frame: the existing one for a repeated turn, else a new turn on the rebuilt
        request, or the refusal the edge heals from. The base and references come from this node's memory or,
        failing that, the store (another node, or this one before a restart, held them).

        Raises:
            ProtocolError: the rebuilt request is over a client's limits (``request_too_large``,
                ``too_many_json_values``, ``json_too_deep``): the agent's error, not one to heal from.
        """
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
        passed = limit_passed(
            request, max_bytes=self.max_frame_bytes, max_values=self.max_json_values, max_depth=MAX_JSON_DEPTH
        )
        if passed == "bytes":
            message = f"The rebuilt request exceeds the limit of {self.max_frame_bytes} bytes."
            raise ProtocolError(413, "request_too_large", message)
        if passed == "values":
            raise too_many_json_values(None, self.max_json_values)
        if passed == "depth":
            raise too_deep_json()
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


class TurnRefusedError(Exception):
    """A protocol error that answers one turn (``turn``), or the frame alone when its turn could not be read."""

    def __init__(self, turn: str | None, error: ProtocolError) -> None:
        super().__init__(error.message)
        self.turn = turn
        self.error = error


def _over(raw: str | bytes, limit: int) -> bool:
    """Whether a frame is above ``limit`` bytes, a text frame's counted in UTF-8 as the agent's WebSocket does (a
    character is 1 to 4 bytes: encoded only when that decides it)."""
    if len(raw) > limit:
        return True
    return isinstance(raw, str) and len(raw) * 4 > limit and utf8_size(raw) > limit


_LEADING_TURN = re.compile(
    rb'\A\s*\{\s*"type"\s*:\s*"tether:edge\.(?:turn|resume)"\s*,\s*"turn"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"'
)


def _leading_turn(raw: str | bytes) -> str | None:
    """The turn of a frame that could not be counted, read from its first bytes without decoding it: an edge writes
    ``type`` and then ``turn`` first (``None`` for a frame written otherwise)."""
    head = raw[:256]
    found = _LEADING_TURN.match(head.encode() if isinstance(head, str) else head)
    return None if found is None else found.group(1).decode()


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
        self._headers_known = True
        """The edge's view of ``headers`` is ours: false once a turn frame was refused before its headers delta was
        applied (the edge counts it sent), until a frame brings whole headers."""
        self._send_lock = asyncio.Lock()
        self._followers: dict[str, asyncio.Task[None]] = {}
        """The one task following each turn's log; a repeated turn or a resume replaces it."""
        self._replies: set[asyncio.Task[None]] = set()
        """Refusals and errors on their way out: they never take a follower's place."""

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
                frame = await self.gateway.read_frame(raw)
            except TurnRefusedError as refused:
                self._headers_known = False
                await self._send(wire.error_frame(refused.error, refused.turn))
                continue
            except ProtocolError as error:
                self._headers_known = False
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
            if not self._headers_known and not wire.whole_headers(frame.get("headers")):
                message = "A frame was refused before its headers were read: send this turn with its whole headers."
                self._reply(dict(wire.refused_frame(turn, wire.HEADERS_UNKNOWN, message)))
                return
            if "headers" in frame:
                try:
                    self.headers = wire.headers_of(self.headers, frame["headers"])
                except ProtocolError as error:
                    self._headers_known = False
                    self._reply(wire.error_frame(error, turn))
                    return
                self._headers_known = True
            try:
                log = await self.gateway.open_turn(self.tenant, frame, self.headers)
            except ProtocolError as error:
                self._reply(wire.error_frame(error, turn))
                return
            after = -1
        if isinstance(log, TurnLog):
            self._start_following(turn, log, after)
        else:
            self._reply(dict(log))

    def _start_following(self, turn: str, log: TurnLog, after: int) -> None:
        previous = self._followers.pop(turn, None)
        if previous is not None:
            previous.cancel()
        follower = asyncio.create_task(self._follow(turn, log, after))
        self._followers[turn] = follower
        follower.add_done_callback(functools.partial(self._followed, turn))

    def _followed(self, turn: str, follower: asyncio.Task[None]) -> None:
        if self._followers.get(turn) is follower:  # a finished turn's follower is not kept for the link's life
            del self._followers[turn]

    def _reply(self, frame: Mapping[str, object]) -> None:
        task = asyncio.create_task(self._send(frame))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _follow(self, turn: str, log: TurnLog, after: int) -> None:
        async for seq, piece in log.follow(after):
            await self._send(wire.out_frame(turn, seq, piece))

    async def _send(self, frame: Mapping[str, object]) -> None:
        async with self._send_lock:
            with contextlib.suppress(Exception):  # a dropped link: the edge resumes from what it saw
                await self.websocket.send_text(orjson.dumps(frame).decode())

    async def aclose(self) -> None:
        tasks = [*self._followers.values(), *self._replies]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def edge_http(request: Request) -> Response:
    """One uplink frame in, the frames that answer it out as SSE (``data: <frame>``)."""
    gateway = edge_gateway(request)
    tenant = gateway.auth.tenant(request.headers)
    try:
        frame = await gateway.read_frame(await read_body(request, gateway.max_frame_bytes))
    except TurnRefusedError as refused:  # this request is the turn: its answer is the error
        raise refused.error from None
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
