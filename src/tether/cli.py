"""The ``tether`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import structlog
import uvicorn

from tether import __version__
from tether.server import logs
from tether.server.runner import uvicorn_config
from tether.server.startup import (
    StartupError,
    bind_socket,
    is_loopback,
    listen_url,
    preflight,
    redact_url,
    routes_summary,
)
from tether.server.uvicorn_logs import route_uvicorn_logs
from tether.settings import Settings
from tether.settings_file import ConfigError, load_settings, unknown_env_warnings
from tether.store.sqlite_check import StoreUnusableError, inventory

_log = structlog.get_logger("tether.cli")


def configure_logging(settings: Settings) -> None:
    logs.configure_logging(settings.log_level, settings.log_format, sys.stderr)
    route_uvicorn_logs(getattr(logging, settings.log_level.upper()))


def serve(settings: Settings) -> None:
    """Run the gateway; every mistake found before it is ready is a :class:`StartupError`."""
    configure_logging(settings)
    for warning in unknown_env_warnings(os.environ):
        _log.warning("config.unknown_env", problem=warning)
    sock = bind_socket(settings.host, settings.port)
    try:
        asyncio.run(preflight(settings))
        _log.info(
            "server.listening",
            url=listen_url(sock),
            store=redact_url(settings.store_url),
            routes=routes_summary(settings),
            auth="api keys" if settings.api_keys else "open (no api_keys configured)",
        )
        if not settings.api_keys and not is_loopback(settings.host):
            _log.warning(
                "server.open_access",
                host=settings.host,
                problem="listening beyond this machine with no api_keys configured: anyone who can reach it can use it",
            )
        uvicorn.Server(uvicorn_config(settings)).run(sockets=[sock])
    finally:
        sock.close()


def check(store_url: str) -> int:
    """``tether check``: 0 if the database is whole, 1 if it is damaged (and what a recovery would lose)."""
    if not store_url.startswith("sqlite:///"):
        raise StartupError(f"tether check reads SQLite databases (sqlite:///PATH), not {redact_url(store_url)}")
    try:
        found = inventory(Path(store_url.removeprefix("sqlite:///")))
    except StoreUnusableError as error:
        raise StartupError(str(error)) from None
    print("\n".join(found.lines()))
    return 0 if found.ok else 1


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range: a port is 0-65535")
    return port


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line (``tether serve --help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="tether", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gateway (embedded defaults: SQLite, scripted model)")
    serve_cmd.add_argument("--config", type=Path, help="TOML config file")
    serve_cmd.add_argument("--host")
    serve_cmd.add_argument("--port", type=port_number)
    serve_cmd.add_argument(
        "--store-url",
        help="sqlite:///PATH, memory://, postgresql://HOST/DB[?schema=S] or redis://HOST:PORT/N[?prefix=P]",
    )
    check_cmd = commands.add_parser("check", help="verify a SQLite database and say what a damaged one would lose")
    check_cmd.add_argument("--config", type=Path, help="TOML config file (for its store_url)")
    check_cmd.add_argument("--store-url", help="sqlite:///PATH (default: the configured store)")
    edge_cmd = commands.add_parser("edge", help="the agent's side of the last mile (tether edge --help)")
    edge_cmd.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    edge_cmd.add_argument("--config", type=Path, help="TOML config file (its [edge] table)")
    edge_cmd.add_argument("--gateway", help="the gateway's base URL, e.g. https://gw.example/v1")
    edge_cmd.add_argument("--gateway-key", help="the gateway's API key (or TETHER_EDGE__GATEWAY_KEY)")
    edge_cmd.add_argument("--listen", help="HOST:PORT for agents (default 127.0.0.1:8787)")
    edge_cmd.add_argument("--journal", type=Path, help="the edge's journal file (default .tether/edge.db)")
    edge_cmd.add_argument("--offline-hold", type=float, help="seconds a request waits for a dead link")
    edge_cmd.add_argument(
        "--hold-answers",
        action="store_true",
        default=None,
        help="keep each answer until it is complete, so a turn interrupted mid-generation is retried unseen",
    )
    commands.add_parser("bench", help="the benchmark (tether bench --help)", add_help=False)
    commands.add_parser("audit", help="export and verify the audit log (tether audit --help)", add_help=False)
    commands.add_parser(
        "replay", help="a chain as a transcript or a stateless request (tether replay --help)", add_help=False
    )
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["audit"]:
        from tether.audit.command import main as audit_main

        return audit_main(arguments[1:])
    if arguments[:1] == ["replay"]:
        from tether.replay.command import main as replay_main

        return replay_main(arguments[1:])
    if arguments[:1] == ["bench"]:
        from tether.bench.cli import main as bench_main  # the benchmark's dependencies load only when asked for

        return bench_main(arguments[1:])
    args = parser.parse_args(arguments)
    try:
        if args.command == "serve":
            settings = load_settings(args.config, os.environ)
            overrides = {
                key: value
                for key, value in (("host", args.host), ("port", args.port), ("store_url", args.store_url))
                if value is not None
            }
            serve(settings.model_copy(update=overrides))
        elif args.command == "edge":
            return _edge(args)
        elif args.command == "check":
            settings = load_settings(args.config, os.environ)
            return check(args.store_url or settings.store_url)
    except (ConfigError, StartupError) as error:
        print(f"tether: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _edge(args: argparse.Namespace) -> int:
    from tether.edge.run import edge_config, edge_uvicorn_config  # the edge loads only when asked for

    settings = load_settings(args.config, os.environ)
    edge = settings.edge
    updates: dict[str, object] = {
        key: value
        for key, value in (
            ("gateway", args.gateway), ("gateway_key", args.gateway_key), ("journal", args.journal),
            ("offline_hold_s", args.offline_hold), ("hold_answers", args.hold_answers),
        )
        if value is not None
    }  # fmt: skip
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            print(f"tether edge: --listen must be HOST:PORT, got {args.listen!r}", file=sys.stderr)
            return 2
        updates.update(host=host, port=int(port))
    edge = edge.model_copy(update=updates)
    settings = settings.model_copy(update={"edge": edge})
    if args.action == "status":
        return _edge_status(edge.host, edge.port)
    try:
        config = edge_config(settings)
    except ValueError as error:
        print(f"tether edge: {error}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(edge.host, edge.port)
    except StartupError as error:
        print(f"tether edge: {str(error).replace('--port', '--listen').replace('--host', '--listen')}", file=sys.stderr)
        return 2
    configure_logging(settings)
    uvicorn.Server(edge_uvicorn_config(config, edge.host, edge.port, settings.log_level)).run(sockets=[sock])
    return 0


def _edge_status(host: str, port: int) -> int:
    import httpx2 as httpx

    try:
        reply = httpx.get(f"http://{host}:{port}/tether/edge/status", timeout=5)
    except httpx.HTTPError as error:
        print(f"tether edge status: no edge answers on {host}:{port} ({type(error).__name__})", file=sys.stderr)
        return 1
    for key, value in reply.json().items():
        print(f"{key:>15}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
