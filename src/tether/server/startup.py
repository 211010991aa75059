"""Start-up checks for ``tether serve``: every mistake found before the server says it is ready, in one line.

The listening socket is bound first (a port in use is reported before anything else starts), then the store is
opened and closed once and the providers are built once, so a bad store URL, a damaged database, a missing API key
variable, a route naming an unknown provider or a missing scripts file is a :class:`StartupError`, not a traceback
from inside the server's lifespan.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import sqlite3

from tether.server.app import open_store, provider_router, unrouted_provider
from tether.settings import Settings
from tether.store.sqlite_check import StoreUnusableError
from tether.store.urls import StoreUnreachableError


class StartupError(Exception):
    """The server cannot start; the message says what is wrong and how to fix it."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (uvicorn serves on it).

    Raises:
        StartupError: the port is in use, the address is not this machine's, or the host name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}; check --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            hint = "another process is listening there; stop it or choose another port with --port"
        elif error.errno == errno.EACCES:
            hint = "permission denied; ports below 1024 need privileges, choose another with --port"
        elif error.errno == errno.EADDRNOTAVAIL:
            hint = "that address is not one of this machine's; check --host"
        else:
            hint = error.strerror or str(error)
        raise StartupError(f"cannot listen on {host}:{port}: {hint}") from None
    sock.setblocking(False)
    return sock


async def preflight(settings: Settings) -> None:
    """Open the store and build the providers once, turning each failure into a one-line :class:`StartupError`."""
    try:
        store = await open_store(settings.store_url)
    except ValueError as error:
        raise StartupError(f"store_url: {error}") from None
    except StoreUnusableError as error:
        raise StartupError(str(error)) from None
    except (OSError, sqlite3.Error, RuntimeError, StoreUnreachableError) as error:
        raise StartupError(f"cannot open the store {redact_url(settings.store_url)}: {error}") from None
    await store.close()
    try:
        router = provider_router(settings)
    except OSError as error:
        name = getattr(error, "filename", None) or ""
        raise StartupError(f"cannot read {name}: {error.strerror or error} (check scripted.scripts_file)") from None
    except ValueError as error:
        raise StartupError(str(error)) from None
    await router.aclose()


def listen_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def routes_summary(settings: Settings) -> list[str]:
    """The routing table as lines a person reads: ``pattern -> provider (then fallbacks)``, then the default."""
    lines = []
    for route in settings.routes:
        line = f"{route.model} -> {route.provider}"
        if route.fallbacks:
            line += f" (then {', '.join(route.fallbacks)})"
        lines.append(line)
    unrouted = unrouted_provider(settings)
    lines.append(f"* -> {unrouted}" if unrouted else "anything else -> 400 model_not_found")
    return lines


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# libpq and redis-py also read a password from the query string (postgresql://host/db?password=...).
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL without its password (store URLs may carry one, in the user part or the query)."""
    return _QUERY_PASSWORD.sub(r"\1***", re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url))
