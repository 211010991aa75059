"""One turn, driven to its end through drops, resumes, heals and fallbacks.

Each attempt either resumes the turn's response after the last delivered sequence number (once its id is known,
with tether's extensions) or sends the create request again with the same idempotency key (before the id is known,
or without extensions, or after the response ended in ``generation_interrupted``: its node died, and the turn is
generated once more as a new response, announced by a ``TurnReset``). A ``previous_response_not_found`` answer is
healed once per turn by re-sending the full context from the journal. Failures that may pass (drops, offline,
429/5xx) wait a bounded, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from tether.client.connector import Connector
from tether.client.errors import APIError, ConnectionLostError, RetryExhaustedError
from tether.client.events import ClientStats, Emitter, GaveUp, Healed, Resumed, Retrying, TransportKind
from tether.client.journal import Journal
from tether.client.results import Delta
from tether.client.retry import Backoff, RetryPolicy
from tether.client.tracker import ResponseTracker
from tether.client.transport import Transport
from tether.protocol.vocabulary import IDEMPOTENCY_KEY, INHERIT_PARAMS
from tether.types import Item, JSONObject

INHERITS_MARKER = "_inherits"  # in a journaled request: the parameters equal to the parent's


@dataclass(slots=True)
class TurnSpec:
    """A turn as sent: its number, idempotency key, request parameters and new input items."""

    number: int
    key: str
    request: JSONObject
    inputs: list[Item]
    healed: bool = False
    full_context: list[Item] | None = field(default=None, repr=False)


class TurnRunner:
    """Runs turns for one session (one at a time).

    Args:
        session_id: the journal's session.
        journal: where heals read the full context and new response ids are noted.
        connector: chooses and opens transports.
        emitter: connection events.
        stats: counters.
        retry: backoff bounds.
        rng: jitter source.
        extensions: whether tether's extensions (idempotency field, resume) may be used.
        on_response: awaited when a turn's response id becomes known (to journal it before any delta).
    """

    def __init__(
        self,
        *,
        session_id: str,
        journal: Journal,
        connector: Connector,
        emitter: Emitter,
        stats: ClientStats,
        retry: RetryPolicy,
        rng: random.Random,
        extensions: bool,
        on_response: Callable[[TurnSpec, str, str | None], Awaitable[None]],
    ) -> None:
        self.session_id = session_id
        self.journal = journal
        self.connector = connector
        self.emitter = emitter
        self.stats = stats
        self.retry = retry
        self.rng = rng
        self.extensions = extensions
        self.on_response = on_response

    async def run(self, spec: TurnSpec, tracker: ResponseTracker) -> AsyncGenerator[Delta, None]:
        """Yield the turn's deltas, each exactly once, until ``tracker.done``.

        Raises:
            APIError: the server refused the turn for good.
            RetryExhaustedError: the retry bounds were reached.
            WebSocketRefusedError: WebSocket mode was refused and the session may not fall back.
        """
        backoff = Backoff(self.retry, self.rng)
        recreate = False
        while True:
            tracker.begin_attempt()
            resuming = False
            try:
                transport = await self.connector.open()
                resuming = tracker.response_id is not None and self.extensions and not recreate
                events = await self._attempt(spec, tracker, transport, resuming)
                async with contextlib.aclosing(events):
                    async for event in events:
                        known, progress = tracker.response_id, tracker.delivered
                        deltas = tracker.feed(event)
                        recreate = False
                        if tracker.response_id is not None and tracker.response_id != known:
                            await self.on_response(spec, tracker.response_id, tracker.resume_token)
                        if tracker.delivered > progress:
                            backoff.reset()
                        for delta in deltas:
                            yield delta
                # Not stopping at the terminal event lets HTTP read its [DONE] and keep the connection for reuse.
                if tracker.done and tracker.interrupted:
                    # The node generating it died: the server released the idempotency key, so creating the turn
                    # again (same key) generates it exactly once more, as a new response.
                    self.stats.interrupted += 1
                    tracker.restart()
                    recreate = True
                    await self._wait(backoff, "generation_interrupted", None)
                    continue
                if tracker.done:
                    self.connector.succeeded()
                    return
                if tracker.stream_error is not None:
                    raise tracker.stream_error
                raise ConnectionLostError("the stream ended before the response finished")
            except APIError as error:
                if await self._heal(spec, error):
                    continue
                if error.code == "response_not_found" and resuming:
                    recreate = True  # the server forgot it: the idempotency key may still find it, else it reruns
                    continue
                if not error.retryable:
                    raise
                await self._wait(backoff, f"{error.status} {error.code}", error.retry_after_s)
            except ConnectionLostError as error:
                if tracker.done:  # lost after the terminal event: nothing is missing
                    self.connector.succeeded()
                    return
                self.connector.dropped(error)
                await self._wait(backoff, error.reason, None)

    async def _attempt(
        self, spec: TurnSpec, tracker: ResponseTracker, transport: Transport, resuming: bool
    ) -> AsyncGenerator[JSONObject, None]:
        if resuming:
            assert tracker.response_id is not None
            self.stats.resumes += 1
            self.emitter.event(Resumed(tracker.response_id, tracker.delivered, transport.kind))
            return transport.resume(tracker.response_id, tracker.delivered, tracker.resume_token)
        if spec.full_context is None and self._stateless(spec, transport):
            spec.full_context = await self.journal.context(self.session_id)
        return transport.create(self.body(spec), spec.key)

    def body(self, spec: TurnSpec) -> JSONObject:
        """The create request of an attempt: new items after ``previous_response_id``, or the whole context."""
        body = {name: value for name, value in spec.request.items() if value is not None}
        inherits = body.pop(INHERITS_MARKER, None) or []
        if spec.full_context is not None:
            body.pop("previous_response_id", None)
            body["input"] = spec.full_context
        else:
            body["input"] = spec.inputs
            if self.extensions and inherits:
                for name in inherits:
                    body.pop(name, None)
                body[INHERIT_PARAMS] = True
        if self.extensions:
            body[IDEMPOTENCY_KEY] = spec.key
        return body

    def _stateless(self, spec: TurnSpec, transport: Transport) -> bool:
        # store=false state lives in one WebSocket connection: over HTTP a continuation can never be found.
        return (
            transport.kind is TransportKind.HTTP
            and spec.request.get("store") is False
            and spec.request.get("previous_response_id") is not None
        )

    async def _heal(self, spec: TurnSpec, error: APIError) -> bool:
        previous = spec.request.get("previous_response_id")
        if error.code != "previous_response_not_found" or spec.full_context is not None or previous is None:
            return False
        spec.full_context = await self.journal.context(self.session_id)
        spec.healed = True
        self.stats.heals += 1
        self.emitter.event(Healed(str(previous), len(spec.full_context)))
        return True

    async def _wait(self, backoff: Backoff, reason: str, hint_s: float | None) -> None:
        delay = backoff.next_delay(hint_s)
        if delay is None:
            self.emitter.event(GaveUp(backoff.attempt, backoff.elapsed_s, reason))
            raise RetryExhaustedError(backoff.attempt, backoff.elapsed_s, reason)
        self.stats.retries += 1
        self.emitter.event(Retrying(backoff.attempt, self.retry.max_attempts, delay, reason))
        await asyncio.sleep(delay)
