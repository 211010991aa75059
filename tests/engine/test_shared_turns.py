"""Two engines on one store, in process: the cluster's rules without processes or a load balancer.

Each node is an :class:`Engine` of its own (its own live registry, hot cache and node name) on one shared store:
memory (the one-node implementation, shared in process), and the real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest

from store.backends import Backend, backend_or_skip
from tether.engine.engine import Engine, EngineLimits
from tether.engine.live import LiveResponse
from tether.engine.observer import InterruptReason, LeaseRenewal, TurnObserver
from tether.protocol.interrupted import GENERATION_INTERRUPTED, is_interrupted
from tether.protocol.stream import response_error_code
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import ScriptedProvider, ScriptedTiming
from tether.store.base import ResponseRecord, Store
from tether.store.memory import MemoryStore
from tether.store.turns import Lease, Renewal
from tether.types import JSONObject

from .support import TENANT, GatedProvider, events_of, request, terminal

KEY = {"tether:idempotency_key": "turn-1"}
LEASE_S = 10.0
BOUND_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Interruptions(TurnObserver):
    """What a node reported of interrupted generations and failed heartbeats (what feeds its /metrics)."""

    def __init__(self) -> None:
        self.interrupted: list[tuple[str, InterruptReason, bool]] = []
        self.renewals_failed: list[LeaseRenewal] = []
        self.renewal_failed = asyncio.Event()

    def generation_interrupted(self, node: str, reason: InterruptReason, *, taken_over: bool) -> None:
        self.interrupted.append((node, reason, taken_over))

    def lease_renewal_failed(self, outcome: LeaseRenewal) -> None:
        self.renewals_failed.append(outcome)
        self.renewal_failed.set()


class Node:
    def __init__(self, store: Store, name: str, lease_s: float = LEASE_S) -> None:
        self.gated = GatedProvider()
        self.reported = Interruptions()
        router = ProviderRouter(
            {"scripted": ScriptedProvider(ScriptedTiming()), "gated": self.gated}, [Route("gated", "gated")]
        )
        limits = EngineLimits(shutdown_grace_s=0.0, lease_s=lease_s, coherent_reads=True)
        self.engine = Engine(store, router, limits, observer=self.reported, node=name)


@pytest.fixture(params=["memory", "postgres", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    name: str = request.param
    return backend_or_skip(name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def nodes(backend: Backend, tmp_path: Path, clock: Clock) -> AsyncIterator[Callable[..., Node]]:
    store = await backend.open(tmp_path, clock)
    made: list[Node] = []

    def node(name: str, lease_s: float = LEASE_S) -> Node:
        made.append(Node(store, name, lease_s))
        return made[-1]

    yield node
    for each in made:
        each.engine.store = cast(Store, _Unclosable(store))  # the nodes share one store: close it once, below
        await each.engine.aclose()
    await backend.discard(store)


class _Unclosable:
    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def close(self) -> None:
        """The shared store outlives each node."""


class _Partitioned(_Unclosable):
    """A node's view of the store in which its heartbeats are lost on the way (the node is dead to the cluster)."""

    async def renew_lease(self, lease: Lease, lease_s: float) -> Renewal:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def wait_for_cancel_mark(store: Store, response_id: str) -> None:
    for _ in range(int(BOUND_S / 0.01)):
        read = await store.read_turn(TENANT, response_id, -1)
        if read is not None and read.cancel_requested:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{response_id} was never marked for cancellation")


async def start_background(node: Node) -> LiveResponse:
    """A background response held in flight on ``node`` (its model waits for the gate), already in the shared log."""
    live = await node.engine.create(request(model="gated", input="hi", background=True), tenant=TENANT)
    await wait_for_events(node.engine, live.response_id, 2)
    return live


async def wait_for_events(engine: Engine, live_id: str, count: int) -> None:
    for _ in range(int(BOUND_S / 0.01)):
        live = engine.live.get(live_id)
        if live is not None and len(live.log.events) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{live_id} never had {count} events")


async def test_another_node_resumes_mid_stream_and_follows_the_live_turn(nodes: Callable[[str], Node]) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    live = await a.engine.create(request(model="gated", input="hi"), tenant=TENANT)
    await wait_for_events(a.engine, live.response_id, 2)
    head = [dict(event) for event in live.log.events]
    seen = live.log.last_sequence_number

    resumed = await b.engine.attach(TENANT, live.response_id, after=seen)
    tail_task = asyncio.create_task(events_of(b.engine, resumed, seen))
    a.gated.gate.set()
    tail = await asyncio.wait_for(tail_task, BOUND_S)

    whole = head + tail
    assert [event["sequence_number"] for event in whole] == list(range(len(whole)))
    assert terminal(whole)["status"] == "completed"
    assert whole == await events_of(a.engine, live)
    assert (a.engine.stats.generations, b.engine.stats.generations) == (1, 0)


async def test_an_idempotent_retry_on_another_node_follows_the_original(nodes: Callable[[str], Node]) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    original = await a.engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    retry = await b.engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    followers = [asyncio.create_task(events_of(node.engine, live)) for node, live in ((a, original), (b, retry))]
    a.gated.gate.set()
    first, second = await asyncio.wait_for(asyncio.gather(*followers), BOUND_S)

    assert first == second
    assert terminal(first)["status"] == "completed"
    assert (a.engine.stats.generations, b.engine.stats.generations) == (1, 0)
    assert b.gated.requests == []


async def test_a_lapsed_lease_interrupts_the_turn_and_the_retry_generates_once(
    nodes: Callable[[str], Node], clock: Clock
) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    original = await a.engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    await wait_for_events(a.engine, original.response_id, 2)
    follower = await b.engine.attach(TENANT, original.response_id, after=None)
    clock.now += LEASE_S  # node A's heartbeats stop reaching the store: its lease lapses

    seen = await asyncio.wait_for(events_of(b.engine, follower), BOUND_S)
    assert is_interrupted(seen[-1])
    assert response_error_code(seen[-1]["response"]["error"]) == GENERATION_INTERRUPTED
    a.gated.gate.set()  # node A comes back to life: it is fenced off and commits nothing
    on_a = await asyncio.wait_for(events_of(a.engine, original), BOUND_S)
    assert is_interrupted(on_a[-1])
    assert await b.engine.store.get(TENANT, original.response_id) is None

    b.gated.gate.set()
    retried = await asyncio.wait_for(
        events_of(b.engine, await b.engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)), BOUND_S
    )
    assert terminal(retried)["status"] == "completed"
    assert terminal(retried)["id"] != original.response_id
    again = await a.engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    assert terminal(await asyncio.wait_for(events_of(a.engine, again), BOUND_S))["id"] == terminal(retried)["id"]
    assert a.engine.stats.generations + b.engine.stats.generations == 2  # the interrupted one and its retry
    assert (b.engine.shared.interrupted_for_dead_nodes, a.engine.shared.given_up) == (1, 1)
    # Counted once, by the node that took the claim over; node A, fenced off, found it already ended.
    assert b.reported.interrupted == [("node-a", InterruptReason.LEASE_EXPIRED, True)]
    assert a.reported.interrupted == []


async def test_a_turn_cut_off_by_shutdown_is_reported_as_drained(nodes: Callable[[str], Node]) -> None:
    a = nodes("node-a")
    live = await a.engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    await a.gated.arrived(1)
    await a.engine.aclose()  # no shutdown grace: the turn is cut off and given up

    assert is_interrupted((await events_of(a.engine, live))[-1])
    assert a.reported.interrupted == [("node-a", InterruptReason.DRAIN, False)]


async def test_a_heartbeat_refused_after_the_lease_lapsed_is_reported(nodes: Callable[..., Node], clock: Clock) -> None:
    a = nodes("node-a", lease_s=0.3)  # a heartbeat every 0.1 s of real time
    live = await a.engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    await a.gated.arrived(1)
    clock.now += 1.0  # the store's clock passes the lease before the next heartbeat

    await asyncio.wait_for(a.reported.renewal_failed.wait(), BOUND_S)
    seen = await asyncio.wait_for(events_of(a.engine, live), BOUND_S)
    assert is_interrupted(seen[-1])
    assert a.reported.renewals_failed == [LeaseRenewal.REFUSED]
    assert a.reported.interrupted == [("node-a", InterruptReason.LEASE_EXPIRED, False)]


async def test_a_delete_on_one_node_stops_continuations_on_another(nodes: Callable[[str], Node]) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    first = terminal(await events_of(a.engine, await a.engine.create(request(input="hi"), tenant=TENANT)))
    await events_of(
        b.engine, await b.engine.create(request(input="more", previous_response_id=first["id"]), tenant=TENANT)
    )
    assert b.engine.hot.get(TENANT, first["id"]) is not None

    await a.engine.delete_response(TENANT, first["id"])
    with pytest.raises(Exception, match="not found"):
        await b.engine.create(request(input="again", previous_response_id=first["id"]), tenant=TENANT)
    assert b.engine.hot.get(TENANT, first["id"]) is None


async def test_store_false_turns_never_reach_the_shared_store(nodes: Callable[[str], Node]) -> None:
    a = nodes("node-a")
    live = await a.engine.create(request(input="secret", store=False), tenant=TENANT)
    await events_of(a.engine, live)

    assert await a.engine.store.read_turn(TENANT, live.response_id, -1) is None
    assert await a.engine.store.get(TENANT, live.response_id) is None


async def test_another_nodes_get_sees_a_background_response_in_flight_and_resumes_it(
    nodes: Callable[[str], Node],
) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    live = await start_background(a)

    polled = await b.engine.get_response(TENANT, live.response_id)
    assert (polled["status"], polled["background"], polled["output"]) == ("in_progress", True, [])
    seen = live.log.last_sequence_number
    resumed = await b.engine.attach(TENANT, live.response_id, after=seen)
    tail_task = asyncio.create_task(events_of(b.engine, resumed, seen))
    a.gated.gate.set()
    tail = await asyncio.wait_for(tail_task, BOUND_S)

    assert terminal(tail)["status"] == "completed"
    done = await b.engine.get_response(TENANT, live.response_id)
    assert (done["status"], done["background"]) == ("completed", True)
    assert (a.engine.stats.generations, b.engine.stats.generations) == (1, 0)


async def test_a_dead_nodes_background_response_reads_as_interrupted(
    nodes: Callable[[str], Node], clock: Clock
) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    live = await start_background(a)
    clock.now += LEASE_S  # node A's heartbeats stop reaching the store: its lease lapses

    polled = await b.engine.get_response(TENANT, live.response_id)
    assert polled["status"] == "failed"
    assert response_error_code(polled["error"] or {}) == GENERATION_INTERRUPTED
    assert b.engine.shared.interrupted_for_dead_nodes == 1
    assert b.reported.interrupted == [("node-a", InterruptReason.LEASE_EXPIRED, True)]
    a.gated.gate.set()  # node A comes back to life: it is fenced off and commits nothing
    on_a = await asyncio.wait_for(events_of(a.engine, live), BOUND_S)
    assert is_interrupted(on_a[-1])
    assert (await b.engine.get_response(TENANT, live.response_id))["status"] == "failed"


async def test_a_cancel_on_a_node_that_does_not_generate_the_response_cancels_it_there(
    nodes: Callable[[str], Node],
) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    live = await start_background(a)
    await a.gated.arrived(1)

    # Node B marks the turn; node A sees the mark at its next heartbeat and cancels it as a local cancel would.
    cancelled = await asyncio.wait_for(b.engine.cancel(TENANT, live.response_id), BOUND_S)
    assert (cancelled["status"], cancelled["background"], cancelled["id"]) == ("cancelled", True, live.response_id)
    assert a.gated.abandoned == 1  # the generation was stopped: the model's stream closed before answering
    on_a = await asyncio.wait_for(events_of(a.engine, live), BOUND_S)
    assert terminal(on_a)["status"] == "cancelled"
    record = await a.engine.store.get(TENANT, live.response_id)
    assert record is not None
    assert record.status == "cancelled"
    for node in (a, b):
        assert (await node.engine.get_response(TENANT, live.response_id))["status"] == "cancelled"
        assert (await node.engine.cancel(TENANT, live.response_id))["status"] == "cancelled"
    assert (a.engine.stats.generations, b.engine.stats.generations) == (1, 0)
    assert (a.engine.shared.given_up, b.engine.shared.interrupted_for_dead_nodes) == (0, 0)


async def test_a_cancel_elsewhere_answers_interrupted_when_the_generating_node_dies_meanwhile(
    nodes: Callable[[str], Node], clock: Clock
) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    a.engine.shared.store = cast(Store, _Partitioned(a.engine.store))  # node A's heartbeats never arrive
    live = await start_background(a)

    cancel = asyncio.create_task(b.engine.cancel(TENANT, live.response_id))
    await wait_for_cancel_mark(b.engine.store, live.response_id)
    clock.now += LEASE_S  # node A's lease lapses while node B waits for it to cancel
    answered = await asyncio.wait_for(cancel, BOUND_S)

    assert (answered["status"], answered["background"]) == ("failed", True)
    assert response_error_code(answered["error"] or {}) == GENERATION_INTERRUPTED
    assert b.engine.shared.interrupted_for_dead_nodes == 1
    a.gated.gate.set()  # node A comes back to life: it is fenced off and commits nothing
    assert is_interrupted((await asyncio.wait_for(events_of(a.engine, live), BOUND_S))[-1])
    for node in (a, b):
        assert (await node.engine.get_response(TENANT, live.response_id))["status"] == "failed"


async def test_a_background_response_is_cancelled_on_its_node_and_read_cancelled_on_every_node(
    nodes: Callable[[str], Node],
) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    live = await start_background(a)

    cancelled = await asyncio.wait_for(a.engine.cancel(TENANT, live.response_id), BOUND_S)
    assert cancelled["status"] == "cancelled"
    assert a.gated.abandoned == 1
    assert (await b.engine.get_response(TENANT, live.response_id))["status"] == "cancelled"
    assert (await b.engine.cancel(TENANT, live.response_id))["status"] == "cancelled"


class _CommitRacedByHeartbeat(MemoryStore):
    """Holds each commit open, once it is written, until a heartbeat tries to renew (or a bound passes)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.renewing = asyncio.Event()

    async def renew_lease(self, lease: Lease, lease_s: float) -> Renewal:
        self.renewing.set()
        return await super().renew_lease(lease, lease_s)

    async def finish_turn(self, lease: Lease, record: ResponseRecord | None, events: list[JSONObject]) -> bool:
        done = await super().finish_turn(lease, record, events)
        self.renewing.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.renewing.wait(), 1.0)
        return done


async def test_a_heartbeat_never_runs_beside_the_commit(clock: Clock) -> None:
    store = _CommitRacedByHeartbeat(clock)
    node = Node(store, "node-a", lease_s=0.3)  # a heartbeat every 0.1 s of real time, during the held commit
    node.gated.gate.set()
    live = await node.engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    seen = await asyncio.wait_for(events_of(node.engine, live), BOUND_S)
    await node.engine.aclose()

    assert terminal(seen)["status"] == "completed"
    assert node.reported.renewals_failed == []  # a refusal here would be a false alarm: the turn was done
