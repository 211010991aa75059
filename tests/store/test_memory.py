from __future__ import annotations

from pathlib import Path

from tether.store import MemoryStore, Store

from .contract import Clock, StatsStore, StoreContract


class TestMemoryStore(StoreContract):
    async def open_store(self, directory: Path, clock: Clock) -> StatsStore:
        return MemoryStore(clock=clock)

    async def count_items(self, store: StatsStore) -> int:
        assert isinstance(store, MemoryStore)
        return len(store._items)


def test_memory_store_satisfies_the_store_interface() -> None:
    store: Store = MemoryStore()
    assert isinstance(store, MemoryStore)
