"""The lane driver of a WebSocket-mode connection: client events in, each lane's events out, in order.

:class:`~tether.protocol.lanes.LaneScheduler` decides when a turn may run (FIFO within a lane, concurrent across
lanes, bounded); this driver carries those decisions out. It runs a task per turn or resume, puts every event of a
lane into one outbox in the order the lane produced them, starts queued turns as lanes free up, and enforces the
connection's age limit. It knows nothing of sockets: a WebSocket front-end feeds it the text of each client message
and writes whatever appears in :attr:`LaneDriver.outbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from tether.engine.engine import Engine
from tether.engine.live import LiveResponse
from tether.engine.observer import TurnOrigin
from tether.protocol.client_events import ClientEvent, ResumeRequest, connection_limit_reached, read_client_event
from tether.protocol.errors import ProtocolError, server_error
from tether.protocol.events import StreamEvent
from tether.protocol.lanes import Lane, LaneLimits, LaneScheduler
from tether.protocol.request import MAX_INPUT_ITEMS, CreateRequest
from tether.protocol.steer import SteerAnswer, SteerRequest, steer_failed
from tether.protocol.stream import with_stream_id
from tether.store.base import StoreDamagedError

_log = structlog.get_logger("tether.websocket")

CLOSE_NORMAL = 1000
CLOSE_NOT_READING = 1008  # policy violation: more answers waiting for room than MAX_WAITING_ANSWERS
OUTBOX_SIZE = 1024
MAX_WAITING_ANSWERS = 64  # answers (refusals, steer answers) waiting for room in a full outbox, per connection
FINISHED_KEPT = 256  # responses this connection ran that a response.steer is told are already completed

# A lane's work: a turn (its request and who sent it), or a resume. Both count against the same lane limits, so a
# client cannot multiply the server's memory by asking for many resumes at once (each may load a stored log).
Job = tuple[CreateRequest, TurnOrigin] | ResumeRequest


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection (after everything queued before it is written)."""

    code: int
    reason: str


class LaneDriver:
    """Runs one connection's turns and resumes on their lanes.

    Args:
        engine: the engine that runs turns.
        tenant: the connection's tenant.
        limits: lanes in flight, named lanes and queued turns.
        max_age_s: after this long the connection refuses new turns, lets the ones in flight finish, then closes.
        drain_timeout_s: how long turns in flight may take to finish once the connection is too old.
        origin: who the connection is (key id, trace context); each turn's gets the size of its own message.
    """

    def __init__(
        self,
        engine: Engine,
        tenant: str,
        limits: LaneLimits,
        max_age_s: float,
        drain_timeout_s: float = 60.0,
        origin: TurnOrigin | None = None,
        max_input_items: int = MAX_INPUT_ITEMS,
    ) -> None:
        self.engine = engine
        self.connection = engine.connect(tenant)
        self.origin = origin or TurnOrigin(transport="websocket")
        self.lanes: LaneScheduler[Job] = LaneScheduler(limits)
        self.max_age_s = max_age_s
        self.max_input_items = max_input_items
        self.drain_timeout_s = drain_timeout_s
        self.outbox: asyncio.Queue[StreamEvent | SteerAnswer | Close] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self.tasks: set[asyncio.Task[None]] = set()
        self.aged_out = asyncio.Event()  # set once the connection reached its age limit
        self.closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._age_limit: asyncio.Task[None] | None = None
        # A resume past its grace period loads the response's whole stored log into memory; one at a time per
        # connection keeps a client that never reads from holding more than one such log.
        self._replays = asyncio.Semaphore(1)
        self._running: dict[str, tuple[Lane, LiveResponse]] = {}  # this connection's responses in flight, by id
        self._finished: dict[str, Lane] = {}  # the last FINISHED_KEPT of them that ended
        self._answering: set[asyncio.Task[None]] = set()  # answers waiting for room in the outbox
        # Set once an answer found MAX_WAITING_ANSWERS already waiting: the front-end closes the connection with
        # CLOSE_NOT_READING rather than leave a create or a steer unanswered.
        self.overflowed = asyncio.Event()

    @property
    def tenant(self) -> str:
        return self.connection.tenant

    def start(self) -> None:
        """Start the age-limit clock (call once, with the connection accepted)."""
        self._age_limit = asyncio.create_task(self._enforce_max_age())

    async def aclose(self) -> None:
        """Stop everything this connection started and forget its lanes (``store=false`` state dies here)."""
        self.closed = True
        self.lanes.drain()
        tasks = [*self.tasks, *self._answering, *([self._age_limit] if self._age_limit is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.connection.clear()

    def receive(self, text: str) -> None:
        """Handle one client event: start or queue a turn, start a resume, or answer with an error event."""
        lane, event = read_client_event(text, self.max_input_items)
        self.accept(lane, event, len(text.encode()))

    def accept(self, lane: Lane, event: ClientEvent | ProtocolError, size: int) -> None:
        """Handle a client event already read (see :func:`~tether.protocol.client_events.read_client_event`)."""
        try:
            if self.aged_out.is_set():
                raise connection_limit_reached(self.max_age_s)
            if isinstance(event, ProtocolError):
                raise event
            if isinstance(event, SteerRequest):
                self._steer(event)
                return
            job: Job = (
                event
                if isinstance(event, ResumeRequest)
                else (event, dataclasses.replace(self.origin, request_bytes=size))
            )
            if self.lanes.submit(lane, job):
                self._start(lane, job)
        except ProtocolError as error:
            self.refuse(error, lane)

    def refuse(self, error: ProtocolError, lane: Lane = None) -> None:
        """Answer a client event with an error event (see :meth:`answer`)."""
        self.answer(error.ws_event(stream_id=lane))

    def _steer(self, request: SteerRequest) -> None:
        """Answer a ``response.steer``: relayed to the upstream of the response it names when that upstream takes
        steering (its answers come later, see :mod:`tether.engine.steering`), else refused now with the code that
        says why (see :mod:`tether.protocol.steer`)."""
        target = request.previous_response_id
        if request.problem is not None:
            self.answer(steer_failed(request, "invalid_input", request.problem, lane=None))
        elif target in self._running:
            lane, live = self._running[target]
            # Only the connection that runs the turn steers it: its successor and pending input are read there (a
            # connection following it after an idempotent retry would never see what its steer started).
            if live.steering is not None and live.steering.connection is self.connection:
                live.steering.submit(request, self.answer)
                return
            message = (
                f"Response '{target}' cannot be steered: tether relays steering input only to openai-responses "
                "upstreams in WebSocket mode, for responses generated on this node for this connection."
            )
            self.answer(steer_failed(request, "steering_not_supported", message, lane=lane))
        elif target in self._finished:
            message = f"Response '{target}' has completed and no longer accepts steering input."
            self.answer(steer_failed(request, "response_already_completed", message, lane=self._finished[target]))
        else:
            message = f"Response '{target}' is not available on this connection."
            self.answer(steer_failed(request, "response_not_found", message, lane=None))

    def answer(self, event: StreamEvent | SteerAnswer | Close) -> None:
        """Queue an answer to a client event (a refusal, a steer's answer, a close) without waiting: every
        ``response.create`` and every steer gets its one answer, also while the outbox is full (a slow link with a
        response streaming), after what is queued before it and in the order given. Past MAX_WAITING_ANSWERS
        answers waiting for room (a client that sends and never reads) the answer is not queued and
        :attr:`overflowed` is set: the connection is to be closed with CLOSE_NOT_READING."""
        if self.closed:
            return
        if not self._answering and not self.outbox.full():
            self.outbox.put_nowait(event)
        elif len(self._answering) < MAX_WAITING_ANSWERS:  # after the answers already waiting: in order
            task = asyncio.get_running_loop().create_task(self.outbox.put(event))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        elif not self.overflowed.is_set():
            _log.warning("ws.not_reading", tenant=self.tenant, waiting=len(self._answering))
            self.overflowed.set()

    # -- turns ---------------------------------------------------------------------------------------------

    def _start(self, lane: Lane, job: Job) -> None:
        if isinstance(job, ResumeRequest):
            self._spawn(self._run_resume(lane, job))
        else:
            self._spawn(self._run_turn(lane, *job))

    def _start_next(self, lane: Lane) -> None:
        if not self.closed:
            for next_lane, next_job in self.lanes.finish(lane):
                self._start(next_lane, next_job)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a turn or a resume; the connection is idle again when none is left (a finishing turn starts the
        next queued one before it ends, so queued work keeps the set non-empty)."""
        self._idle.clear()
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._work_done)

    def _work_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self._idle.set()

    async def _run_resume(self, lane: Lane, resume: ResumeRequest) -> None:
        try:
            async with self._replays:
                live = await self.engine.attach(
                    self.tenant, resume.response_id, after=resume.starting_after, resume_token=resume.resume_token
                )
                await self._forward(live, resume.starting_after, lane)
        except ProtocolError as error:
            await self.outbox.put(error.ws_event(stream_id=lane))
        except StoreDamagedError as error:
            _log.error("store.damaged", lane=lane, problem=str(error))
            await self.outbox.put(server_error().ws_event(stream_id=lane))
        except Exception:
            _log.exception("ws.resume.crashed", lane=lane)
            await self.outbox.put(server_error().ws_event(stream_id=lane))
        finally:
            self._start_next(lane)

    async def _forward(self, live: LiveResponse, after: int, lane: Lane) -> None:
        async for event in self.engine.follow(live, after):
            if event["type"] == "error":
                # In WebSocket mode a create ends with exactly one error or one terminal event (the SDK's lanes rely
                # on it): a failure inside a running response is carried by the response.failed that follows.
                continue
            await self.outbox.put(with_stream_id(event, lane))

    async def _run_turn(self, lane: Lane, request: CreateRequest, origin: TurnOrigin) -> None:
        try:
            started, generated = await self.engine.start(
                request, tenant=self.tenant, connection=self.connection, lane=lane, origin=origin
            )
            live: LiveResponse | None = started
            # A steered response may be followed by its successor (a turn of its own, on the same lane): the lane
            # stays busy until the last of them has ended. An idempotent replay is the key's response alone: its
            # successors answered the create that started it, and a client retrying reads one response per create.
            while live is not None:
                self._running[live.response_id] = (lane, live)
                follows = generated and live.successor is not None
                successor = None
                try:
                    await self._forward(live, -1, lane)
                    successor = await asyncio.shield(live.successor) if follows and live.successor else None
                    follows = False  # taken: followed from here (or there is none)
                finally:
                    self._ended(live.response_id)
                    if follows:  # the connection goes before following the successor: it is left like any turn
                        self.engine.forgo_successor(live)
                if live.steering is not None:
                    live.steering.release()
                live = successor
        except ProtocolError as error:
            await self.outbox.put(error.ws_event(stream_id=lane))
        except StoreDamagedError as error:  # the disk's fault, not a bug: one line naming the file, no traceback
            _log.error("store.damaged", lane=lane, problem=str(error))
            await self.outbox.put(server_error().ws_event(stream_id=lane))
        except Exception:
            _log.exception("ws.turn.crashed", lane=lane)
            await self.outbox.put(server_error().ws_event(stream_id=lane))
        finally:
            self._start_next(lane)

    def _ended(self, response_id: str) -> None:
        running = self._running.pop(response_id, None)
        self._finished[response_id] = running[0] if running is not None else None
        if len(self._finished) > FINISHED_KEPT:
            del self._finished[next(iter(self._finished))]

    # -- the age limit -------------------------------------------------------------------------------------

    async def _enforce_max_age(self) -> None:
        await asyncio.sleep(self.max_age_s)
        self.aged_out.set()
        # In-flight turns finish (they are the client's paid work); new ones are refused from now on.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=self.drain_timeout_s)
        await self.outbox.put(connection_limit_reached(self.max_age_s).ws_event())
        await self.outbox.put(Close(CLOSE_NORMAL, "connection age limit reached"))
