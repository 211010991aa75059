"""The steering of one turn in flight: ``response.steer`` from the client, relayed by the provider, answered once.

A turn on a client WebSocket lane whose provider relays steering (an openai-responses upstream in WebSocket mode)
gets a :class:`SteeringInbox`. The lane driver submits the client's steers to it, which wakes the provider (it
registered with :meth:`SteeringInbox.notify`); the provider takes them (:meth:`SteeringInbox.take`), sends them
upstream and reports what the upstream answered. Nothing waits for a steer: a turn never steered costs no task. The
inbox turns the upstream's answers into the client's ``response.steer.*`` events with tether's ids and the turn's
lane, and makes sure each submission gets exactly one final answer: ``pending``, ``failed``, or its commit into a
successor (whose ``response.created`` is the commit point, so it has no event of its own). Whatever is unanswered
when the turn ends is failed then.

Answers that come once the upstream response has ended (``pending`` always does) are held until the lane driver has
sent the turn's terminal event (:meth:`SteeringInbox.release`), so the client reads them in the API's order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from tether.engine.cache import ConnectionState
from tether.protocol.lanes import Lane
from tether.protocol.steer import (
    Steer,
    SteerAnswer,
    SteerErrorCode,
    SteerRequest,
    steer_accepted,
    steer_failed,
    steer_id,
    steer_pending,
)
from tether.providers.base import Continuation
from tether.types import JSONObject

MAX_OPEN_STEERS = 16  # per response: more are refused with too_many_pending_steers

Answer = Callable[[SteerAnswer], None]


class _State(Enum):
    QUEUED = "queued"  # submitted, not taken by the provider
    TAKEN = "taken"  # the provider has it (sent upstream, or about to be)
    ACCEPTED = "accepted"


@dataclass(slots=True)
class _Entry:
    answer: Answer
    state: _State = _State.QUEUED


class SteeringInbox:
    """Steering for one response: what the client submitted, and what became of it.

    Args:
        response_id: the steered response (tether's id).
        lane: its lane on the client connection (every answer carries it).
        connection: the client connection: input left pending for tool output waits there for the continuation.
    """

    def __init__(self, response_id: str, lane: Lane, connection: ConnectionState | None = None) -> None:
        self.response_id = response_id
        self.lane = lane
        self.connection = connection
        self.closed = False
        self.successor: tuple[Continuation, list[Steer]] | None = None
        """Set when the upstream started a successor: it and the steers it commits, for the engine to run."""
        self._queue: deque[Steer] = deque()
        self._wake: Callable[[], None] | None = None
        self._open: dict[Steer, _Entry] = {}
        self._answers: dict[Steer, Answer] = {}  # every submission's (committed ones may still fail)
        self._held: list[tuple[Answer, SteerAnswer]] = []
        self._upstream_ended = False
        self._released = False

    # -- the client's side -----------------------------------------------------------------------------------

    def submit(self, request: SteerRequest, answer: Answer) -> None:
        """Queue a valid steer for the provider; ``answer`` receives every event about it."""
        if self.closed:
            message = f"Response '{self.response_id}' has completed and no longer accepts steering input."
            event = steer_failed(request, "response_already_completed", message, lane=self.lane)
            if self._released:
                answer(event)
            else:  # the client may not have read the response's end yet (a slow link): after it, in order
                self._held.append((answer, event))
            return
        if len(self._open) >= MAX_OPEN_STEERS:
            message = f"Response '{self.response_id}' has {MAX_OPEN_STEERS} steering submissions pending already."
            answer(steer_failed(request, "too_many_pending_steers", message, lane=self.lane))
            return
        steer = Steer(request)
        self._open[steer] = _Entry(answer)
        self._answers[steer] = answer
        self._queue.append(steer)
        if self._wake is not None:
            self._wake()

    def release(self) -> None:
        """Send the answers held for after the turn's terminal event (the lane driver has sent it)."""
        self._released = True
        held, self._held = self._held, []
        for answer, event in held:
            answer(event)

    # -- the provider's side (SteeringPort) ------------------------------------------------------------------

    def take(self) -> Steer | None:
        while self._queue:
            steer = self._queue.popleft()
            entry = self._open.get(steer)
            if entry is not None and entry.state is _State.QUEUED:
                entry.state = _State.TAKEN
                return steer
        return None

    def notify(self, wake: Callable[[], None] | None) -> None:
        self._wake = wake
        if wake is not None and self._queue:
            wake()

    def accepted(self, steer: Steer) -> None:
        entry = self._open.get(steer)
        if entry is None or entry.state is _State.ACCEPTED:
            return
        entry.state = _State.ACCEPTED
        steer.id = steer_id()
        entry.answer(steer_accepted(steer.id, self.response_id, lane=self.lane))

    def failed(self, steer: Steer, code: SteerErrorCode, message: str) -> None:
        entry = self._open.pop(steer, None)
        self._answers.pop(steer, None)
        if entry is not None:
            self._send(entry, steer_failed(steer.request, code, message, lane=self.lane, steer=steer.id))

    def pending(self, steer: Steer, reason: str, required_input: list[JSONObject]) -> None:
        entry = self._open.pop(steer, None)
        self._answers.pop(steer, None)
        if entry is None:
            return
        if steer.id is None:  # pending implies accepted: an upstream may skip the accepted event
            steer.id = steer_id()
            entry.answer(steer_accepted(steer.id, self.response_id, lane=self.lane))
        if self.connection is not None:
            self.connection.hold_steering(self.lane, self.response_id, steer.items)
        event = steer_pending(steer.id, self.response_id, reason, required_input, lane=self.lane)
        self._upstream_ended = True  # pending follows the response's end, always
        self._send(entry, event)

    def upstream_ended(self) -> None:
        self._upstream_ended = True

    def succeeded_by(self, continuation: Continuation) -> None:
        committed = [steer for steer, entry in self._open.items() if entry.state is _State.ACCEPTED]
        if self.successor is not None:  # (never twice) the first successor wins
            continuation.abandon()
            return
        for steer in committed:
            del self._open[steer]
        self.successor = (continuation, committed)

    # -- the engine's side -----------------------------------------------------------------------------------

    def successor_failed(self, message: str) -> None:
        """The successor could not become a turn: its steers are returned to the client."""
        if self.successor is None:
            return
        continuation, steers = self.successor
        self.successor = None
        continuation.abandon()
        for steer in steers:
            event = steer_failed(steer.request, "successor_creation_failed", message, lane=self.lane, steer=steer.id)
            self._held.append((self._answers.pop(steer), event))
        if self._released:
            self.release()

    def close(self) -> None:
        """The turn has ended: every steer not answered yet fails, and a successor nobody took is given up."""
        self.closed = True
        self._wake = None
        if self.successor is not None:
            self.successor_failed("The response ended before its successor could start.")
        for steer, entry in list(self._open.items()):
            if entry.state is _State.QUEUED:
                code: SteerErrorCode = "response_already_completed"
                message = f"Response '{self.response_id}' ended before its steering input could be sent upstream."
            else:
                code = "response_not_active"
                message = f"Response '{self.response_id}' ended before the upstream applied the steering input."
            self._upstream_ended = True
            self.failed(steer, code, message)

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _send(self, entry: _Entry, event: SteerAnswer) -> None:
        if self._upstream_ended and not self._released:
            self._held.append((entry.answer, event))
        else:
            entry.answer(event)
