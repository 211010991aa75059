from __future__ import annotations

import pytest

from tether.store.urls import check_redis_database, is_cluster_url, open_cluster_store, split_option


def test_cluster_urls_are_postgres_or_redis() -> None:
    assert is_cluster_url("postgresql://127.0.0.1:5432/test")
    assert is_cluster_url("postgres://user@db/tether")
    assert is_cluster_url("redis://127.0.0.1:6379/0")
    assert is_cluster_url("rediss://cache:6380/1")
    assert not is_cluster_url("sqlite:///.tether/tether.db")
    assert not is_cluster_url("memory://")


def test_tethers_own_query_parameters_are_taken_off() -> None:
    assert split_option("postgresql://h/db?sslmode=require&schema=blue", "schema") == (
        "postgresql://h/db?sslmode=require",
        "blue",
    )
    assert split_option("redis://h:6379/0", "prefix") == ("redis://h:6379/0", None)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/abc", "redis://127.0.0.1:6379/l", "rediss://h/0x1", "redis://h/1/2"]
)
async def test_a_redis_database_that_is_not_a_number_is_refused(url: str) -> None:
    """redis-py ignores such a path and opens database 0: a typo would share another program's database."""
    with pytest.raises(ValueError, match="is not a number"):
        await open_cluster_store(url)


@pytest.mark.parametrize(
    "url", ["redis://h:6379", "redis://h:6379/", "redis://h:6379/0", "redis://h/15", "unix:///tmp/r.sock"]
)
def test_a_redis_database_number_or_none_is_accepted(url: str) -> None:
    check_redis_database(url)
