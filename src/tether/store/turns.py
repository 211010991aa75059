"""What a cluster settles in the store: which node runs a turn, its lease, and its live stream log.

A ``store=true`` turn is *claimed* before it generates. The claim is settled by the store (a unique constraint, or
``SET NX``): one claimant per idempotency key gets a :class:`Lease`, every other gets the id of the response that
holds the key. The lease carries a *fencing token* (strictly increasing across the store): every write of the
generating node (its events, its heartbeat, its final commit) names the token and is refused once the lease was
taken from it, so a node that was paused or partitioned cannot write after another node declared it dead.

The events of a claimed turn go to a shared log that any node can read and wait on (a table with LISTEN/NOTIFY, or a
Redis Stream with blocking reads). A follower that finds the log still running but the lease expired *interrupts* the
turn: it appends the terminal event it is given, marks the turn interrupted and releases the idempotency key, so the
client's retry generates exactly once more. The interrupted generation is never completed: its commit is fenced off.

Any node may *request the cancellation* of a running turn (a background response cancelled through a node that does
not generate it): the store keeps the mark, and the generating node reads it in the answer to its next heartbeat
(:class:`Renewal`), then cancels the turn as a local cancel would.

Memory and SQLite implement this for one node (:mod:`tether.store.local_turns`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from tether.types import JSONObject


class TurnState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"


class Renewal(StrEnum):
    """The answer to a heartbeat: the lease was extended (and whether a cancellation was requested), or lost."""

    HELD = "held"
    CANCEL_REQUESTED = "cancel_requested"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to generate one turn, for as long as the store has not fenced it off.

    Attributes:
        token: the fencing token; every write of the holder names it.
    """

    response_id: str
    tenant: str
    node: str
    token: int


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to :meth:`TurnStore.claim_turn`: a lease (this node runs the turn) or the key's current holder."""

    lease: Lease | None = None
    holder: str | None = None


@dataclass(frozen=True, slots=True)
class TurnRead:
    """A read of a turn's shared log.

    Attributes:
        events: the events after the sequence number asked for, in order.
        state: running, done or interrupted.
        node: the node that holds (or held) the lease.
        lease_expired: ``True`` when the turn is running but its lease ran out (its node is presumed dead).
        cancel_requested: ``True`` once a node asked for the turn's cancellation (:meth:`Store.request_cancel`).
    """

    events: list[JSONObject]
    state: TurnState
    node: str
    lease_expired: bool
    cancel_requested: bool


InterruptEvents = Callable[[int], list[JSONObject]]
"""Builds the terminal events of an interrupted turn, given the sequence number the first of them gets."""
