"""The upstream socket's steering bookkeeping in process: frames up, the upstream's answers matched to the steers, and
the sender that sends them up a socket (an in-process stand-in for the connection, whose send can fail or stall)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import orjson
import structlog
from websockets.asyncio.client import ClientConnection

from tether.protocol.steer import Steer, SteerErrorCode, read_steer
from tether.providers.base import Continuation
from tether.providers.responses_steering import SocketSteering, SteerSender
from tether.providers.responses_ws import UpstreamSocket, exchange
from tether.types import JSONObject


class Port:
    """Records what the provider reports (a SteeringPort without an engine); ``queued`` are the client's steers."""

    def __init__(self, *queued: Steer) -> None:
        self.calls: list[tuple[str, Steer, object]] = []
        self.messages: list[str] = []
        self.after_end: list[bool] = []  # for each failure: whether the upstream's response had ended
        self.queued = list(queued)
        self.ended = False

    def take(self) -> Steer | None:
        return self.queued.pop(0) if self.queued else None

    def notify(self, wake: Callable[[], None] | None) -> None:
        if wake is not None and self.queued:
            wake()

    def accepted(self, steer: Steer) -> None:
        self.calls.append(("accepted", steer, None))

    def failed(self, steer: Steer, code: SteerErrorCode, message: str) -> None:
        self.calls.append(("failed", steer, code))
        self.messages.append(message)
        self.after_end.append(self.ended)

    def pending(self, steer: Steer, reason: str, required_input: list[JSONObject]) -> None:
        self.calls.append(("pending", steer, required_input))

    def upstream_ended(self) -> None:
        self.ended = True

    def succeeded_by(self, continuation: Continuation) -> None:
        raise AssertionError("not reported by the bookkeeping")


class Connection:
    """An upstream WebSocket in process: ``recv`` gives what ``events`` holds, ``send`` records each frame and does
    what ``on_steer`` does with a ``response.steer`` (once ``steering`` is set)."""

    def __init__(self, on_steer: Callable[[], Awaitable[None]]) -> None:
        self.on_steer = on_steer
        self.frames: list[JSONObject] = []
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.steering = asyncio.Event()

    async def send(self, message: str) -> None:
        self.frames.append(orjson.loads(message))
        if self.frames[-1]["type"] == "response.steer":
            self.steering.set()
            await self.on_steer()

    async def recv(self) -> str:
        return await self.events.get()


def upstream_socket(connection: Connection) -> UpstreamSocket:
    return UpstreamSocket(cast(ClientConnection, connection), opened_at=0.0, last_used=0.0)


def upstream_event(kind: str, status: str) -> str:
    response = {"id": "resp_up_1", "object": "response", "status": status, "output": []}
    return orjson.dumps({"type": kind, "sequence_number": 0, "response": response}).decode()


async def refuse() -> None:
    raise RuntimeError("boom")  # not a closed connection: a bug somewhere below the sender


async def stall() -> None:
    await asyncio.Event().wait()  # the upstream stopped reading: the write buffer stays full


HANG = 60.0  # only reached if the code under test hangs (a grace of 10 ms is what it waits)


def steer(text: object) -> Steer:
    return Steer(read_steer({"type": "response.steer", "previous_response_id": "resp_t", "input": text}))


def test_the_frame_names_the_upstreams_response_and_carries_the_input_as_sent() -> None:
    steering, port = SocketSteering(), Port()
    parts = [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]
    frame = orjson.loads(steering.frame(steer(parts), port, "resp_up_1"))
    assert frame == {"type": "response.steer", "previous_response_id": "resp_up_1", "input": parts}
    assert steering.unresolved("resp_up_1")
    assert not steering.unresolved("resp_up_2")


def test_acceptances_go_in_order_and_later_answers_by_the_upstreams_id() -> None:
    steering, port = SocketSteering(), Port()
    first, second = steer("a"), steer("b")
    steering.frame(first, port, "resp_up_1")
    steering.frame(second, port, "resp_up_1")
    accepted = {"type": "response.steer.accepted", "sequence_number": 3}
    assert steering.read({**accepted, "steer": {"id": "steer_up_a", "previous_response_id": "resp_up_1"}})
    assert steering.read({**accepted, "steer": {"id": "steer_up_b", "previous_response_id": "resp_up_1"}})
    assert [(kind, s) for kind, s, _ in port.calls] == [("accepted", first), ("accepted", second)]
    failed = {
        "type": "response.steer.failed",
        "error": {"code": "successor_creation_failed", "message": "no", "type": "invalid_request_error"},
        "steer": {"id": "steer_up_b", "input": "b", "previous_response_id": "resp_up_1"},
    }
    assert steering.read(failed)
    assert port.calls[-1] == ("failed", second, "successor_creation_failed")
    stub = {"type": "function_call_output", "call_id": "call_1", "name": "lookup"}
    pending = {
        "type": "response.steer.pending",
        "reason": "waiting_for_required_input",
        "required_input": [stub],
        "steer": {"id": "steer_up_a", "previous_response_id": "resp_up_1"},
    }
    assert steering.read(pending)
    assert port.calls[3] == ("pending", first, [stub])
    assert steering.waiting == {"resp_up_1": 1}  # one item the upstream holds for resp_up_1's continuation
    assert not steering.unresolved("resp_up_1")
    assert steering.read({**failed, "steer": {"id": "steer_up_zzz", "previous_response_id": "resp_up_9"}})  # stray
    assert len(port.calls) == 4


def test_an_error_that_belongs_to_no_response_refuses_the_oldest_unanswered_steer() -> None:
    steering, port = SocketSteering(), Port()
    refused = steer("a")
    steering.frame(refused, port, "resp_up_1")
    in_stream = {"type": "error", "sequence_number": 7, "error": {"code": "server_error", "message": "boom"}}
    assert not steering.read(in_stream)  # the response's own failure
    protocol = {"type": "error", "status": 400, "error": {"code": "invalid_event_type", "message": "Unknown event."}}
    assert steering.read(protocol)
    assert port.calls == [("failed", refused, "steering_not_supported")]
    assert not steering.read(protocol)  # nothing left to refuse: an error like any other


def test_an_unknown_code_is_steering_not_supported_and_a_successor_commits_the_accepted() -> None:
    steering, port = SocketSteering(), Port()
    unknown, committed, unanswered = steer("a"), steer("b"), steer("c")
    for each in (unknown, committed, unanswered):
        steering.frame(each, port, "resp_up_1")
    steering.read({"type": "response.steer.failed", "error": {"code": "new_code", "message": "?"}, "steer": {}})
    assert port.calls[-1] == ("failed", unknown, "steering_not_supported")
    steering.read({"type": "response.steer.accepted", "steer": {"id": "s_b", "previous_response_id": "resp_up_1"}})
    steering.commit("resp_up_1")
    assert steering.unresolved("resp_up_1")  # "c" still waits for its answer
    steering.abandon("gone")
    assert port.calls[-1] == ("failed", unanswered, "response_not_active")
    assert not steering.unresolved("resp_up_1")


def test_events_of_the_response_are_not_taken() -> None:
    steering = SocketSteering()
    for event in ({"type": "response.output_text.delta", "delta": "x"}, {"type": "response.created"}):
        assert not steering.read(event)


def crash_logs(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["log_level"] == "error"]


async def test_a_send_that_fails_unexpectedly_is_logged_once_and_its_steer_fails_at_once() -> None:
    sent, later = steer("a"), steer("b")
    port, connection = Port(sent, later), Connection(refuse)
    socket = upstream_socket(connection)
    sender = SteerSender(port, socket)
    with structlog.testing.capture_logs() as logs:
        sender.start("resp_up_1")
        await connection.steering.wait()
        await sender.stop(60.0)
    assert crash_logs(logs) == [
        {
            "event": "upstream.ws.steer_send_crashed",
            "log_level": "error",
            "upstream_response_id": "resp_up_1",
            "error": "RuntimeError('boom')",
        }
    ]
    assert port.calls == [("failed", sent, "response_not_active")]
    assert port.messages == ["tether could not send the steering input upstream."]
    assert not socket.steering.unresolved("resp_up_1")  # an answer it may still get is stray
    assert sender.broken
    assert port.queued == [later]  # nothing more goes up that socket: the turn's end answers it
    assert len(connection.frames) == 1


def stream_until_steered_then_complete(connection: Connection) -> asyncio.Task[None]:
    """The upstream's side of a steered turn: ``response.created`` now, ``response.completed`` once a steer went up."""
    connection.events.put_nowait(upstream_event("response.created", "in_progress"))

    async def complete_once_steered() -> None:
        await connection.steering.wait()
        connection.events.put_nowait(upstream_event("response.completed", "completed"))

    return asyncio.create_task(complete_once_steered())


async def test_a_turn_whose_steer_could_not_be_sent_ends_without_the_answer_grace_and_gives_up_its_socket() -> None:
    sent = steer("a")
    port, connection = Port(sent), Connection(refuse)
    socket = upstream_socket(connection)
    completing = stream_until_steered_then_complete(connection)
    turn = exchange(socket, {"type": "response.create"}, 60.0, sender=SteerSender(port, socket), answer_grace_s=0.01)
    with structlog.testing.capture_logs() as logs:
        async with contextlib.aclosing(turn) as events:
            kinds = [event["type"] async for event in events]
    await completing
    assert kinds == ["response.created", "response.completed"]
    assert port.calls == [("failed", sent, "response_not_active")]
    assert port.messages == ["tether could not send the steering input upstream."]  # not "did not say" after grace
    assert len(crash_logs(logs)) == 1
    assert socket.in_response  # the pool closes it


async def test_a_send_the_upstream_does_not_take_is_given_up_after_the_grace() -> None:
    stalled = steer("a")
    port, connection = Port(stalled), Connection(stall)
    socket = upstream_socket(connection)
    sender = SteerSender(port, socket)
    sender.start("resp_up_1")
    await connection.steering.wait()
    async with asyncio.timeout(HANG):
        await sender.stop(0.01)
    assert port.calls == [("failed", stalled, "response_not_active")]
    assert port.messages == ["The upstream did not take the steering input within 0.01 s."]
    assert not socket.steering.unresolved("resp_up_1")
    assert sender.broken


async def test_a_turn_whose_upstream_stopped_reading_ends_after_the_grace_and_gives_up_its_socket() -> None:
    stalled = steer("a")
    port, connection = Port(stalled), Connection(stall)
    socket = upstream_socket(connection)
    completing = stream_until_steered_then_complete(connection)
    turn = exchange(socket, {"type": "response.create"}, HANG, sender=SteerSender(port, socket), answer_grace_s=0.01)
    async with asyncio.timeout(HANG), contextlib.aclosing(turn) as events:
        kinds = [event["type"] async for event in events]
    await completing
    assert kinds == ["response.created", "response.completed"]
    assert port.calls == [("failed", stalled, "response_not_active")]
    assert port.after_end == [True]  # so the engine sends the answer after the turn's terminal event
    assert socket.in_response  # the pool closes it
