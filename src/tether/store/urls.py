"""Opening the cluster stores from a URL: ``postgresql://…?schema=NAME`` and ``redis://…?prefix=NAME``.

The ``schema`` and ``prefix`` query parameters are tether's own and are taken off before the rest of the URL goes
to libpq or redis-py; everything else (user, password, host, port, database, ``sslmode`` and the like) is theirs.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tether.store.base import Store

POSTGRES_SCHEMES = ("postgresql", "postgres")
REDIS_SCHEMES = ("redis", "rediss", "unix")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL or Redis store."""
    return urlsplit(url).scheme in POSTGRES_SCHEMES + REDIS_SCHEMES


def split_option(url: str, name: str) -> tuple[str, str | None]:
    """``url`` without its ``name`` query parameter, and that parameter's value."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    value = next((v for k, v in query if k == name), None)
    rest = urlencode([(k, v) for k, v in query if k != name])
    return urlunsplit(parts._replace(query=rest)), value


async def open_cluster_store(url: str) -> Store:
    """Open the PostgreSQL or Redis store ``url`` names.

    Raises:
        ValueError: for another scheme, or a bad schema or prefix name.
    """
    scheme = urlsplit(url).scheme
    if scheme in POSTGRES_SCHEMES:
        from tether.store.postgres import PostgresStore  # psycopg loads only for a PostgreSQL store

        conninfo, schema = split_option(url, "schema")
        return await PostgresStore.open(conninfo, schema=schema or "tether")
    if scheme in REDIS_SCHEMES:
        from tether.store.redis import RedisStore  # redis-py loads only for a Redis store

        address, prefix = split_option(url, "prefix")
        return await RedisStore.open(address, prefix=prefix or "tether:")
    raise ValueError(f"not a PostgreSQL or Redis URL: {url!r}")
