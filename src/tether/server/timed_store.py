"""A store wrapper that times every operation into ``tether_store_operation_duration_seconds``."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import Histogram

from tether.store.base import ResponseRecord, Store, StoredContext
from tether.store.turns import Claim, InterruptEvents, Lease, Renewal, TurnRead
from tether.types import JSONObject


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

    async def put_edge_blobs(self, tenant: str, blobs: Mapping[str, bytes], expires_at: float) -> None:
        with self._timed("put_edge_blobs"):
            await self.inner.put_edge_blobs(tenant, blobs, expires_at)

    async def get_edge_blobs(self, tenant: str, digests: Collection[str]) -> dict[str, bytes]:
        with self._timed("get_edge_blobs"):
            return await self.inner.get_edge_blobs(tenant, digests)

    async def claim_turn(self, tenant: str, response_id: str, *, key: str | None, node: str, lease_s: float) -> Claim:
        with self._timed("claim_turn"):
            return await self.inner.claim_turn(tenant, response_id, key=key, node=node, lease_s=lease_s)

    async def renew_lease(self, lease: Lease, lease_s: float) -> Renewal:
        with self._timed("renew_lease"):
            return await self.inner.renew_lease(lease, lease_s)

    async def request_cancel(self, tenant: str, response_id: str) -> bool:
        with self._timed("request_cancel"):
            return await self.inner.request_cancel(tenant, response_id)

    async def append_events(self, lease: Lease, events: list[JSONObject]) -> bool:
        with self._timed("append_events"):
            return await self.inner.append_events(lease, events)

    async def finish_turn(self, lease: Lease, record: ResponseRecord | None, events: list[JSONObject]) -> bool:
        with self._timed("finish_turn"):
            return await self.inner.finish_turn(lease, record, events)

    async def read_turn(self, tenant: str, response_id: str, after: int) -> TurnRead | None:
        with self._timed("read_turn"):
            return await self.inner.read_turn(tenant, response_id, after)

    async def wait_turn(self, response_id: str, after: int, timeout_s: float) -> None:
        await self.inner.wait_turn(response_id, after, timeout_s)  # a wait, not an operation: not timed

    async def interrupt_turn(self, response_id: str, build: InterruptEvents, *, lease: Lease | None = None) -> bool:
        with self._timed("interrupt_turn"):
            return await self.inner.interrupt_turn(response_id, build, lease=lease)

    async def is_visible(self, tenant: str, response_id: str) -> bool:
        with self._timed("is_visible"):
            return await self.inner.is_visible(tenant, response_id)

    async def ping(self) -> None:
        with self._timed("ping"):
            await self.inner.ping()
