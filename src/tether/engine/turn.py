"""One turn: a prepared request whose events are produced, numbered and committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import structlog

from tether.engine.cache import CachedResponse
from tether.engine.context import Context
from tether.engine.observer import Resolution, TurnObserver, TurnOrigin, TurnTimings
from tether.engine.steering import SteeringInbox
from tether.engine.stream_log import StreamLog, to_stored
from tether.protocol.errors import ErrorType, ProtocolError, server_error
from tether.protocol.events import StreamEvent
from tether.protocol.items import Fingerprint, fingerprint
from tether.protocol.lanes import Lane
from tether.protocol.model_events import Finish, Usage
from tether.protocol.request import CreateRequest
from tether.protocol.stream import ResponseStream
from tether.providers.base import Continuation, Provider, ProviderRequest
from tether.store.base import ResponseRecord
from tether.types import JSONObject

_log = structlog.get_logger("tether.engine")


def not_kept() -> ProtocolError:
    """What a turn whose commit did not happen failed with (its log line and metrics say so; the clients get the
    terminal events of whoever ends the stream, e.g. ``generation_interrupted`` from the shared log)."""
    return ProtocolError(
        503,
        "response_not_stored",
        "The response could not be stored, so it cannot be continued; retry the request.",
        error_type=ErrorType.SERVER,
    )


class _Phase(Enum):
    WAITING = "waiting"  # launched, not started yet (a background response is ``queued``)
    GENERATING = "generating"
    FINISHING = "finishing"  # the model is done: committing, then closing the log


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """Everything resolved before a turn may start."""

    request: CreateRequest
    tenant: str
    lane: Lane
    response_id: str
    parent: CachedResponse | None
    sampled: Context
    new_prints: list[Fingerprint]
    input_ids: list[str]
    created_at: int
    params: JSONObject  # the request's forwarded parameters, dumped once per turn
    lane_key: str | None = None
    origin: TurnOrigin = field(default_factory=TurnOrigin)
    resolution: Resolution = Resolution.NEW_CHAIN
    route: str = "default"
    steering: SteeringInbox | None = None  # a WebSocket-lane turn whose provider relays response.steer
    continues: Continuation | None = None  # a successor: the upstream response its parent's steering started
    queued_upstream: int = 0  # leading input items the upstream holds already (pending steering input)

    @property
    def depth(self) -> int:
        return self.parent.depth + 1 if self.parent else 0


class Turn:
    """Runs a planned turn against a provider and commits it, writing every event into its stream log.

    The terminal event is appended only after the response is committed (remembered by the lane, the hot cache and,
    with ``store=true``, the durable store), so a client that has seen ``response.completed`` can continue from it
    anywhere.
    """

    def __init__(
        self,
        plan: TurnPlan,
        provider: Provider,
        stream: ResponseStream,
        commit: Callable[[Turn, Context | None], Awaitable[None]],
        resume_token: str,
        *,
        observer: TurnObserver | None = None,
        timings: TurnTimings | None = None,
    ) -> None:
        self.plan = plan
        self.provider = provider
        self.stream = stream
        self._commit = commit
        self.resume_token = resume_token
        self.failed: ProtocolError | None = None
        self.commit_failed = False
        self.cancelled = False  # ended by a cancel request (background mode): committed as ``cancelled``
        self._phase = _Phase.WAITING
        self._task: asyncio.Task[None] | None = None
        self.log = StreamLog()
        self.output_prints: list[Fingerprint] = []
        self._pending: list[StreamEvent] = []
        self.observer = observer or TurnObserver()
        self.timings = timings or TurnTimings()
        self.kept: CachedResponse | None = None  # the response as committed, continuable (set by the commit)

    @property
    def response_id(self) -> str:
        return self.plan.response_id

    @property
    def pending(self) -> list[StreamEvent]:
        """The terminal events, decided before the commit and appended to the log after it."""
        return self._pending

    def request_cancel(self) -> bool:
        """Stop the generation and end the response as ``cancelled`` (committed like any other ending).

        Returns:
            Whether the response will end cancelled: ``False`` once its generation is over (it is being committed,
            or is done), when it ends as it would have.
        """
        if self._phase is _Phase.FINISHING:
            return False
        if not self.cancelled:
            self.cancelled = True
            if self._phase is _Phase.GENERATING and self._task is not None:
                # The task is suspended at an await inside the generation (one loop, and the phase says so), so
                # the cancellation lands there and nowhere else: never in the commit.
                self._task.cancel()
        return True

    async def run(self) -> None:
        """Generate, commit, and close the log (also when cancelled, so no follower waits forever)."""
        self._task = asyncio.current_task()
        try:
            for event in self.stream.start():
                self.log.append(event)
            self.observer.turn_started(self)
            await self._generate()
        except asyncio.CancelledError:
            if self.stream.response["status"] == "in_progress":
                for event in self.stream.fail(server_error("The response was cancelled before it finished.")):
                    self.log.append(event)
            raise
        finally:
            self.log.close()
            self.timings.ended = time.perf_counter()
            self.observer.turn_finished(self)  # the server's observer logs the turn's line

    async def _generate(self) -> None:
        plan = self.plan
        pending: list[StreamEvent] = []
        self._phase = _Phase.GENERATING
        try:
            if self.cancelled:  # cancelled while queued: nothing is generated
                pass
            elif not plan.request.generate:
                usage = Usage(
                    input_tokens=plan.sampled.tokens,
                    output_tokens=0,
                    cached_tokens=plan.sampled.tokens - _new_tokens(plan),
                )
                pending = self.stream.finish(Finish(usage=usage))
            else:
                timings = self.timings
                timings.upstream_started = time.perf_counter()
                async for model_event in self.provider.stream(self._provider_request()):
                    events = self.stream.feed(model_event)
                    if isinstance(model_event, Finish):
                        timings.upstream_done = time.perf_counter()
                        pending = events
                        break
                    timings.deltas += 1
                    if timings.first_token is None:
                        timings.first_token = time.perf_counter()
                    for event in events:
                        self.log.append(event)
                else:
                    raise server_error("The model stream ended without finishing.")
        except asyncio.CancelledError:
            if not self.cancelled:
                raise
        except ProtocolError as error:
            if not self.cancelled:  # a provider may turn the cancellation into an error of its own
                self.failed = error
                pending = self.stream.fail(error)
        except Exception as error:  # a provider bug must not leave the client hanging
            if not self.cancelled:
                _log.error("turn.provider_crashed", response_id=self.response_id, error=repr(error))
                self.failed = server_error()
                pending = self.stream.fail(self.failed)
        finally:
            self._phase = _Phase.FINISHING
        if self.cancelled and self._task is not None and self._task.cancelling():
            self._task.uncancel()  # the cancellation was asked for and is handled here: the commit must go on
        if self.cancelled and pending:  # the model finished before the cancellation reached it
            self.cancelled = False
        elif self.cancelled:
            pending = self.stream.cancel()
        self.output_prints = [fingerprint(item) for item in self.stream.output]
        ended = self.failed or self.cancelled  # neither is continuable
        whole = None if ended else plan.sampled.extend(self.stream.output, self.output_prints)
        self._pending = pending
        try:
            await self._commit(self, whole)
        except Exception:  # the store refused the commit, or the lease was lost: nothing was kept
            self.commit_failed = True
            self.failed = not_kept()
            self.stream.fail_instead(pending, self.failed)
            raise
        self.timings.committed = time.perf_counter()
        for event in pending:
            self.log.append(event)

    def _provider_request(self) -> ProviderRequest:
        plan = self.plan
        request = plan.request
        new_count = len(request.input)
        items = plan.sampled.items
        return ProviderRequest(
            model=request.model,
            instructions=request.instructions,
            context=items,
            new_items=items[len(items) - new_count :] if new_count else [],
            tools=request.tools,
            tool_choice=request.tool_choice,
            context_tokens=plan.sampled.tokens,
            cached_tokens=plan.sampled.tokens - _new_tokens(plan),
            previous_response_id=request.previous_response_id,
            response_id=plan.response_id,
            params=plan.params,
            lane_key=plan.lane_key,
            trace_headers=self.observer.upstream_headers(self),
            credentials=plan.origin.credentials,
            steering=plan.steering,
            continues=plan.continues,
            queued_upstream=plan.queued_upstream,
        )

    def record(self, expires_at: float | None, snapshot: list[str] | None) -> ResponseRecord:
        plan, response = self.plan, self.stream.response
        output = self.stream.output
        return ResponseRecord(
            id=plan.response_id,
            tenant=plan.tenant,
            parent_id=plan.request.previous_response_id,
            depth=plan.depth,
            model=plan.request.model,
            status=response["status"],
            created_at=plan.created_at,
            completed_at=response.get("completed_at"),
            params=plan.params,
            input_items=list(plan.request.input),
            input_hashes=[p.digest for p in plan.new_prints],
            input_ids=plan.input_ids,
            output_items=output,
            output_hashes=[p.digest for p in self.output_prints],
            usage=_plain(response["usage"]),
            error=_plain(response["error"]),
            incomplete_details=_plain(response["incomplete_details"]),
            expires_at=expires_at,
            events=to_stored([*self.log.events, *self._pending]),  # the terminal events follow the commit
            snapshot=snapshot,
            idempotency_key=plan.request.idempotency_key,
        )


def _new_tokens(plan: TurnPlan) -> int:
    return sum(p.tokens for p in plan.new_prints)


def _plain(value: Mapping[str, object] | None) -> JSONObject | None:
    """A typed part of the response object as the plain JSON object the store keeps."""
    return dict(value) if value is not None else None
