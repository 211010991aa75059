"""A store wrapper that times every operation into ``tether_store_operation_duration_seconds``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Histogram

from tether.store.base import ResponseRecord, Store, StoredContext


class TimedStore:
    """Delegates to ``inner``, observing each call's duration under its operation name."""

    def __init__(self, inner: Store, seconds: Histogram) -> None:
        self.inner = inner
        self._seconds = seconds

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._seconds.labels(operation).observe(time.perf_counter() - started)

    async def put(self, record: ResponseRecord) -> None:
        with self._timed("put"):
            await self.inner.put(record)

    async def get(self, tenant: str, response_id: str) -> ResponseRecord | None:
        with self._timed("get"):
            return await self.inner.get(tenant, response_id)

    async def load_context(self, tenant: str, response_id: str) -> StoredContext | None:
        with self._timed("load_context"):
            return await self.inner.load_context(tenant, response_id)

    async def delete(self, tenant: str, response_id: str) -> bool:
        with self._timed("delete"):
            return await self.inner.delete(tenant, response_id)

    async def find_by_idempotency_key(self, tenant: str, key: str) -> ResponseRecord | None:
        with self._timed("find_by_idempotency_key"):
            return await self.inner.find_by_idempotency_key(tenant, key)

    async def purge_expired(self, now: float) -> int:
        with self._timed("purge_expired"):
            return await self.inner.purge_expired(now)

    async def close(self) -> None:
        await self.inner.close()
