from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tether.store.redis import RedisStore

from .backends import REDIS_URL, delete_redis_prefix, redis_unreachable, unique_name
from .contract import TENANT, Reference, make_record, put_chain

LEASE_S = 10.0


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    reason = redis_unreachable()
    if reason is not None:
        pytest.skip(reason)
    name = f"{unique_name('redis')}:"
    yield name
    await delete_redis_prefix(name)


async def test_two_nodes_on_one_prefix_share_state(prefix: str) -> None:
    reference = Reference()
    first = await RedisStore.open(REDIS_URL, prefix=prefix)
    second = await RedisStore.open(REDIS_URL, prefix=prefix)
    try:
        records = await put_chain(first, 20, snapshot_every=8, reference=reference)
        assert await second.get(TENANT, "resp_19") == records[19]
        assert await second.load_context(TENANT, "resp_19") == reference.context("resp_19")
        assert await second.delete(TENANT, "resp_3") is True
        assert await first.is_visible(TENANT, "resp_3") is False
    finally:
        await first.close()
        await second.close()


async def test_claims_turns_and_logs_carry_native_ttls(prefix: str) -> None:
    store = await RedisStore.open(REDIS_URL, prefix=prefix)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        claim = await store.claim_turn(TENANT, "resp_1", key="key-1", node="node-a", lease_s=LEASE_S)
        assert claim.lease is not None
        await store.append_events(claim.lease, [{"type": "response.created", "sequence_number": 0}])
        for kind in ("claim:8:tenant-a:key-1", "turn:resp_1", "log:resp_1"):
            assert await client.ttl(f"{prefix}{kind}") > 0
        await store.put(make_record("resp_2"))
        assert await client.ttl(f"{prefix}resp:resp_2") == -1  # records go by purge: descendants keep ancestors
    finally:
        await client.aclose()
        await store.close()


async def test_rejects_a_prefix_with_pattern_characters() -> None:
    with pytest.raises(ValueError, match="must match"):
        await RedisStore.open(REDIS_URL, prefix="tether*")


async def test_unreachable_server_fails_to_open() -> None:
    with pytest.raises(RedisConnectionError):
        await RedisStore.open("redis://127.0.0.1:1/0", timeout_s=1.0)
