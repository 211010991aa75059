"""The behaviour every ``Store`` must have: :class:`StoreContract`, run by test_contract.py against every store."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.protocol.items import fingerprint
from tether.store import ResponseRecord, Store, StoredContext
from tether.store.base import StoreStats
from tether.types import Item

if TYPE_CHECKING:
    from .backends import Backend

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
START = 1_700_000_000.0


class StatsStore(Store, Protocol):
    stats: StoreStats


class Clock:
    """A settable time source."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def message(text: str, role: str = "user") -> Item:
    kind = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def make_record(
    response_id: str,
    *,
    parent: ResponseRecord | None = None,
    inputs: list[Item] | None = None,
    outputs: list[Item] | None = None,
    tenant: str = TENANT,
    snapshot: list[str] | None = None,
    expires_at: float | None = None,
    idempotency_key: str | None = None,
) -> ResponseRecord:
    input_items = inputs if inputs is not None else [message(f"question {response_id}")]
    output_items = outputs if outputs is not None else [message(f"answer {response_id}", role="assistant")]
    return ResponseRecord(
        id=response_id,
        tenant=tenant,
        parent_id=None if parent is None else parent.id,
        depth=0 if parent is None else parent.depth + 1,
        model="scripted",
        status="completed",
        created_at=1_700_000_000,
        completed_at=1_700_000_001,
        params={"temperature": 0.5},
        input_items=input_items,
        input_hashes=[fingerprint(item).digest for item in input_items],
        input_ids=[f"msg_{response_id}_{index}" for index in range(len(input_items))],
        output_items=output_items,
        output_hashes=[fingerprint(item).digest for item in output_items],
        usage=None,
        error=None,
        incomplete_details=None,
        expires_at=expires_at,
        snapshot=snapshot,
        idempotency_key=idempotency_key,
    )


@dataclass
class Reference:
    """Whole contexts built by plain concatenation, the oracle for ``load_context``."""

    items: dict[str, list[Item]] = field(default_factory=dict)

    def add(self, record: ResponseRecord) -> list[Item]:
        base = [] if record.parent_id is None else self.items[record.parent_id]
        self.items[record.id] = [*base, *record.input_items, *record.output_items]
        return self.items[record.id]

    def context(self, response_id: str) -> StoredContext:
        items = self.items[response_id]
        return StoredContext(items=items, hashes=[fingerprint(item).digest for item in items])


async def put_chain(
    store: Store, length: int, *, snapshot_every: int | None, reference: Reference | None = None
) -> list[ResponseRecord]:
    """Store a chain of ``length`` responses, snapshotting every ``snapshot_every``-th one."""
    reference = reference if reference is not None else Reference()
    records: list[ResponseRecord] = []
    parent: ResponseRecord | None = None
    for depth in range(length):
        record = make_record(
            f"resp_{depth}",
            parent=parent,
            inputs=[message(f"q{depth}"), message("shared system reminder")],
            outputs=[message(f"a{depth}", role="assistant")],
        )
        whole = reference.add(record)
        if snapshot_every is not None and depth % snapshot_every == snapshot_every - 1:
            record.snapshot = [fingerprint(item).digest for item in whole]
        await store.put(record)
        records.append(record)
        parent = record
    return records


# A random forest: node i's parent is an earlier node or none, its items drawn from a small pool so forks and
# repeats share item rows, and some nodes carry a snapshot or get tombstoned after the forest is stored.
@dataclass(frozen=True)
class NodeSpec:
    parent: int | None
    inputs: list[int]
    outputs: list[int]
    snapshot: bool
    deleted: bool


@st.composite
def forests(draw: st.DrawFn) -> list[NodeSpec]:
    size = draw(st.integers(min_value=1, max_value=25))
    pool = st.integers(min_value=0, max_value=6)
    nodes = []
    for index in range(size):
        parent = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=index - 1))) if index else None
        nodes.append(
            NodeSpec(
                parent=parent,
                inputs=draw(st.lists(pool, max_size=3)),
                outputs=draw(st.lists(pool, max_size=2)),
                snapshot=draw(st.booleans()),
                deleted=draw(st.booleans()),
            )
        )
    return nodes


class StoreContract:
    """Contract tests; the ``backend`` fixture (tests/store/conftest.py) supplies each store in turn."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def store(self, backend: Backend, tmp_path: Path, clock: Clock) -> AsyncIterator[StatsStore]:
        store = await backend.open(tmp_path, clock)
        yield store
        await backend.discard(store)

    async def test_round_trips_every_field(self, store: StatsStore, clock: Clock) -> None:
        parent = make_record("resp_parent")
        record = ResponseRecord(
            id="resp_child",
            tenant=TENANT,
            parent_id="resp_parent",
            depth=1,
            model="gpt-test",
            status="incomplete",
            created_at=1_700_000_123,
            completed_at=1_700_000_456,
            params={"tools": [{"type": "function", "name": "ls"}], "temperature": 0.25, "text": None},
            input_items=[message("é€😀 \u2028"), {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
            input_hashes=[],
            input_ids=["msg_1", "fco_2"],
            output_items=[{"type": "function_call", "call_id": "c2", "name": "ls", "arguments": "{}"}],
            output_hashes=[],
            usage={"input_tokens": 10, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 8}},
            error={"code": "server_error", "message": "boom"},
            incomplete_details={"reason": "max_output_tokens"},
            expires_at=clock.now + 123.456789,
            events=[{"type": "response.created", "sequence_number": 0}, {"type": "done", "sequence_number": 1}],
            snapshot=["h1", "h2"],
            idempotency_key="key-1",
        )
        record.input_hashes = [fingerprint(item).digest for item in record.input_items]
        record.output_hashes = [fingerprint(item).digest for item in record.output_items]
        await store.put(parent)
        await store.put(record)

        assert await store.get(TENANT, "resp_child") == record
        assert await store.get(TENANT, "resp_parent") == parent

    async def test_returned_records_do_not_alias_stored_state(self, store: StatsStore) -> None:
        record = make_record("resp_1")
        await store.put(record)
        record.params["temperature"] = 2.0
        record.input_items[0]["role"] = "system"

        fetched = await store.get(TENANT, "resp_1")
        assert fetched is not None
        assert fetched.params == {"temperature": 0.5}
        assert fetched.input_items[0]["role"] == "user"
        fetched.events.append({"type": "junk"})
        again = await store.get(TENANT, "resp_1")
        assert again is not None
        assert again.events == []

    async def test_missing_response_is_none(self, store: StatsStore) -> None:
        assert await store.get(TENANT, "resp_missing") is None
        assert await store.load_context(TENANT, "resp_missing") is None
        assert await store.delete(TENANT, "resp_missing") is False
        assert await store.find_by_idempotency_key(TENANT, "nope") is None

    async def test_other_tenant_sees_nothing(self, store: StatsStore) -> None:
        record = make_record("resp_1", idempotency_key="key-1")
        await store.put(record)

        assert await store.get(OTHER_TENANT, "resp_1") is None
        assert await store.load_context(OTHER_TENANT, "resp_1") is None
        assert await store.find_by_idempotency_key(OTHER_TENANT, "key-1") is None
        assert await store.delete(OTHER_TENANT, "resp_1") is False
        assert await store.get(TENANT, "resp_1") == record

    async def test_context_does_not_cross_tenants(self, store: StatsStore) -> None:
        foreign = make_record("resp_foreign", tenant=OTHER_TENANT)
        await store.put(foreign)
        await store.put(make_record("resp_child", parent=foreign))

        assert await store.load_context(TENANT, "resp_child") is None

    async def test_put_replaces_a_record_with_the_same_id(self, store: StatsStore) -> None:
        failed = make_record("resp_1", outputs=[], idempotency_key="key-1")
        failed.status = "failed"
        await store.put(failed)
        completed = make_record("resp_1", idempotency_key="key-1")
        await store.put(completed)

        assert await store.get(TENANT, "resp_1") == completed
        assert await store.find_by_idempotency_key(TENANT, "key-1") == completed

    async def test_put_rejects_lists_of_different_lengths(self, store: StatsStore) -> None:
        record = make_record("resp_1")
        record.input_ids = []
        with pytest.raises(ValueError, match="differ in length"):
            await store.put(record)
        record = make_record("resp_2")
        record.output_hashes.append("extra")
        with pytest.raises(ValueError, match="differ in length"):
            await store.put(record)

    async def test_items_are_stored_once(self, backend: Backend, store: StatsStore) -> None:
        shared = message("the same tool output")
        root = make_record("resp_root", inputs=[shared, shared], outputs=[message("a")])
        await store.put(root)
        await store.put(make_record("resp_fork_1", parent=root, inputs=[shared], outputs=[message("a")]))
        await store.put(make_record("resp_fork_2", parent=root, inputs=[shared, message("b")], outputs=[]))

        assert await backend.count_items(store) == 3
        context = await store.load_context(TENANT, "resp_fork_2")
        assert context is not None
        assert context.items == [shared, shared, message("a"), shared, message("b")]

    async def test_chain_contexts_match_concatenation(self, store: StatsStore) -> None:
        reference = Reference()
        records = await put_chain(store, 100, snapshot_every=16, reference=reference)

        for record in records:
            assert await store.load_context(TENANT, record.id) == reference.context(record.id)

    async def test_rebuilding_reads_rows_up_to_the_nearest_snapshot(self, store: StatsStore) -> None:
        await put_chain(store, 100, snapshot_every=16)

        before = store.stats.response_rows_read
        context = await store.load_context(TENANT, "resp_99")
        assert context is not None
        assert len(context.items) == 300
        assert store.stats.response_rows_read - before <= 17

    async def test_rebuilding_without_snapshots_reads_every_ancestor(self, store: StatsStore) -> None:
        await put_chain(store, 40, snapshot_every=None)

        before = store.stats.response_rows_read
        assert await store.load_context(TENANT, "resp_39") is not None
        assert store.stats.response_rows_read - before == 40

    async def test_missing_ancestor_gives_no_context(self, store: StatsStore) -> None:
        orphan = make_record("resp_orphan", parent=make_record("resp_never_stored"))
        await store.put(orphan)

        assert await store.get(TENANT, "resp_orphan") == orphan
        assert await store.load_context(TENANT, "resp_orphan") is None

    async def test_deleted_response_is_invisible(self, store: StatsStore) -> None:
        await store.put(make_record("resp_1", idempotency_key="key-1"))

        assert await store.delete(TENANT, "resp_1") is True
        assert await store.get(TENANT, "resp_1") is None
        assert await store.load_context(TENANT, "resp_1") is None
        assert await store.find_by_idempotency_key(TENANT, "key-1") is None
        assert await store.delete(TENANT, "resp_1") is False

    async def test_tombstoned_ancestors_still_serve_descendants(self, store: StatsStore) -> None:
        reference = Reference()
        await put_chain(store, 10, snapshot_every=None, reference=reference)
        for response_id in ("resp_0", "resp_4", "resp_8"):
            assert await store.delete(TENANT, response_id) is True

        assert await store.load_context(TENANT, "resp_9") == reference.context("resp_9")
        assert await store.load_context(TENANT, "resp_5") == reference.context("resp_5")

    async def test_idempotency_key_finds_the_latest_visible_response(self, store: StatsStore) -> None:
        first = make_record("resp_1", idempotency_key="key-1")
        second = make_record("resp_2", idempotency_key="key-1")
        await store.put(first)
        await store.put(second)
        await store.put(make_record("resp_3", idempotency_key="key-2"))

        assert await store.find_by_idempotency_key(TENANT, "key-1") == second
        await store.delete(TENANT, "resp_2")
        assert await store.find_by_idempotency_key(TENANT, "key-1") == first

    async def test_expired_response_is_invisible(self, store: StatsStore, clock: Clock) -> None:
        await store.put(make_record("resp_1", expires_at=clock.now + 60, idempotency_key="key-1"))
        assert await store.get(TENANT, "resp_1") is not None

        clock.now += 60
        assert await store.get(TENANT, "resp_1") is None
        assert await store.load_context(TENANT, "resp_1") is None
        assert await store.find_by_idempotency_key(TENANT, "key-1") is None
        assert await store.delete(TENANT, "resp_1") is False

    async def test_purge_removes_expired_responses_and_their_items(
        self, backend: Backend, store: StatsStore, clock: Clock
    ) -> None:
        shared = message("kept: also used by a live response")
        await store.put(make_record("resp_live", inputs=[shared], outputs=[]))
        await store.put(make_record("resp_old", inputs=[shared, message("old")], expires_at=clock.now - 1))
        await store.put(make_record("resp_future", expires_at=clock.now + 100))
        assert await backend.count_items(store) == 5

        assert await store.purge_expired(clock.now) == 1
        assert await backend.count_items(store) == 3
        assert await store.get(TENANT, "resp_live") is not None
        assert await store.get(TENANT, "resp_future") is not None
        assert await store.purge_expired(clock.now) == 0

    async def test_purge_keeps_expired_ancestors_of_live_responses(
        self, backend: Backend, store: StatsStore, clock: Clock
    ) -> None:
        root = make_record("resp_root", expires_at=clock.now - 10)
        middle = make_record("resp_middle", parent=root, expires_at=clock.now - 10)
        leaf = make_record("resp_leaf", parent=middle, expires_at=clock.now + 10)
        for record in (root, middle, leaf):
            await store.put(record)
        reference = Reference()
        for record in (root, middle, leaf):
            reference.add(record)

        assert await store.purge_expired(clock.now) == 0
        assert await store.load_context(TENANT, "resp_leaf") == reference.context("resp_leaf")
        assert await store.purge_expired(clock.now + 10) == 3
        assert await backend.count_items(store) == 0

    async def test_purge_removes_tombstoned_leaves(self, backend: Backend, store: StatsStore, clock: Clock) -> None:
        root = make_record("resp_root")
        await store.put(root)
        await store.put(make_record("resp_leaf", parent=root))
        await store.delete(TENANT, "resp_root")

        assert await store.purge_expired(clock.now) == 0
        await store.delete(TENANT, "resp_leaf")
        assert await store.purge_expired(clock.now) == 2
        assert await backend.count_items(store) == 0

    async def test_concurrent_puts_all_land(self, backend: Backend, store: StatsStore) -> None:
        records = [make_record(f"resp_{index}", inputs=[message("shared"), message(str(index))]) for index in range(50)]
        await asyncio.gather(*(store.put(record) for record in records))

        fetched = await asyncio.gather(*(store.get(TENANT, record.id) for record in records))
        assert fetched == records
        assert await backend.count_items(store) == 101

    async def test_edge_blobs_round_trip_within_their_tenant(self, store: StatsStore, clock: Clock) -> None:
        blobs = {"a" * 32: b'{"tools":[1,2,3]}', "b" * 32: b'["\\u0000", "\xc3\xa9"]'}
        await store.put_edge_blobs(TENANT, blobs, clock.now + 60)
        assert await store.get_edge_blobs(TENANT, ["a" * 32, "b" * 32, "c" * 32]) == blobs
        assert await store.get_edge_blobs(TENANT, []) == {}
        assert await store.get_edge_blobs(OTHER_TENANT, list(blobs)) == {}

    async def test_edge_blobs_expire_and_are_purged(self, store: StatsStore, clock: Clock) -> None:
        await store.put_edge_blobs(TENANT, {"a" * 32: b"1"}, clock.now + 60)
        await store.put_edge_blobs(TENANT, {"b" * 32: b"2"}, clock.now + 120)
        clock.now += 60
        assert await store.get_edge_blobs(TENANT, ["a" * 32, "b" * 32]) == {"b" * 32: b"2"}
        await store.purge_expired(clock.now)
        assert await store.get_edge_blobs(TENANT, ["a" * 32, "b" * 32]) == {"b" * 32: b"2"}

    async def test_an_edge_blob_kept_again_takes_the_new_expiry(self, store: StatsStore, clock: Clock) -> None:
        await store.put_edge_blobs(TENANT, {"a" * 32: b"1"}, clock.now + 60)
        await store.put_edge_blobs(TENANT, {"a" * 32: b"1"}, clock.now + 600)
        clock.now += 300
        assert await store.get_edge_blobs(TENANT, ["a" * 32]) == {"a" * 32: b"1"}

    # Each store subclass runs this same test; they are meant to share examples (and the example database), so
    # running it from several classes is intended.
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    )
    @given(forest=forests())
    def test_contexts_of_random_forests_match_concatenation(self, backend: Backend, forest: list[NodeSpec]) -> None:
        asyncio.run(self._check_forest(backend, forest))

    async def _check_forest(self, backend: Backend, forest: list[NodeSpec]) -> None:
        pool = [message(f"item {index}") for index in range(7)]
        reference = Reference()
        records: list[ResponseRecord] = []
        with tempfile.TemporaryDirectory() as directory:
            store = await backend.open(Path(directory), Clock())
            try:
                for index, node in enumerate(forest):
                    record = make_record(
                        f"resp_{index}",
                        parent=None if node.parent is None else records[node.parent],
                        inputs=[pool[choice] for choice in node.inputs],
                        outputs=[pool[choice] for choice in node.outputs],
                    )
                    whole = reference.add(record)
                    if node.snapshot:
                        record.snapshot = [fingerprint(item).digest for item in whole]
                    await store.put(record)
                    records.append(record)
                for index, node in enumerate(forest):
                    if node.deleted:
                        assert await store.delete(TENANT, f"resp_{index}") is True

                for _ in range(2):
                    for index, node in enumerate(forest):
                        context = await store.load_context(TENANT, f"resp_{index}")
                        assert context == (None if node.deleted else reference.context(f"resp_{index}"))
                    # Purging tombstones must not disturb any live response's context.
                    await store.purge_expired(START)
            finally:
                await backend.discard(store)
