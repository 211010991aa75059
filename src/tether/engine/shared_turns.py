"""Turns shared through the store: any node can follow, resume or retry a ``store=true`` turn another node runs.

- The generating node claims the turn (:meth:`SharedTurns.claim`), holds its lease with a heartbeat, and
  *publishes* every event to the store's shared log before any client sees it (:class:`Publisher`): what a client
  was shown is always in the shared log, so it can resume on any node from the last sequence number it saw.
- The commit is fenced: the record, the terminal events and "done" are written in one step, and only while the
  lease holds. A node that lost its lease stops generating and reports the turn interrupted.
- A node that does not run the turn *mirrors* its shared log into a local :class:`StreamLog`
  (:meth:`SharedTurns.follow`). When the lease expires (its node died) the mirror ends the turn with
  ``generation_interrupted`` and the idempotency key is released, so the retry generates exactly once more.
- A node asked to cancel a background response another node generates marks the turn in the store and waits for it
  to end (:meth:`SharedTurns.cancel_elsewhere`); the generating node reads the mark in the answer to its heartbeat and
  cancels the turn exactly as a local cancel does. A generating node that died meanwhile is handled as above.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from tether.engine.live import LiveRegistry, LiveResponse
from tether.engine.observer import InterruptReason, LeaseRenewal, TurnObserver
from tether.engine.stream_log import StreamLog, from_stored, to_stored
from tether.protocol.events import StreamEvent
from tether.protocol.interrupted import interrupted_events
from tether.protocol.vocabulary import ANSWER_END_EVENTS
from tether.store.base import ResponseRecord, Store
from tether.store.turns import Claim, InterruptEvents, Lease, Renewal, TurnState
from tether.types import JSONObject

_log = structlog.get_logger("tether.engine")


class LeaseLostError(Exception):
    """The store fenced this node off a turn: another node declared it dead, so nothing of it may be committed."""


@dataclass(frozen=True, slots=True)
class SharingPolicy:
    """How turns are shared.

    Attributes:
        node: this node's name in leases.
        lease_s: a lease lapses this long after its last heartbeat (heartbeats come every third of it).
        poll_s: how often a follower re-checks a quiet turn's lease.
    """

    node: str
    lease_s: float = 10.0
    poll_s: float = 1.0


def _builder(response_id: str, log: StreamLog) -> InterruptEvents:
    def build(sequence_number: int) -> list[JSONObject]:
        first = log.events[0] if log.events else None
        created: JSONObject | None = dict(first["response"]) if first and first["type"] == "response.created" else None
        return interrupted_events(response_id, created, sequence_number)

    return build


def _until_terminal(events: list[StreamEvent]) -> list[StreamEvent]:
    """The events before the first ending one: a turn ends in the shared log only through its fenced commit (or as
    interrupted), never by the events a cancelled generation writes into its own log on the way out."""
    for index, event in enumerate(events):
        if event["type"] in ANSWER_END_EVENTS:
            return events[:index]
    return events


class Publisher:
    """Copies a generating turn's events to the shared log, then to the log its clients follow (``visible``).

    Args:
        cancel: cancels the turn as a local cancel does (``None``: not cancellable); called when a heartbeat finds
            that another node asked for it.

    Attributes:
        interrupted: the turn ended without a commit.
        ended_it: this node's own call ended it as interrupted in the store (not a follower that took it over).
        lost: why the store stopped taking the turn's writes, if it did.
    """

    def __init__(
        self,
        store: Store,
        lease: Lease,
        source: StreamLog,
        policy: SharingPolicy,
        observer: TurnObserver,
        cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.source = source
        self.policy = policy
        self.observer = observer
        self.cancel = cancel
        self.visible = StreamLog()
        self.generation: asyncio.Task[None] | None = None
        self.interrupted = False
        self.ended_it = False
        self.lost: InterruptReason | None = None
        self._published = 0
        self._finished = False
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"lease-{self.lease.response_id}")
        try:
            async for _ in self.source.follow(-1):
                await self._push()
            await self._push()
            async with self._lock:
                if not self._finished:
                    await self._give_up()
        finally:
            self.visible.close()  # first: a cancelled publisher (a shutdown past its grace) must not strand followers
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def finish(self, record: ResponseRecord | None, pending: list[StreamEvent]) -> None:
        """Commit: ``record`` (if any), the events not yet published and ``pending`` (the terminal events).

        Raises:
            LeaseLostError: the lease was fenced off; nothing was written.
        """
        async with self._lock:
            rest = [*self.source.events[self._published :], *pending]
            lost = self.lost or InterruptReason.LEASE_EXPIRED
            try:
                done = self.lost is None and await self.store.finish_turn(self.lease, record, to_stored(rest))
            except Exception as error:
                _log.error("turn.commit_failed", response_id=self.lease.response_id, error=type(error).__name__)
                done, lost = False, InterruptReason.STORE_UNREACHABLE
            if not done:
                self._lose(lost)
                raise LeaseLostError(self.lease.response_id)
            self._finished = True
            self._published = len(self.source.events) + len(pending)
            for event in rest:
                self.visible.append(event)

    async def _push(self) -> None:
        async with self._lock:
            batch = _until_terminal(self.source.events[self._published :])
            if not batch or self._finished or self.lost is not None:
                return
            lost = InterruptReason.LEASE_EXPIRED
            try:
                held = await self.store.append_events(self.lease, to_stored(batch))
            except Exception as error:  # the store is unreachable: the turn cannot be shared, so it cannot go on
                _log.error("turn.publish_failed", response_id=self.lease.response_id, error=type(error).__name__)
                held, lost = False, InterruptReason.STORE_UNREACHABLE
            if not held:
                self._lose(lost)
                return
            self._published += len(batch)
            for event in batch:
                self.visible.append(event)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.policy.lease_s / 3)
            async with self._lock:  # never beside the commit: a beat after it would be refused, a false alarm
                if self._finished or self.lost is not None:
                    return
                try:
                    renewal = await self.store.renew_lease(self.lease, self.policy.lease_s)
                except Exception as error:
                    _log.warning(
                        "turn.heartbeat_failed", response_id=self.lease.response_id, error=type(error).__name__
                    )
                    self.observer.lease_renewal_failed(LeaseRenewal.ERROR)
                    continue  # the lease may still hold; the next beat or the commit will tell
                if renewal is Renewal.LOST:
                    self.observer.lease_renewal_failed(LeaseRenewal.REFUSED)
                    self._lose(InterruptReason.LEASE_EXPIRED)
                    return
            if renewal is Renewal.CANCEL_REQUESTED and self.cancel is not None:
                cancel, self.cancel = self.cancel, None  # once: the turn ends cancelled, or was already finishing
                _log.info("turn.cancel_requested_elsewhere", response_id=self.lease.response_id, node=self.lease.node)
                cancel()

    def _lose(self, reason: InterruptReason) -> None:
        if self.lost is None:
            self.lost = reason
            _log.warning("turn.lease_lost", response_id=self.lease.response_id, node=self.lease.node)
            if self.generation is not None and not self.generation.done():
                self.generation.cancel()

    async def _give_up(self) -> None:
        """The turn ended without a commit (cancelled, crashed or fenced off): end it as interrupted, everywhere."""
        self.interrupted = True
        response_id = self.lease.response_id
        # The turn's own response.created, also when no client saw it (a commit refused before anything was
        # published): response.failed then still carries a whole response object.
        build = _builder(response_id, self.source)
        try:
            self.ended_it = await self.store.interrupt_turn(response_id, build, lease=self.lease)
            read = await self.store.read_turn(self.lease.tenant, response_id, self.visible.last_sequence_number)
        except Exception as error:
            _log.error("turn.interrupt_failed", response_id=response_id, error=type(error).__name__)
            read = None
        if read is not None and read.state is not TurnState.RUNNING:
            for event in from_stored(read.events):
                self.visible.append(event)
        else:
            for event in from_stored(build(self.visible.last_sequence_number + 1)):
                self.visible.append(event)
        _log.info("turn.interrupted", response_id=response_id, node=self.lease.node)


class SharedTurns:
    """The engine's side of the cluster: claims, publishers of local turns, mirrors of other nodes' turns."""

    def __init__(
        self, store: Store, live: LiveRegistry, policy: SharingPolicy, observer: TurnObserver | None = None
    ) -> None:
        self.store = store
        self.live = live
        self.policy = policy
        self.observer = observer or TurnObserver()
        self.publishers: dict[str, Publisher] = {}
        self.given_up = 0  # this node's turns it ended as interrupted (shutdown, lost lease, store unreachable)
        self.interrupted_for_dead_nodes = 0  # other nodes' turns this node ended after their lease lapsed
        self.draining = False  # set once shutdown begins: a generation cut off from now on was drained
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim(self, tenant: str, response_id: str, key: str | None) -> Claim:
        return await self.store.claim_turn(
            tenant, response_id, key=key, node=self.policy.node, lease_s=self.policy.lease_s
        )

    def publish(
        self,
        lease: Lease,
        source: StreamLog,
        on_interrupted: Callable[[], None],
        cancel: Callable[[], bool] | None = None,
    ) -> Publisher:
        """Start publishing a claimed turn's events; clients follow the returned publisher's ``visible`` log.

        ``cancel`` (a background turn's) is called when another node asks for the turn's cancellation."""
        publisher = Publisher(self.store, lease, source, self.policy, self.observer, cancel)
        self.publishers[lease.response_id] = publisher

        async def run() -> None:
            try:
                await publisher.run()
            finally:
                del self.publishers[lease.response_id]
                if publisher.interrupted:
                    self.given_up += 1
                    on_interrupted()
                if publisher.ended_it:  # else the node that took the claim over counted it
                    reason = publisher.lost or (InterruptReason.DRAIN if self.draining else InterruptReason.CANCELLED)
                    self.observer.generation_interrupted(lease.node, reason, taken_over=False)

        self._spawn(run(), f"publish-{lease.response_id}")
        return publisher

    async def follow(self, tenant: str, response_id: str) -> LiveResponse | None:
        """A local log mirroring another node's turn (shared by this node's followers), or ``None`` if the store
        has no such turn, or it finished and its response is gone (deleted or expired)."""
        existing = self.live.get(response_id)
        if existing is not None and existing.store and existing.tenant == tenant:
            return existing
        read = await self.store.read_turn(tenant, response_id, -1)
        if read is None:
            return None
        if read.state is TurnState.DONE and not await self.store.is_visible(tenant, response_id):
            return None
        log = StreamLog(from_stored(read.events), closed=read.state is not TurnState.RUNNING)
        live = LiveResponse(response_id, tenant, True, log)
        if not log.closed:
            self.live.add(live)
            live.task = self._spawn(self._mirror(live), f"mirror-{response_id}")
        return live

    async def in_flight(self, tenant: str, response_id: str) -> list[StreamEvent] | None:
        """The events so far of a turn that has no record yet: running (on any node) or interrupted.

        ``None`` when the store has no such turn, or it is done (its record answers, or it was deleted). A running
        turn whose lease lapsed is interrupted first, as a follower would, so a reader never sees a dead node's turn
        as running forever.
        """
        read = await self.store.read_turn(tenant, response_id, -1)
        if read is not None and read.state is TurnState.RUNNING and read.lease_expired:
            await self._take_over(response_id, StreamLog(from_stored(read.events)), read.node)
            read = await self.store.read_turn(tenant, response_id, -1)
        if read is None or read.state is TurnState.DONE:
            return None
        return from_stored(read.events)

    async def _take_over(self, response_id: str, log: StreamLog, node: str) -> None:
        """End a running turn whose lease lapsed as interrupted, releasing its key (unless another node just did)."""
        if await self.store.interrupt_turn(response_id, _builder(response_id, log)):
            self.interrupted_for_dead_nodes += 1
            self.observer.generation_interrupted(node, InterruptReason.LEASE_EXPIRED, taken_over=True)
            _log.warning("turn.interrupted_for_dead_node", response_id=response_id, node=node)

    async def cancel_elsewhere(self, tenant: str, response_id: str) -> None:
        """Ask the node generating a running turn to cancel it, and wait until the turn ends, for about three of
        its heartbeats at most (a lease): cancelled by its node, which reads the mark at its next heartbeat, or
        interrupted here once its lease lapsed (the node died). Callers read the response for the outcome."""
        if not await self.store.request_cancel(tenant, response_id):
            return  # it has ended already (or there is no such turn)
        _log.info("turn.cancel_requested", response_id=response_id, node=self.policy.node)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.lease_s
        seen = -1
        while (remaining := deadline - loop.time()) > 0:
            read = await self.store.read_turn(tenant, response_id, seen)
            if read is None or read.state is not TurnState.RUNNING:
                return
            if read.lease_expired:
                await self.in_flight(tenant, response_id)  # interrupts it, as any reader would
                continue
            seen += len(read.events)
            await self.store.wait_turn(response_id, seen, min(self.policy.poll_s, remaining))

    async def _mirror(self, live: LiveResponse) -> None:
        log, response_id = live.log, live.response_id
        failures = 0
        try:
            while not log.closed:
                try:
                    read = await self.store.read_turn(live.tenant, response_id, log.last_sequence_number)
                    if read is None:  # its log was purged under us: the stored record, if any, has the rest
                        record = await self.store.get(live.tenant, response_id)
                        for event in from_stored(record.events if record is not None else [])[len(log.events) :]:
                            log.append(event)
                        break
                    for event in from_stored(read.events):
                        log.append(event)
                    if read.state is not TurnState.RUNNING:
                        break
                    if read.lease_expired:
                        await self._take_over(response_id, log, read.node)
                        continue
                    await self.store.wait_turn(response_id, log.last_sequence_number, self.policy.poll_s)
                    failures = 0
                except Exception as error:  # the store is unreachable: keep trying for about a lease
                    failures += 1
                    _log.warning("turn.follow_failed", response_id=response_id, error=type(error).__name__)
                    if failures * self.policy.poll_s > self.policy.lease_s:
                        for event in from_stored(_builder(response_id, log)(log.last_sequence_number + 1)):
                            log.append(event)
                        break
                    await asyncio.sleep(self.policy.poll_s)
        finally:
            log.close()
            self.live.finished(live)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Stop mirrors at once (their clients resume elsewhere); let publishers end their turns.

        The generations have ended (finished, or cut off past the shutdown grace) by now; a publisher still has to
        commit or give its turn up in the store, which releases the key for a retry elsewhere. That may take up to a
        lease: past it the cluster ends the turn anyway, so waiting longer would gain nothing.
        """
        mirrors = [task for task in self._tasks if task.get_name().startswith("mirror-")]
        for task in mirrors:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), self.policy.lease_s)
