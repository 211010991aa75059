from __future__ import annotations

from tether.store import MemoryStore, Store


def test_memory_store_satisfies_the_store_interface() -> None:
    store: Store = MemoryStore()
    assert isinstance(store, MemoryStore)
