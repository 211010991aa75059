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
