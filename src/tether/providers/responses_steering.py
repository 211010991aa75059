"""Steering relayed to an OpenAI Responses upstream in WebSocket mode.

A turn's steers go up the socket carrying its response, as ``response.steer`` naming the upstream's response id
(sent by :class:`SteerSender` once the upstream's ``response.created`` said it, as they arrive: a task runs only
while steers are being sent, none for a turn that is never steered). The upstream's answers come back on
the same socket, between the response's events: :class:`SocketSteering` matches them to the steers sent (an accepted
one by its order, anything later by the upstream's steer id) and reports them to the turn's
:class:`~tether.providers.base.SteeringPort`, which speaks to the client with tether's ids. An upstream that does not
know the event answers it with an ``error`` that belongs to no response (no ``sequence_number``): that is the
steer's ``steering_not_supported``, and the response goes on.

Steering can make the upstream start a successor response on the socket right after the steered one ends. The
socket then stays with the turn chain: :class:`UpstreamSuccessor` carries it, and the successor's ``response.created``
already read, to the provider run of the successor turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
import structlog
from websockets.exceptions import ConnectionClosed

from tether.protocol.steer import STEER_ANSWER_EVENTS, Steer, known_error_code
from tether.providers.base import SteeringPort
from tether.types import JSONObject

if TYPE_CHECKING:
    from tether.providers.responses_ws import SocketPool, UpstreamSocket

_log = structlog.get_logger("tether.providers")


@dataclass(eq=False, slots=True)
class _Sent:
    steer: Steer
    port: SteeringPort
    target: str  # the upstream response it was sent for
    items: int  # how many input items it adds
    upstream_id: str | None = None  # the upstream's steer id, once accepted


@dataclass(slots=True)
class SocketSteering:
    """The steers one upstream socket carries: sent and not answered yet, or accepted and not committed yet.

    Attributes:
        waiting: upstream response id → how many input items of steering the upstream holds for its continuation
            (``response.steer.pending``): a delta continuing it on this socket does not send them again.
    """

    sent: list[_Sent] = field(default_factory=list)
    waiting: dict[str, int] = field(default_factory=dict)

    def frame(self, steer: Steer, port: SteeringPort, target: str) -> str:
        """The ``response.steer`` frame for ``steer`` (recorded as sent)."""
        self.sent.append(_Sent(steer, port, target, len(steer.items)))
        frame = {"type": "response.steer", "previous_response_id": target, "input": steer.input}
        return orjson.dumps(frame).decode()

    def read(self, event: JSONObject) -> bool:
        """Take an upstream event that answers a steer (``True``); any other event is the response's."""
        kind = event.get("type")
        if kind == "error":
            return "sequence_number" not in event and self._refused(event)
        if kind not in STEER_ANSWER_EVENTS:
            return False
        raw = event.get("steer")
        ref: JSONObject = raw if isinstance(raw, dict) else {}
        target, upstream_id = ref.get("previous_response_id"), ref.get("id")
        sent = self._find(target, upstream_id if isinstance(upstream_id, str) else None)
        if sent is None:
            return True  # an answer to nothing tether sent (or already answered): nothing to relay
        if kind == "response.steer.accepted":
            sent.upstream_id = upstream_id if isinstance(upstream_id, str) else ""
            sent.port.accepted(sent.steer)
            return True
        self.sent.remove(sent)
        if kind == "response.steer.pending":
            required = event.get("required_input")
            stubs = [stub for stub in required if isinstance(stub, dict)] if isinstance(required, list) else []
            self.waiting[sent.target] = self.waiting.get(sent.target, 0) + sent.items
            sent.port.pending(sent.steer, str(event.get("reason") or "waiting_for_required_input"), stubs)
        else:
            error = event.get("error")
            fields: JSONObject = error if isinstance(error, dict) else {}
            message = str(fields.get("message") or "The upstream refused the steering input.")
            sent.port.failed(sent.steer, known_error_code(fields.get("code")), message)
        return True

    def unresolved(self, target: str) -> bool:
        """Whether a steer sent for upstream response ``target`` still waits for its outcome."""
        return any(sent.target == target for sent in self.sent)

    def commit(self, target: str) -> None:
        """The upstream started the successor of ``target``: its accepted steers are committed (the ports know)."""
        self.sent = [sent for sent in self.sent if not (sent.target == target and sent.upstream_id is not None)]

    def withdraw(self, steer: Steer) -> None:
        """Forget ``steer`` (tether answers it itself): an answer the upstream may still send for it is stray."""
        self.sent = [sent for sent in self.sent if sent.steer is not steer]

    def abandon(self, message: str) -> None:
        """The socket goes away: whatever it carries fails."""
        sent, self.sent = self.sent, []
        for entry in sent:
            entry.port.failed(entry.steer, "response_not_active", message)
        self.waiting.clear()

    def _find(self, target: object, upstream_id: str | None) -> _Sent | None:
        if upstream_id is not None:
            for sent in self.sent:
                if sent.upstream_id == upstream_id:
                    return sent
        for sent in self.sent:  # answered in the order sent: the oldest steer for that response with no answer yet
            if sent.upstream_id is None and (not isinstance(target, str) or sent.target == target):
                return sent
        return None

    def _refused(self, event: JSONObject) -> bool:
        for sent in self.sent:
            if sent.upstream_id is None:
                self.sent.remove(sent)
                error = event.get("error")
                fields: JSONObject = error if isinstance(error, dict) else {}
                reason = str(fields.get("message") or fields.get("code") or "an error")
                message = f"The upstream does not take steering input here: {reason}"
                sent.port.failed(sent.steer, "steering_not_supported", message)
                return True
        return False


class SteerSender:
    """Sends a turn's steers up its socket while its response streams, as the client submits them: the port wakes
    it, and a task sends what has arrived, in order, then ends (so reading never waits, and a turn never steered
    has no task).

    Attributes:
        broken: a send failed in a way that leaves the socket in an unknown state: it sends nothing more, and the
            socket must not carry another response.
    """

    def __init__(self, port: SteeringPort, socket: UpstreamSocket) -> None:
        self.port = port
        self.socket = socket
        self.broken = False
        self._target: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending: Steer | None = None
        self._stopping = False

    def start(self, target: str) -> None:
        """Start sending, for upstream response ``target`` (its ``response.created`` has been read)."""
        if self._target is None and not self._stopping:
            self._target = target
            self.port.notify(self._wake)  # which wakes it at once for steers submitted before

    async def stop(self, grace_s: float) -> None:
        """Send nothing more: a steer being sent is sent whole first, for at most ``grace_s`` (the socket is not read
        meanwhile, so an upstream that stopped reading it would hold the turn); past that, its send is given up, it
        fails ``response_not_active`` and the sender is broken."""
        self._stopping = True
        self.port.notify(None)
        task = self._task
        if task is None:
            return
        if self._sending is None:  # not started yet: it has taken nothing
            task.cancel()
        # It raises nothing: an error of its own is logged and answered inside.
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if not done:
            stalled = self._sending
            task.cancel()
            await asyncio.wait({task})
            _log.warning("upstream.ws.steer_send_stalled", upstream_response_id=self._target, grace_s=grace_s)
            self._give_up(stalled, f"The upstream did not take the steering input within {grace_s:g} s.")
        self._task = None

    def cancel(self) -> None:
        """Stop now (the socket is being given up)."""
        self._stopping = True
        self.port.notify(None)
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _wake(self) -> None:
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._send_arrived())

    async def _send_arrived(self) -> None:
        steer: Steer | None = None
        try:
            while not self._stopping and self._target is not None:
                steer = self.port.take()
                if steer is None:
                    return
                self._sending = steer
                try:
                    await self.socket.connection.send(self.socket.steering.frame(steer, self.port, self._target))
                except ConnectionClosed:
                    return  # the steer fails with the socket (SocketSteering.abandon)
                finally:
                    self._sending = None
                steer = None  # sent: the upstream answers it
        except Exception as error:  # a bug: logged once, and its steer answered now rather than after the grace
            _log.error("upstream.ws.steer_send_crashed", upstream_response_id=self._target, error=repr(error))
            self._give_up(steer, "tether could not send the steering input upstream.")
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _give_up(self, steer: Steer | None, message: str) -> None:
        self.broken = True
        self._stopping = True
        self.port.notify(None)
        if steer is not None:
            self.socket.steering.withdraw(steer)
            self.port.failed(steer, "response_not_active", message)


@dataclass(eq=False, slots=True)
class UpstreamSuccessor:
    """The successor response steering started on an upstream socket: the socket (still borrowed from its pool) and
    the successor's ``response.created``, for the provider run of the successor turn (a
    :class:`~tether.providers.base.Continuation`)."""

    owner: object  # the provider that made it (only it reads it)
    pool: SocketPool
    socket: UpstreamSocket
    lane_key: str | None
    created: JSONObject
    taken: bool = False

    def take(self) -> bool:
        """Claim it for a provider run; ``False`` once claimed or abandoned."""
        if self.taken:
            return False
        self.taken = True
        return True

    def abandon(self) -> None:
        if self.take():
            with contextlib.suppress(RuntimeError):  # no running loop: the pool is gone already
                self.pool.release(self.socket, self.lane_key, reusable=False)
