"""The gateway's edge content in the store: each part written once along a chain, refreshed before it expires, and
rebuilt exactly by a node that never held it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

import pytest
import structlog.testing

from tether.bench.edge_store import SYSTEM, TOOLS, next_messages
from tether.protocol.delta import value_hash
from tether.server.edge_content import EdgeContent
from tether.store.memory import MemoryStore

TTL_S = 1000.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordingStore(MemoryStore):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.writes: Counter[str] = Counter()
        self.reads = 0

    async def put_edge_blobs(self, tenant: str, blobs: Mapping[str, bytes], expires_at: float) -> None:
        self.writes.update(list(blobs))
        await super().put_edge_blobs(tenant, blobs, expires_at)

    async def get_edge_blobs(self, tenant: str, digests: Collection[str]) -> dict[str, bytes]:
        self.reads += 1
        return await super().get_edge_blobs(tenant, digests)


def chain(turns: int) -> list[dict[str, Any]]:
    messages: list[Any] = [{"role": "user", "content": "fix the failing test"}]
    requests = []
    for turn in range(turns):
        requests.append({"model": "claude", "system": SYSTEM, "tools": TOOLS, "messages": messages})
        messages = next_messages(messages, turn)
    return requests


async def test_a_chain_writes_each_part_once_and_a_new_node_rebuilds_it_exactly() -> None:
    clock = Clock()
    store = RecordingStore(clock)
    content = EdgeContent(1 << 26, store, TTL_S, clock)
    requests = chain(12)
    for request in requests:
        await content.hold("t", request)
    assert set(store.writes.values()) == {1}  # the tools, the system prompt, every message: once
    fresh = EdgeContent(1 << 26, store, TTL_S, clock)  # a restarted gateway, or another node
    last = value_hash(requests[-1])
    await fresh.load("t", [last])
    assert fresh.get("t", last) == requests[-1]
    assert store.reads <= 8  # one read per level of nesting, not one per part


async def test_parts_still_in_use_are_refreshed_before_they_expire() -> None:
    clock = Clock()
    store = RecordingStore(clock)
    content = EdgeContent(1 << 26, store, TTL_S, clock)
    first, second = chain(2)
    await content.hold("t", first)
    clock.now += TTL_S * 0.6
    await content.hold("t", second)
    assert store.writes[value_hash(TOOLS)] == 2  # rewritten with a new expiry: the chain still uses it
    clock.now += TTL_S * 0.6
    fresh = EdgeContent(1 << 26, store, TTL_S, clock)
    await fresh.load("t", [value_hash(second)])
    assert fresh.get("t", value_hash(second)) == second
    clock.now += TTL_S
    gone = EdgeContent(1 << 26, store, TTL_S, clock)
    await gone.load("t", [value_hash(second)])
    with pytest.raises(KeyError):  # expired: the edge heals once
        gone.get("t", value_hash(second))


class DamagedStore(MemoryStore):
    """Gives back every edge part with a byte the disk flipped."""

    async def get_edge_blobs(self, tenant: str, digests: Collection[str]) -> dict[str, bytes]:
        return {digest: b"\xff" + body[1:] for digest, body in (await super().get_edge_blobs(tenant, digests)).items()}


async def test_a_damaged_stored_part_is_missing_and_one_log_line_not_an_exception() -> None:
    """An undecodable part raised out of load, into the edge link, which catches only protocol errors; now it is
    missing, the edge heals by re-sending it, and the log says store.damaged once per part."""
    clock = Clock()
    store = DamagedStore(clock=clock)
    request = chain(1)[0]
    await EdgeContent(1 << 26, store, TTL_S, clock).hold("t", request)
    fresh = EdgeContent(1 << 26, store, TTL_S, clock)
    with structlog.testing.capture_logs() as logs:
        await fresh.load("t", [value_hash(request)])
    with pytest.raises(KeyError):
        fresh.get("t", value_hash(request))
    assert [entry["event"] for entry in logs] == ["store.damaged"]
    assert "tether check" in logs[0]["problem"]
