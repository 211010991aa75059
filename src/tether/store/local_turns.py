"""``LocalTurns``: the cluster half of the ``Store`` interface for one node, in process memory.

The memory and SQLite stores serve one node, so their turns' logs need not outlive the process: a finished turn's
events are kept with its stored record anyway. The same rules as the shared stores hold (claims by idempotency key,
fencing tokens, expiry by the store's clock), so the engine runs one code path whatever the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from tether.store.base import ResponseRecord
from tether.store.turns import Claim, InterruptEvents, Lease, Renewal, TurnRead, TurnState
from tether.types import JSONObject

# A finished turn's log stays readable this long (the record holds its events for good).
FINISHED_RETENTION_S = 3600.0


@dataclass(slots=True)
class _Turn:
    tenant: str
    node: str
    token: int
    key: str | None
    lease_until: float
    state: TurnState = TurnState.RUNNING
    ended_at: float | None = None
    events: list[bytes] = field(default_factory=list)
    committed: bool = False  # its events live in its stored record from now on, not here
    cancel_requested: bool = False
    # Made only when someone waits: a finished turn stays here for an hour, and most are never waited on.
    changed: asyncio.Event | None = None

    def wake(self) -> None:
        changed, self.changed = self.changed, None
        if changed is not None:
            changed.set()

    def waiter(self) -> asyncio.Event:
        if self.changed is None:
            self.changed = asyncio.Event()
        return self.changed


class LocalTurns:
    """Turns, leases and their logs in dicts.

    A committed turn's events are dropped from here (its stored record holds them), so a busy node keeps only a few
    fields per finished turn until :meth:`purge`.

    Args:
        clock: unix time, deciding lease expiry.
        put: stores the record of a finished turn.
        get: reads a stored record back (the events of a committed turn).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        put: Callable[[ResponseRecord], Awaitable[None]],
        get: Callable[[str, str], Awaitable[ResponseRecord | None]],
    ) -> None:
        self._clock = clock
        self._put = put
        self._get = get
        self._turns: dict[str, _Turn] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._fence = 0

    async def claim_turn(self, tenant: str, response_id: str, *, key: str | None, node: str, lease_s: float) -> Claim:
        if key is not None:
            holder = self._keys.get((tenant, key))
            if holder is not None:
                return Claim(holder=holder)
            self._keys[(tenant, key)] = response_id
        self._fence += 1
        self._turns[response_id] = _Turn(tenant, node, self._fence, key, self._clock() + lease_s)
        return Claim(lease=Lease(response_id, tenant, node, self._fence))

    async def renew_lease(self, lease: Lease, lease_s: float) -> Renewal:
        turn = self._held(lease)
        if turn is None:
            return Renewal.LOST
        turn.lease_until = self._clock() + lease_s
        return Renewal.CANCEL_REQUESTED if turn.cancel_requested else Renewal.HELD

    async def request_cancel(self, tenant: str, response_id: str) -> bool:
        turn = self._turns.get(response_id)
        if turn is None or turn.tenant != tenant or turn.state is not TurnState.RUNNING:
            return False
        turn.cancel_requested = True
        return True

    async def append_events(self, lease: Lease, events: list[JSONObject]) -> bool:
        turn = self._held(lease)
        if turn is None:
            return False
        self._append(turn, events)
        return True

    async def finish_turn(self, lease: Lease, record: ResponseRecord | None, events: list[JSONObject]) -> bool:
        turn = self._held(lease)
        if turn is None:
            return False
        if record is not None:
            await self._put(record)
            if self._held(lease) is None:  # cannot happen on one loop, but the commit must stay fenced
                return False
        self._append(turn, events)
        if record is not None:
            turn.events, turn.committed = [], True
        self._end(turn, TurnState.DONE)
        return True

    async def read_turn(self, tenant: str, response_id: str, after: int) -> TurnRead | None:
        turn = self._turns.get(response_id)
        if turn is None or turn.tenant != tenant:
            return None
        start = max(after + 1, 0)
        if turn.committed:
            record = await self._get(tenant, response_id)
            events = [] if record is None else record.events[start:]
        else:
            events = [orjson.loads(body) for body in turn.events[start:]]
        return TurnRead(
            events=events,
            state=turn.state,
            node=turn.node,
            lease_expired=self._expired(turn),
            cancel_requested=turn.cancel_requested,
        )

    async def wait_turn(self, response_id: str, after: int, timeout_s: float) -> None:
        turn = self._turns.get(response_id)
        if turn is None or turn.state is not TurnState.RUNNING or turn.committed or len(turn.events) > after + 1:
            return
        changed = turn.waiter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout_s)

    async def interrupt_turn(self, response_id: str, build: InterruptEvents, *, lease: Lease | None = None) -> bool:
        turn = self._turns.get(response_id)
        if turn is None or not (self._expired(turn) or (lease is not None and self._held(lease) is turn)):
            return False
        self._append(turn, build(len(turn.events)))
        self._end(turn, TurnState.INTERRUPTED)
        if turn.key is not None and self._keys.get((turn.tenant, turn.key)) == response_id:
            del self._keys[(turn.tenant, turn.key)]
        return True

    def purge(self, now: float) -> None:
        """Forget turns that ended more than :data:`FINISHED_RETENTION_S` ago."""
        for response_id, turn in list(self._turns.items()):
            if turn.ended_at is not None and turn.ended_at + FINISHED_RETENTION_S <= now:
                del self._turns[response_id]
                if turn.key is not None and self._keys.get((turn.tenant, turn.key)) == response_id:
                    del self._keys[(turn.tenant, turn.key)]

    def _held(self, lease: Lease) -> _Turn | None:
        turn = self._turns.get(lease.response_id)
        if turn is None or turn.token != lease.token or turn.state is not TurnState.RUNNING or self._expired(turn):
            return None
        return turn

    def _expired(self, turn: _Turn) -> bool:
        return turn.state is TurnState.RUNNING and turn.lease_until <= self._clock()

    def _append(self, turn: _Turn, events: list[JSONObject]) -> None:
        for event in events:
            if event["sequence_number"] == len(turn.events):
                turn.events.append(orjson.dumps(event))
        turn.wake()

    def _end(self, turn: _Turn, state: TurnState) -> None:
        turn.state = state
        turn.ended_at = self._clock()
        turn.wake()


class OneNodeTurns:
    """The cluster methods of a one-node store, answered by its :class:`LocalTurns` (``self.turns``)."""

    turns: LocalTurns

    async def claim_turn(self, tenant: str, response_id: str, *, key: str | None, node: str, lease_s: float) -> Claim:
        """See :meth:`tether.store.base.Store.claim_turn`."""
        return await self.turns.claim_turn(tenant, response_id, key=key, node=node, lease_s=lease_s)

    async def renew_lease(self, lease: Lease, lease_s: float) -> Renewal:
        """See :meth:`tether.store.base.Store.renew_lease`."""
        return await self.turns.renew_lease(lease, lease_s)

    async def request_cancel(self, tenant: str, response_id: str) -> bool:
        """See :meth:`tether.store.base.Store.request_cancel`."""
        return await self.turns.request_cancel(tenant, response_id)

    async def append_events(self, lease: Lease, events: list[JSONObject]) -> bool:
        """See :meth:`tether.store.base.Store.append_events`."""
        return await self.turns.append_events(lease, events)

    async def finish_turn(self, lease: Lease, record: ResponseRecord | None, events: list[JSONObject]) -> bool:
        """See :meth:`tether.store.base.Store.finish_turn`."""
        return await self.turns.finish_turn(lease, record, events)

    async def read_turn(self, tenant: str, response_id: str, after: int) -> TurnRead | None:
        """See :meth:`tether.store.base.Store.read_turn`."""
        return await self.turns.read_turn(tenant, response_id, after)

    async def wait_turn(self, response_id: str, after: int, timeout_s: float) -> None:
        """See :meth:`tether.store.base.Store.wait_turn`."""
        await self.turns.wait_turn(response_id, after, timeout_s)

    async def interrupt_turn(self, response_id: str, build: InterruptEvents, *, lease: Lease | None = None) -> bool:
        """See :meth:`tether.store.base.Store.interrupt_turn`."""
        return await self.turns.interrupt_turn(response_id, build, lease=lease)

    async def ping(self) -> None:
        """A one-node store in this process is always reachable."""
