"""Durable state of stored responses: the ``Store`` interface and its implementations."""

from tether.store.base import ResponseRecord, Store, StoredContext
from tether.store.memory import MemoryStore
from tether.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "ResponseRecord", "SQLiteStore", "Store", "StoredContext"]
