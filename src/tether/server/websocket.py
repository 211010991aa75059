"""WebSocket mode on ``/v1/responses``: JSON text frames in, engine turns on lanes, one JSON text frame per event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket

from tether.engine.live import LiveResponse
from tether.protocol.errors import ProtocolError, invalid, server_error
from tether.protocol.lanes import Lane, LaneLimits, LaneScheduler
from tether.protocol.request import (
    RESUME_EVENT,
    STREAM_ID_PATTERN,
    CreateRequest,
    ResumeRequest,
    Transport,
    decode_json_object,
    parse_create,
    parse_resume,
)
from tether.protocol.stream import with_stream_id
from tether.server.http import error_response
from tether.server.state import ServerState, server_state
from tether.types import Event

_log = structlog.get_logger("tether.websocket")

CLOSE_NORMAL = 1000
CLOSE_MESSAGE_TOO_BIG = 1009
UNSUPPORTED_CLIENT_EVENTS = frozenset({"response.steer", "response.inject", "response.interrupt"})


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


async def websocket_endpoint(websocket: WebSocket) -> None:
    state = server_state(websocket)
    try:
        tenant = state.auth.tenant(websocket.headers)
    except ProtocolError as error:
        await websocket.send_denial_response(error_response(error))
        return
    await WebSocketSession(websocket, state, tenant).run()


class WebSocketSession:
    """One client connection: reads frames, schedules turns on lanes, writes their events in order."""

    def __init__(self, websocket: WebSocket, state: ServerState, tenant: str) -> None:
        self.websocket = websocket
        self.engine = state.engine
        self.settings = state.settings.websocket
        self.max_message_bytes = state.settings.max_body_bytes
        self.connection = state.engine.connect(tenant)
        self.lanes: LaneScheduler[CreateRequest] = LaneScheduler(
            LaneLimits(self.settings.max_in_flight, self.settings.max_named_lanes, self.settings.max_queued)
        )
        self.outbox: asyncio.Queue[Event | _Close] = asyncio.Queue(maxsize=1024)
        self.turns: set[asyncio.Task[None]] = set()
        self.expired = False
        self.closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        await self.websocket.accept()
        _log.info("ws.open", tenant=self.connection.tenant)
        writer = asyncio.create_task(self._write())
        age_limit = asyncio.create_task(self._enforce_max_age())
        try:
            await self._read()
        finally:
            self.closed = True
            self.lanes.drain()
            for task in (*self.turns, age_limit, writer):
                task.cancel()
            await asyncio.gather(*self.turns, age_limit, writer, return_exceptions=True)
            self.connection.clear()
            _log.info("ws.closed", tenant=self.connection.tenant)

    # -- reading -------------------------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self._send_error(
                    invalid(
                        "invalid_frame",
                        "Binary frames are not supported: send each client event as one JSON text message.",
                    )
                )
                continue
            if _too_big(text, self.max_message_bytes):
                self._send_error(
                    ProtocolError(
                        400,
                        "message_too_large",
                        f"The message exceeds the limit of {self.max_message_bytes} bytes; the connection is closed.",
                    )
                )
                await self.outbox.put(_Close(CLOSE_MESSAGE_TOO_BIG, "message too large"))
                continue
            self._handle(text)

    def _handle(self, text: str) -> None:
        lane: Lane = None
        try:
            body = decode_json_object(text)
            lane = _valid_lane(body.get("stream_id"))
            event_type = body.get("type")
            if event_type not in ("response.create", RESUME_EVENT):
                raise _unsupported_event(event_type)
            if self.expired:
                raise _connection_limit(self.settings.max_connection_age_s)
            if event_type == RESUME_EVENT:
                self._spawn(self._resume(parse_resume(body)))
                return
            request = parse_create(body, Transport.WEBSOCKET)
            lane = request.stream_id
            if self.lanes.submit(lane, request):
                self._start(lane, request)
        except ProtocolError as error:
            self._send_error(error, lane)

    # -- turns ---------------------------------------------------------------------------------------------

    def _start(self, lane: Lane, request: CreateRequest) -> None:
        self._spawn(self._run_turn(lane, request))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a turn or a resume; the connection is idle again when none is left (a finishing turn starts the
        next queued one before it ends, so queued work keeps the set non-empty)."""
        self._idle.clear()
        task = asyncio.create_task(work)
        self.turns.add(task)
        task.add_done_callback(self._work_done)

    def _work_done(self, task: asyncio.Task[None]) -> None:
        self.turns.discard(task)
        if not self.turns:
            self._idle.set()

    async def _resume(self, resume: ResumeRequest) -> None:
        lane = resume.stream_id
        try:
            live = await self.engine.attach(
                self.connection.tenant,
                resume.response_id,
                after=resume.starting_after,
                resume_token=resume.resume_token,
            )
            if live.done and resume.starting_after >= len(live.log.events) - 1:
                raise invalid(
                    "nothing_to_resume",
                    f"Response '{resume.response_id}' ended at sequence number {len(live.log.events) - 1}; there is "
                    f"nothing after {resume.starting_after}.",
                    "starting_after",
                )
            await self._forward(live, resume.starting_after, lane)
        except ProtocolError as error:
            await self.outbox.put(error.ws_event(stream_id=lane))

    async def _forward(self, live: LiveResponse, after: int, lane: Lane) -> None:
        async for event in self.engine.follow(live, after):
            if event["type"] == "error":
                # In WebSocket mode a create ends with exactly one error or one terminal event (the SDK's lanes rely
                # on it): a failure inside a running response is carried by the response.failed that follows.
                continue
            await self.outbox.put(with_stream_id(event, lane))

    async def _run_turn(self, lane: Lane, request: CreateRequest) -> None:
        try:
            live = await self.engine.create(
                request, tenant=self.connection.tenant, connection=self.connection, lane=lane
            )
            await self._forward(live, -1, lane)
        except ProtocolError as error:
            await self.outbox.put(error.ws_event(stream_id=lane))
        except Exception:
            _log.exception("ws.turn.crashed", lane=lane)
            await self.outbox.put(server_error().ws_event(stream_id=lane))
        finally:
            if not self.closed:
                for next_lane, next_request in self.lanes.finish(lane):
                    self._start(next_lane, next_request)

    def _send_error(self, error: ProtocolError, lane: Lane = None) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(error.ws_event(stream_id=lane))

    # -- writing and connection life ----------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, _Close):
                await self.websocket.close(item.code, item.reason)
                return
            await self.websocket.send({"type": "websocket.send", "text": orjson.dumps(item).decode()})

    async def _enforce_max_age(self) -> None:
        await asyncio.sleep(self.settings.max_connection_age_s)
        self.expired = True
        # In-flight turns finish (they are the client's paid work); new ones are refused from now on.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=60.0)
        await self.outbox.put(_connection_limit(self.settings.max_connection_age_s).ws_event())
        await self.outbox.put(_Close(CLOSE_NORMAL, "connection age limit reached"))


def _too_big(text: str, limit: int) -> bool:
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode()) > limit


def _valid_lane(value: Any) -> Lane:
    return value if isinstance(value, str) and STREAM_ID_PATTERN.fullmatch(value) else None


def _unsupported_event(event_type: Any) -> ProtocolError:
    if event_type in UNSUPPORTED_CLIENT_EVENTS:
        return invalid("unsupported_event", f"'{event_type}' is not supported by this gateway.", "type")
    if event_type is None:
        return invalid("missing_required_parameter", "Missing required parameter: 'type'.", "type")
    return invalid(
        "invalid_event_type", f"Unknown client event type {event_type!r}; expected 'response.create'.", "type"
    )


def _connection_limit(max_age_s: float) -> ProtocolError:
    minutes = max_age_s / 60
    return invalid(
        "websocket_connection_limit_reached",
        f"Responses websocket connection limit reached ({minutes:g} minutes). Create a new websocket connection to "
        "continue.",
    )
