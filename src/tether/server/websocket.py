"""WebSocket mode on ``/v1/responses``: framing and connection life around the engine's lane driver.

Text frames go to :class:`~tether.engine.lane_driver.LaneDriver`, which runs turns on lanes; each event it puts in
its outbox goes out as one JSON text frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketState

from tether.engine.lane_driver import CLOSE_NOT_READING, Close, LaneDriver
from tether.protocol.client_events import event_lane, read_client_event
from tether.protocol.errors import ProtocolError, invalid
from tether.protocol.lanes import LaneLimits
from tether.protocol.request import too_many_json_values
from tether.server.auth import Identity
from tether.server.http import error_response
from tether.server.off_loop import OFF_LOOP_BYTES
from tether.server.origin import turn_origin
from tether.server.state import ServerState, server_state

_log = structlog.get_logger("tether.websocket")

CLOSE_MESSAGE_TOO_BIG = 1009
NOT_READING_REASON = "too many events waiting: the client is not reading its messages"


async def websocket_endpoint(websocket: WebSocket) -> None:
    state = server_state(websocket)
    try:
        identity = state.auth.identify(websocket.headers)
    except ProtocolError as error:
        await websocket.send_denial_response(error_response(error))
        return
    await WebSocketSession(websocket, state, identity).run()


async def websocket_route_not_found(websocket: WebSocket) -> None:
    """An upgrade on a path without WebSocket mode: the protocol's 404 (Starlette's refusal is a 403, no body)."""
    path = websocket.url.path
    error = ProtocolError(404, "not_found", f"No WebSocket route for {path}: WebSocket mode is at /v1/responses.")
    await websocket.send_denial_response(error_response(error))


class WebSocketSession:
    """One client connection: reads frames into the lane driver, writes its outbox as frames."""

    def __init__(self, websocket: WebSocket, state: ServerState, identity: Identity) -> None:
        settings = state.settings.websocket
        self.websocket = websocket
        self.max_message_bytes = state.settings.max_body_bytes
        self.off_loop = state.off_loop
        self.value_counter = state.value_counter
        self.max_json_values = state.settings.max_json_values
        self.driver = LaneDriver(
            state.engine,
            identity.tenant,
            LaneLimits(settings.max_in_flight, settings.max_named_lanes, settings.max_queued),
            settings.max_connection_age_s,
            origin=turn_origin("websocket", 0, identity, websocket.headers),
            max_input_items=state.settings.max_input_items,
        )

    async def run(self) -> None:
        await self.websocket.accept()
        _log.info("ws.open", tenant=self.driver.tenant)
        writer = asyncio.create_task(self._write())
        self.driver.start()
        reader = asyncio.create_task(self._read())
        overflowed = asyncio.create_task(self.driver.overflowed.wait())
        try:
            await asyncio.wait({reader, overflowed}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()  # its exception, if it had one
        finally:
            for task in (reader, overflowed, writer):
                task.cancel()
            await self.driver.aclose()
            await asyncio.gather(reader, overflowed, writer, return_exceptions=True)
            _log.info("ws.closed", tenant=self.driver.tenant)
        if self.driver.overflowed.is_set() and self.websocket.application_state == WebSocketState.CONNECTED:
            # Too many answers waiting for a client that does not read: close (after what is already written)
            # rather than leave a create unanswered; the close frame goes out once the client reads again.
            with contextlib.suppress(OSError, RuntimeError):  # the client may be gone by now
                await self.websocket.close(CLOSE_NOT_READING, NOT_READING_REASON)

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self.driver.refuse(
                    invalid(
                        "invalid_frame",
                        "Binary frames are not supported: send each client event as one JSON text message.",
                    )
                )
                continue
            if _too_big(text, self.max_message_bytes):
                self.driver.refuse(
                    ProtocolError(
                        400,
                        "message_too_large",
                        f"The message exceeds the limit of {self.max_message_bytes} bytes; the connection is closed.",
                    )
                )
                self.driver.answer(Close(CLOSE_MESSAGE_TOO_BIG, "message too large"))  # after the error, in order
                continue
            try:
                excess = await self.value_counter.excess(text, self.max_json_values)
            except ProtocolError as error:  # the counting worker could not run
                self.driver.refuse(error)
                continue
            if excess is not None:  # never decoded: the error goes to the lane the event names, as others do
                refusal = too_many_json_values(excess.values, self.max_json_values)
                self.driver.accept(event_lane({"stream_id": excess.found}), refusal, len(text))
                continue
            if len(text) > OFF_LOOP_BYTES:  # a large message is read on the worker: the loop stays responsive
                read = functools.partial(read_client_event, text, self.driver.max_input_items)
                lane, event = await self.off_loop.read(len(text), read)
                self.driver.accept(lane, event, utf8_size(text))
            else:
                self.driver.receive(text)

    async def _write(self) -> None:
        while True:
            item = await self.driver.outbox.get()
            if isinstance(item, Close):
                await self.websocket.close(item.code, item.reason)
                return
            await self.websocket.send({"type": "websocket.send", "text": orjson.dumps(item).decode()})


def _too_big(text: str, limit: int) -> bool:
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and utf8_size(text) > limit


def utf8_size(text: str) -> int:
    """The bytes ``text`` takes in UTF-8, without encoding it when it is ASCII (a flag of the string, read in O(1)):
    encoding a 16 MiB message only to measure it holds the loop for several milliseconds."""
    return len(text) if text.isascii() else len(text.encode())
