from __future__ import annotations

from tether.store.urls import is_cluster_url, split_option


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
