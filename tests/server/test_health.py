"""Liveness and readiness over real sockets, on SQLite and on the real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2 as httpx
import pytest

from store.backends import (
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_prefix,
    drop_postgres_schema,
    postgres_unreachable,
    redis_unreachable,
    unique_name,
)
from tether.netem.proxy import ShapingProxy

from .wire import ServerFactory


async def test_health_is_liveness_and_ready_reports_the_store(make_server: ServerFactory) -> None:
    server = make_server()
    async with httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}") as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "store": "reachable"}


@pytest.fixture(params=["postgres", "redis"])
async def cluster_store_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A store URL of its own on the real PostgreSQL or Redis, removed afterwards (request it before servers)."""
    kind: str = request.param
    reason = postgres_unreachable() if kind == "postgres" else redis_unreachable()
    if reason is not None:
        pytest.skip(reason)
    name = unique_name(kind)
    yield f"{POSTGRES_URL}?schema={name}" if kind == "postgres" else f"{REDIS_URL}?prefix={name}:"
    await (drop_postgres_schema(name) if kind == "postgres" else delete_redis_prefix(f"{name}:"))


async def test_a_cluster_node_is_ready_while_its_store_answers(
    cluster_store_url: str, make_server: ServerFactory
) -> None:
    server = make_server(store_url=cluster_store_url)
    async with httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}") as client:
        ready = await client.get("/health/ready")
        created = await client.post("/v1/responses", json={"model": "echo", "input": "hi"})
        fetched = await client.get(f"/v1/responses/{created.json()['id']}")
    assert ready.json() == {"status": "ready", "store": "reachable"}
    assert fetched.json()["output"] == created.json()["output"]


async def test_ready_says_unavailable_while_the_store_is_cut_off(make_server: ServerFactory) -> None:
    reason = redis_unreachable()
    if reason is not None:
        pytest.skip(reason)
    name = unique_name("redis")
    try:
        with ShapingProxy("127.0.0.1", 6379, "loopback", seed=1).start_in_thread() as proxy:
            server = make_server(store_url=f"redis://{proxy.host}:{proxy.port}/0?prefix={name}:")
            async with httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}", timeout=30.0) as client:
                assert (await client.get("/health/ready")).status_code == 200
                proxy.cut("blackhole", hold_new=True)  # the store stops answering, and so does every new connection
                cut_off = await client.get("/health/ready")
                alive = await client.get("/health")
                proxy.restore()
                back = await client.get("/health/ready")
    finally:
        await delete_redis_prefix(f"{name}:")

    assert cut_off.status_code == 503
    assert cut_off.json()["status"] == "unavailable"
    assert cut_off.json()["store"] == "unreachable"
    assert alive.json() == {"status": "ok"}  # liveness does not depend on the store
    assert back.status_code == 200
