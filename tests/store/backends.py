"""The four stores the contract suite runs against, each opened fresh and removed without a trace.

PostgreSQL and Redis are the real servers (127.0.0.1:5432 database ``test``, 127.0.0.1:6379): every store gets a
schema or key prefix of its own, so parallel runs never meet. Their tests skip, saying why, only when the server
cannot be reached.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from psycopg import sql

from tether.store import MemoryStore, SQLiteStore
from tether.store.postgres import PostgresStore
from tether.store.redis import RedisStore

from .contract import StatsStore

POSTGRES_URL = "postgresql://127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


class Backend(Protocol):
    name: str

    async def open(self, directory: Path, clock: Callable[[], float]) -> StatsStore: ...

    async def count_items(self, store: StatsStore) -> int: ...

    async def discard(self, store: StatsStore) -> None: ...


class MemoryBackend:
    name = "memory"

    async def open(self, directory: Path, clock: Callable[[], float]) -> StatsStore:
        return MemoryStore(clock=clock)

    async def count_items(self, store: StatsStore) -> int:
        return len(cast(MemoryStore, store)._items)

    async def discard(self, store: StatsStore) -> None:
        await store.close()


class SQLiteBackend:
    name = "sqlite"

    async def open(self, directory: Path, clock: Callable[[], float]) -> StatsStore:
        return await SQLiteStore.open(directory / f"tether-{uuid.uuid4().hex}.db", clock=clock)

    async def count_items(self, store: StatsStore) -> int:
        connection = sqlite3.connect(cast(SQLiteStore, store).path)
        try:
            count: int = connection.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            return count
        finally:
            connection.close()

    async def discard(self, store: StatsStore) -> None:
        await store.close()


def unique_name(kind: str) -> str:
    return f"test_{kind}_{uuid.uuid4().hex[:16]}"


async def drop_postgres_schema(schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def delete_redis_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


class PostgresBackend:
    name = "postgres"

    async def open(self, directory: Path, clock: Callable[[], float]) -> StatsStore:
        return await PostgresStore.open(POSTGRES_URL, schema=unique_name("pg"), clock=clock, max_connections=4)

    async def count_items(self, store: StatsStore) -> int:
        schema = cast(PostgresStore, store).schema
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            query = sql.SQL("SELECT count(*) FROM {}.items").format(sql.Identifier(schema))
            row = await (await conn.execute(query)).fetchone()
            assert row is not None
            count: int = row[0]
            return count

    async def discard(self, store: StatsStore) -> None:
        await store.close()
        await drop_postgres_schema(cast(PostgresStore, store).schema)


class RedisBackend:
    name = "redis"

    async def open(self, directory: Path, clock: Callable[[], float]) -> StatsStore:
        return await RedisStore.open(REDIS_URL, prefix=f"{unique_name('redis')}:", clock=clock)

    async def count_items(self, store: StatsStore) -> int:
        prefix = cast(RedisStore, store).prefix
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            return len([key async for key in client.scan_iter(match=f"{prefix}item:*", count=1000)])
        finally:
            await client.aclose()

    async def discard(self, store: StatsStore) -> None:
        await store.close()
        await delete_redis_prefix(cast(RedisStore, store).prefix)


def postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it can."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as error:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable ({type(error).__name__}: {error})"
    return None


def redis_unreachable() -> str | None:
    """Why Redis cannot be used, or ``None`` when it can."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        return f"Redis at {REDIS_URL} is unreachable ({type(error).__name__}: {error})"
    finally:
        client.close()
    return None


BACKENDS: dict[str, Callable[[], Backend]] = {
    "memory": MemoryBackend,
    "sqlite": SQLiteBackend,
    "postgres": PostgresBackend,
    "redis": RedisBackend,
}
UNREACHABLE: dict[str, Callable[[], str | None]] = {"postgres": postgres_unreachable, "redis": redis_unreachable}


def backend_or_skip(name: str) -> Backend:
    """The named backend; skips the test (saying why) if its server cannot be reached."""
    check = UNREACHABLE.get(name)
    reason = check() if check is not None else None
    if reason is not None:
        pytest.skip(reason)
    return BACKENDS[name]()
