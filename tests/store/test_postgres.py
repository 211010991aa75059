from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from tether.store.postgres import PostgresStore
from tether.store.postgres_sql import MIGRATIONS, SCHEMA_VERSION
from tether.store.turns import Lease, Renewal

from .backends import POSTGRES_URL, drop_postgres_schema, postgres_unreachable, unique_name
from .contract import TENANT, Reference, put_chain


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    reason = postgres_unreachable()
    if reason is not None:
        pytest.skip(reason)
    name = unique_name("pg")
    yield name
    await drop_postgres_schema(name)


async def test_two_nodes_on_one_schema_share_state(schema: str) -> None:
    reference = Reference()
    first = await PostgresStore.open(POSTGRES_URL, schema=schema)
    second = await PostgresStore.open(POSTGRES_URL, schema=schema)
    try:
        records = await put_chain(first, 20, snapshot_every=8, reference=reference)
        assert await second.get(TENANT, "resp_19") == records[19]
        assert await second.load_context(TENANT, "resp_19") == reference.context("resp_19")
        assert await second.delete(TENANT, "resp_3") is True
        assert await first.is_visible(TENANT, "resp_3") is False
    finally:
        await first.close()
        await second.close()


async def test_migrations_are_versioned_and_run_once(schema: str) -> None:
    for _ in range(2):
        store = await PostgresStore.open(POSTGRES_URL, schema=schema)
        await store.close()

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(sql.Identifier(schema))
        rows = await (await conn.execute(query)).fetchall()
    assert [row[0] for row in rows] == list(range(1, SCHEMA_VERSION + 1))


async def test_a_version_2_schema_migrates_its_running_turns_to_cancel_marks(schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        await conn.execute("CREATE TABLE schema_migrations (version INTEGER NOT NULL)")
        for version, statements in enumerate(MIGRATIONS[:2], start=1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        await conn.execute(
            "INSERT INTO turns (response_id, tenant, node, token, lease_until, state) "
            "VALUES ('resp_1', %s, 'node-a', 7, 1e12, 'running')",
            (TENANT,),
        )

    store = await PostgresStore.open(POSTGRES_URL, schema=schema)
    try:
        read = await store.read_turn(TENANT, "resp_1", -1)
        assert read is not None
        assert read.cancel_requested is False
        lease = Lease("resp_1", TENANT, "node-a", 7)
        assert await store.renew_lease(lease, 10.0) is Renewal.HELD
        assert await store.request_cancel(TENANT, "resp_1") is True
        assert await store.renew_lease(lease, 10.0) is Renewal.CANCEL_REQUESTED
    finally:
        await store.close()


async def test_refuses_a_newer_schema(schema: str) -> None:
    store = await PostgresStore.open(POSTGRES_URL, schema=schema)
    await store.close()
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        insert = sql.SQL("INSERT INTO {}.schema_migrations VALUES (%s)").format(sql.Identifier(schema))
        await conn.execute(insert, (SCHEMA_VERSION + 1,))

    with pytest.raises(RuntimeError, match="newer"):
        await PostgresStore.open(POSTGRES_URL, schema=schema)


async def test_rejects_a_schema_name_that_is_not_an_identifier() -> None:
    with pytest.raises(ValueError, match="must match"):
        await PostgresStore.open(POSTGRES_URL, schema="x; DROP TABLE items")


async def test_unreachable_server_fails_to_open() -> None:
    with pytest.raises(psycopg.OperationalError):
        await PostgresStore.open("postgresql://127.0.0.1:1/test?connect_timeout=1", timeout_s=1.0)
