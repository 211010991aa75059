"""Opening the cluster stores from a URL: ``postgresql://…?schema=NAME`` and ``redis://…?prefix=NAME``.

The ``schema`` and ``prefix`` query parameters are tether's own and are taken off before the rest of the URL goes
to libpq or redis-py; everything else (user, password, host, port, database, ``sslmode`` and the like) is theirs.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tether.store.base import Store

POSTGRES_SCHEMES = ("postgresql", "postgres")
REDIS_SCHEMES = ("redis", "rediss", "unix")


class StoreUnreachableError(Exception):
    """The PostgreSQL or Redis server a store URL names cannot be reached, refused us, or its driver is missing."""


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
        StoreUnreachableError: the server cannot be reached or refused the connection, or its driver is missing.
    """
    scheme = urlsplit(url).scheme
    if scheme in POSTGRES_SCHEMES:
        try:  # psycopg loads only for a PostgreSQL store
            import psycopg

            from tether.store.postgres import PostgresStore
        except ImportError:
            raise StoreUnreachableError(_missing_driver("PostgreSQL", "postgres")) from None
        conninfo, schema = split_option(url, "schema")
        try:
            return await PostgresStore.open(conninfo, schema=schema or "tether")
        except psycopg.Error as error:
            raise StoreUnreachableError(_reason(error)) from error
    if scheme in REDIS_SCHEMES:
        try:  # redis-py loads only for a Redis store
            import redis.exceptions

            from tether.store.redis import RedisStore
        except ImportError:
            raise StoreUnreachableError(_missing_driver("Redis", "redis")) from None
        address, prefix = split_option(url, "prefix")
        check_redis_database(address)
        try:
            return await RedisStore.open(address, prefix=prefix or "tether:")
        except redis.exceptions.RedisError as error:
            raise StoreUnreachableError(_reason(error)) from error
    raise ValueError(f"not a PostgreSQL or Redis URL: {url!r}")


def check_redis_database(url: str) -> None:
    """Refuse a Redis URL whose database is not a number: redis-py ignores such a path and uses database 0.

    Raises:
        ValueError: naming the path.
    """
    parts = urlsplit(url)
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not (database.isascii() and database.isdigit()):
        raise ValueError(f"Redis database {database!r} is not a number: use redis://HOST:PORT/N (N = 0, 1, ...)")


def _reason(error: Exception) -> str:
    """The driver's reason on one line (libpq adds a second: 'Is the server running on that host …?')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def _missing_driver(name: str, extra: str) -> str:
    return f"a {name} store needs its driver: pip install 'tether-gateway[{extra}]'"
