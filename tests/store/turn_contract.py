"""The cluster half of the store contract: claims, leases and fencing, shared logs, interrupts, visibility."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tether.store.turns import Lease, Renewal, TurnState
from tether.types import JSONObject

from .contract import OTHER_TENANT, TENANT, Clock, StatsStore, make_record

if TYPE_CHECKING:
    from .backends import Backend

LEASE_S = 10.0
BOUND_S = 60.0  # a bound on waits that should end at once, so a broken wake-up fails instead of hanging


def events(first: int, count: int) -> list[JSONObject]:
    return [
        {"type": "response.output_text.delta", "sequence_number": n, "delta": f"d{n}"}
        for n in range(first, first + count)
    ]


def interrupted(first: int) -> list[JSONObject]:
    return [
        {"type": "response.failed", "sequence_number": first, "response": {"error": {"code": "generation_interrupted"}}}
    ]


class TurnContract:
    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def store(self, backend: Backend, tmp_path: Path, clock: Clock) -> AsyncIterator[StatsStore]:
        store = await backend.open(tmp_path, clock)
        yield store
        await backend.discard(store)

    async def lease(self, store: StatsStore, response_id: str, key: str | None = None) -> Lease:
        claim = await store.claim_turn(TENANT, response_id, key=key, node="node-a", lease_s=LEASE_S)
        assert claim.lease is not None
        return claim.lease

    async def test_claims_get_strictly_increasing_fencing_tokens(self, store: StatsStore) -> None:
        tokens = [(await self.lease(store, f"resp_{n}")).token for n in range(5)]
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == 5

    async def test_one_claim_per_idempotency_key(self, store: StatsStore) -> None:
        claims = await asyncio.gather(
            *(store.claim_turn(TENANT, f"resp_{n}", key="key-1", node=f"node-{n}", lease_s=LEASE_S) for n in range(8))
        )
        winners = [claim.lease for claim in claims if claim.lease is not None]
        assert len(winners) == 1
        assert {claim.holder for claim in claims if claim.lease is None} == {winners[0].response_id}
        other = await store.claim_turn(OTHER_TENANT, "resp_other", key="key-1", node="node-a", lease_s=LEASE_S)
        assert other.lease is not None

    async def test_log_reads_follow_sequence_numbers(self, store: StatsStore) -> None:
        lease = await self.lease(store, "resp_1")
        assert await store.append_events(lease, events(0, 3)) is True
        assert await store.append_events(lease, events(1, 4)) is True  # 1 and 2 are already there

        read = await store.read_turn(TENANT, "resp_1", -1)
        assert read is not None
        assert read.events == events(0, 5)
        assert read.state is TurnState.RUNNING
        assert read.node == "node-a"
        assert read.lease_expired is False
        assert read.cancel_requested is False
        later = await store.read_turn(TENANT, "resp_1", 2)
        assert later is not None
        assert later.events == events(3, 2)

    async def test_other_tenants_and_unknown_turns_read_nothing(self, store: StatsStore) -> None:
        lease = await self.lease(store, "resp_1")
        await store.append_events(lease, events(0, 1))

        assert await store.read_turn(OTHER_TENANT, "resp_1", -1) is None
        assert await store.read_turn(TENANT, "resp_missing", -1) is None

    async def test_finish_commits_the_record_and_closes_the_log(self, store: StatsStore) -> None:
        lease = await self.lease(store, "resp_1", key="key-1")
        await store.append_events(lease, events(0, 2))
        record = make_record("resp_1", idempotency_key="key-1")
        record.events = events(0, 3)

        assert await store.finish_turn(lease, record, events(2, 1)) is True
        read = await store.read_turn(TENANT, "resp_1", -1)
        assert read is not None
        assert (read.state, read.events, read.lease_expired) == (TurnState.DONE, events(0, 3), False)
        assert await store.get(TENANT, "resp_1") == record
        assert await store.finish_turn(lease, record, []) is False
        assert await store.append_events(lease, events(3, 1)) is False
        again = await store.claim_turn(TENANT, "resp_2", key="key-1", node="node-b", lease_s=LEASE_S)
        assert again.holder == "resp_1"

    async def test_heartbeat_keeps_the_lease(self, store: StatsStore, clock: Clock) -> None:
        lease = await self.lease(store, "resp_1")
        clock.now += LEASE_S - 1
        assert await store.renew_lease(lease, LEASE_S) is Renewal.HELD
        clock.now += LEASE_S - 1

        assert await store.append_events(lease, events(0, 1)) is True
        assert await store.interrupt_turn("resp_1", interrupted) is False

    async def test_expired_lease_is_fenced_interrupted_once_and_its_key_released(
        self, store: StatsStore, clock: Clock
    ) -> None:
        lease = await self.lease(store, "resp_1", key="key-1")
        await store.append_events(lease, events(0, 3))
        clock.now += LEASE_S

        read = await store.read_turn(TENANT, "resp_1", -1)
        assert read is not None
        assert read.lease_expired is True
        assert await store.append_events(lease, events(3, 1)) is False
        assert await store.renew_lease(lease, LEASE_S) is Renewal.LOST
        assert await store.interrupt_turn("resp_1", interrupted) is True
        assert await store.interrupt_turn("resp_1", interrupted) is False

        after = await store.read_turn(TENANT, "resp_1", -1)
        assert after is not None
        assert after.state is TurnState.INTERRUPTED
        assert after.lease_expired is False
        assert after.events == [*events(0, 3), *interrupted(3)]
        # The dead node's commit is fenced off: nothing of it is stored.
        assert await store.finish_turn(lease, make_record("resp_1", idempotency_key="key-1"), events(3, 1)) is False
        assert await store.get(TENANT, "resp_1") is None
        # The key is free again: the retry generates once more, under a newer token.
        retry = await store.claim_turn(TENANT, "resp_2", key="key-1", node="node-b", lease_s=LEASE_S)
        assert retry.lease is not None
        assert retry.lease.token > lease.token

    async def test_a_running_lease_cannot_be_interrupted(self, store: StatsStore) -> None:
        lease = await self.lease(store, "resp_1")
        assert await store.interrupt_turn("resp_1", interrupted) is False
        assert await store.interrupt_turn("resp_missing", interrupted) is False
        assert await store.append_events(lease, events(0, 1)) is True

    async def test_waiting_wakes_on_append(self, store: StatsStore) -> None:
        lease = await self.lease(store, "resp_1")
        await store.append_events(lease, events(0, 1))
        waiter = asyncio.create_task(store.wait_turn("resp_1", 0, 3600.0))
        await asyncio.sleep(0)  # let the waiter register before the append
        for _ in range(50):
            if waiter.done():
                break
            await store.append_events(lease, events(1, 1))
            await asyncio.wait([waiter], timeout=0.1)
        await asyncio.wait_for(waiter, BOUND_S)

        read = await store.read_turn(TENANT, "resp_1", 0)
        assert read is not None
        assert read.events == events(1, 1)

    async def test_waiting_returns_at_once_when_events_are_there(self, store: StatsStore) -> None:
        lease = await self.lease(store, "resp_1")
        await store.append_events(lease, events(0, 2))

        await asyncio.wait_for(store.wait_turn("resp_1", 0, 3600.0), BOUND_S)

    async def test_waiting_wakes_when_the_turn_finishes(self, store: StatsStore) -> None:
        lease = await self.lease(store, "resp_1")
        waiter = asyncio.create_task(store.wait_turn("resp_1", -1, 3600.0))
        await asyncio.sleep(0)
        await store.finish_turn(lease, None, events(0, 1))

        await asyncio.wait_for(waiter, BOUND_S)

    async def test_visibility_follows_deletes_and_expiry(self, store: StatsStore, clock: Clock) -> None:
        await store.put(make_record("resp_1"))
        await store.put(make_record("resp_2", expires_at=clock.now + 5))

        assert await store.is_visible(TENANT, "resp_1") is True
        assert await store.is_visible(OTHER_TENANT, "resp_1") is False
        assert await store.is_visible(TENANT, "resp_missing") is False
        await store.delete(TENANT, "resp_1")
        assert await store.is_visible(TENANT, "resp_1") is False
        assert await store.is_visible(TENANT, "resp_2") is True
        clock.now += 5
        assert await store.is_visible(TENANT, "resp_2") is False

    async def test_ping_answers(self, store: StatsStore) -> None:
        await store.ping()

    async def test_the_holder_can_give_its_turn_up(self, store: StatsStore) -> None:
        lease = await self.lease(store, "resp_1", key="key-1")
        await store.append_events(lease, events(0, 2))
        stranger = Lease("resp_1", TENANT, "node-b", lease.token + 1000)

        assert await store.interrupt_turn("resp_1", interrupted, lease=stranger) is False
        assert await store.interrupt_turn("resp_1", interrupted, lease=lease) is True
        read = await store.read_turn(TENANT, "resp_1", 1)
        assert read is not None
        assert (read.state, read.events) == (TurnState.INTERRUPTED, interrupted(2))
        retry = await store.claim_turn(TENANT, "resp_2", key="key-1", node="node-b", lease_s=LEASE_S)
        assert retry.lease is not None

    async def test_a_cancel_request_marks_the_running_turn_for_its_heartbeat(
        self, store: StatsStore, clock: Clock
    ) -> None:
        lease = await self.lease(store, "resp_1")
        await store.append_events(lease, events(0, 2))

        assert await store.request_cancel(OTHER_TENANT, "resp_1") is False
        assert await store.request_cancel(TENANT, "resp_missing") is False
        assert await store.renew_lease(lease, LEASE_S) is Renewal.HELD  # nothing was marked
        assert await store.request_cancel(TENANT, "resp_1") is True
        assert await store.request_cancel(TENANT, "resp_1") is True  # asking again changes nothing

        read = await store.read_turn(TENANT, "resp_1", -1)
        assert read is not None
        assert (read.state, read.cancel_requested, read.events) == (TurnState.RUNNING, True, events(0, 2))
        clock.now += LEASE_S - 1
        assert await store.renew_lease(lease, LEASE_S) is Renewal.CANCEL_REQUESTED  # the lease is extended too
        clock.now += LEASE_S - 1
        assert await store.renew_lease(lease, LEASE_S) is Renewal.CANCEL_REQUESTED  # until the turn ends
        assert await store.append_events(lease, events(2, 1)) is True  # the holder commits its cancelled ending
        assert await store.finish_turn(lease, make_record("resp_1"), events(3, 1)) is True
        assert await store.renew_lease(lease, LEASE_S) is Renewal.LOST

    async def test_an_ended_or_fenced_off_turn_cannot_be_marked(self, store: StatsStore, clock: Clock) -> None:
        done = await self.lease(store, "resp_1")
        await store.finish_turn(done, None, events(0, 1))
        dead = await self.lease(store, "resp_2")
        await store.append_events(dead, events(0, 1))
        assert await store.request_cancel(TENANT, "resp_1") is False

        await store.request_cancel(TENANT, "resp_2")
        clock.now += LEASE_S  # its node died before its heartbeat read the mark
        assert await store.renew_lease(dead, LEASE_S) is Renewal.LOST
        assert await store.interrupt_turn("resp_2", interrupted) is True
        assert await store.request_cancel(TENANT, "resp_2") is False
        read = await store.read_turn(TENANT, "resp_2", -1)
        assert read is not None
        assert read.state is TurnState.INTERRUPTED
