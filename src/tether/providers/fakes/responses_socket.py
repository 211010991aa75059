"""One WebSocket connection of the fake Responses upstream: responses one at a time, and steering while they stream.

Frames are read while a response streams, so a ``response.steer`` can reach the response it names, as on the real
API (GPT-6 family models): it is validated as the real API validates it (:func:`tether.protocol.steer.read_steer`),
answered ``response.steer.accepted`` (or ``response.steer.failed`` with the API's code), and the response in flight
ends at the next safe boundary (between two deltas, never inside or after a function call) as ``response.incomplete``
with ``incomplete_details.reason: "steered"``. A successor follows at once: ``response.created`` of a response that
continues the steered one with the queued input, in order, and its settings. Steering that arrives after the last
delta makes the response complete normally, then the successor starts. A response that stopped for client tool output
(a function call) keeps the input queued: ``response.steer.pending`` (``waiting_for_required_input``, with a
``function_call_output`` stub per call) follows ``response.completed``, and the next ``response.create`` for that
parent on this socket gets the queued input prepended to its own.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from tether.protocol.errors import ProtocolError
from tether.protocol.steer import (
    SteerErrorCode,
    SteerRequest,
    read_steer,
    steer_accepted,
    steer_failed,
    steer_items,
    steer_pending,
)
from tether.types import Item, JSONObject

if TYPE_CHECKING:
    from tether.providers.fakes.openai_responses import FakeResponsesUpstream, Play, _Answer

MAX_QUEUED_STEERS = 8  # per response; more get too_many_pending_steers
_CONNECTION_LIMIT = ProtocolError(
    400,
    "websocket_connection_limit_reached",
    "Responses websocket connection limit reached. Create a new websocket connection to continue.",
)


@dataclass(slots=True)
class _Queued:
    steer_id: str
    request: SteerRequest


@dataclass(slots=True)
class _Active:
    """The response streaming on the socket, and the steering queued for it."""

    response_id: str
    steers: list[_Queued] = field(default_factory=list)


class FakeSocket:
    """One accepted WebSocket of a :class:`~tether.providers.fakes.openai_responses.FakeResponsesUpstream`."""

    def __init__(self, fake: FakeResponsesUpstream, websocket: WebSocket, number: int, headers: dict[str, str]):
        self.fake = fake
        self.websocket = websocket
        self.number = number
        self.headers = headers
        self.local: _Answer | None = None  # the connection-local cache: the most recent response
        self.active: _Active | None = None
        self.waiting: dict[str, list[_Queued]] = {}  # a response stopped for tool output → steering queued for it
        self._creates: asyncio.Queue[JSONObject | None] = asyncio.Queue()
        self._send_lock = asyncio.Lock()
        self._closed = False

    async def run(self) -> None:
        responder = asyncio.create_task(self._respond_all())
        try:
            await self._read_all()
        finally:
            self._closed = True
            responder.cancel()
            await asyncio.gather(responder, return_exceptions=True)

    # -- reading -------------------------------------------------------------------------------------------

    async def _read_all(self) -> None:
        opened = time.monotonic()
        cap = self.fake.max_connection_age_s
        try:
            while True:
                try:
                    text = await asyncio.wait_for(
                        self.websocket.receive_text(),
                        None if cap is None else max(0.0, opened + cap - time.monotonic()),
                    )
                except TimeoutError:
                    await self._send(_CONNECTION_LIMIT.ws_event())
                    await self.websocket.close(1000)
                    return
                try:
                    body = orjson.loads(text)
                except orjson.JSONDecodeError:
                    body = None
                self.fake._record("websocket", self.number, self.headers, body if isinstance(body, dict) else {})
                if isinstance(body, dict) and body.get("type") == "response.steer":
                    await self._steer(body)
                else:
                    self._creates.put_nowait(body if isinstance(body, dict) else {})
                if self.websocket.application_state is WebSocketState.DISCONNECTED:
                    return
        except WebSocketDisconnect:
            return

    # -- responses -----------------------------------------------------------------------------------------

    async def _respond_all(self) -> None:
        while True:
            body = await self._creates.get()
            if body is None:
                return
            await self._respond(body)
            if self.websocket.application_state is WebSocketState.DISCONNECTED:
                return

    async def _respond(self, body: JSONObject) -> None:
        failure = self.fake._next(self.fake._failures)
        try:
            if failure is not None:
                raise ProtocolError(failure.status, failure.code, failure.message)
            if body.get("type") != "response.create":
                raise ProtocolError(400, "invalid_request_error", "Expected a response.create event.")
            previous = body.get("previous_response_id")
            queued = self.waiting.pop(previous, []) if isinstance(previous, str) else []
            if queued:  # steering that waited for this tool output goes first, in the order it came
                body = {**body, "input": [*_items_of(queued), *_input_items(body.get("input"))]}
            play = self.fake._play(body, self.local)
        except ProtocolError as error:
            await self._send(error.ws_event())
            previous = body.get("previous_response_id")
            if self.local is not None and self.local.response_id == previous:
                self.local = None
            return
        await self._stream(body, play)

    async def _stream(self, body: JSONObject, play: Play) -> None:
        """Stream one response (and the successors steering starts after it)."""
        while True:
            active = self.active = _Active(play.response_id)
            drop = self.fake._next(self.fake._drops)
            sent = 0
            events = play.start()
            steered = False
            for delta in play.deltas:
                if active.steers and not _has_call(play.stream.output):
                    steered = True
                    break
                events += play.feed(delta)
                if not await self._send_all(events, sent, drop):
                    return
                sent += len(events)
                events = []
                if self.fake.event_delay_s:
                    await asyncio.sleep(self.fake.event_delay_s)
            events += play.finish(steered=steered)
            answer = play.answer(events)
            if drop is None or drop >= sent + len(events):
                self.fake._keep(body, answer)  # kept before the terminal event goes out, as the real API commits
            if not await self._send_all(events, sent, drop):
                return
            self.local = answer
            self.active = None
            if not active.steers:
                return
            if _has_call(play.stream.output):  # stopped for client tool output: the steering waits for it
                self.waiting[play.response_id] = list(active.steers)
                for queued in active.steers:
                    await self._pending(queued, play.response_id, play.stream.output)
                return
            if self.fake.fail_successors:
                for queued in active.steers:
                    message = "The successor response could not be created."
                    await self._send(
                        steer_failed(
                            queued.request, "successor_creation_failed", message, lane=None, steer=queued.steer_id
                        )
                    )
                return
            if self.fake.withhold_successors:
                return
            # The successor: the same settings, continuing the steered response with the queued input.
            body = {**body, "previous_response_id": play.response_id, "input": _items_of(active.steers)}
            try:
                play = self.fake._play(body, self.local)
            except ProtocolError as error:
                await self._send(error.ws_event())
                return

    async def _send_all(self, events: Sequence[object], sent: int, drop: int | None) -> bool:
        """Send ``events`` (``sent`` of this response's events went before them); at the event numbered ``drop``
        the socket is closed instead (1011), and the answer is ``False``."""
        for number, event in enumerate(events, start=sent):
            if number == drop:
                await self.websocket.close(1011)
                return False
            await self._send(event)
        return True

    # -- steering ------------------------------------------------------------------------------------------

    async def _steer(self, body: JSONObject) -> None:
        request = read_steer(body)
        target = request.previous_response_id
        if request.problem is not None:
            await self._refuse(request, "invalid_input", request.problem)
        elif self.fake.steering == "unknown_event":  # an upstream that has no steering at all
            error = ProtocolError(400, "invalid_event_type", "Unknown event type 'response.steer'.", param="type")
            await self._send(error.ws_event())
        elif self.fake.steering == "unsupported":
            await self._refuse(request, "steering_not_supported", "This model does not support steering.")
        elif self.active is not None and self.active.response_id == target:
            if len(self.active.steers) >= MAX_QUEUED_STEERS:
                await self._refuse(request, "too_many_pending_steers", "Too much steering input is pending.")
                return
            queued = _Queued(f"steer_up_{secrets.token_hex(12)}", request)
            self.active.steers.append(queued)
            await self._send(steer_accepted(queued.steer_id, target, lane=None))
        elif target in self.waiting and self.local is not None and self.local.response_id == target:
            queued = _Queued(f"steer_up_{secrets.token_hex(12)}", request)
            self.waiting[target].append(queued)
            await self._send(steer_accepted(queued.steer_id, target, lane=None))
            await self._pending(queued, target, self.local.context)
        elif self.local is not None and self.local.response_id == target:
            await self._refuse(request, "response_already_completed", "The response has already completed.")
        else:
            await self._refuse(request, "response_not_found", f"Response '{target}' is not on this connection.")

    async def _pending(self, queued: _Queued, response_id: str, output: list[Item]) -> None:
        stubs: list[JSONObject] = [
            {"type": "function_call_output", "call_id": item.get("call_id"), "name": item.get("name")}
            for item in _open_calls(output)
        ]
        await self._send(steer_pending(queued.steer_id, response_id, "waiting_for_required_input", stubs, lane=None))

    async def _refuse(self, request: SteerRequest, code: SteerErrorCode, message: str) -> None:
        await self._send(steer_failed(request, code, message, lane=None))

    async def _send(self, event: object) -> None:
        if self._closed:
            return
        async with self._send_lock:
            await self.websocket.send_text(orjson.dumps(event).decode())


def _has_call(output: list[Item]) -> bool:
    return any(item.get("type") == "function_call" for item in output)


def _open_calls(items: list[Item]) -> list[Item]:
    """The function calls of the last model turn that have no output yet."""
    answered = {item.get("call_id") for item in items if item.get("type") == "function_call_output"}
    return [item for item in items if item.get("type") == "function_call" and item.get("call_id") not in answered]


def _items_of(queued: list[_Queued]) -> list[Item]:
    return [item for entry in queued for item in steer_items(entry.request.input)]


def _input_items(raw: object) -> list[Item]:
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return [item for item in raw if isinstance(item, dict)] if isinstance(raw, list) else []
