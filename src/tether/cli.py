"""The ``tether`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
import uvicorn

from tether.server.runner import uvicorn_config
from tether.settings import Settings


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if settings.log_format == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def serve(settings: Settings) -> None:
    configure_logging(settings)
    uvicorn.Server(uvicorn_config(settings)).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tether", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gateway (embedded defaults: SQLite, scripted model)")
    serve_cmd.add_argument("--config", type=Path, help="TOML config file")
    serve_cmd.add_argument("--host")
    serve_cmd.add_argument("--port", type=int)
    serve_cmd.add_argument("--store-url", help="sqlite:///PATH or memory://")
    commands.add_parser("bench", help="the benchmark (tether bench --help)", add_help=False)
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:
        from tether.bench.cli import main as bench_main  # the benchmark's dependencies load only when asked for

        return bench_main(arguments[1:])
    args = parser.parse_args(arguments)
    if args.command == "serve":
        settings = Settings.load(args.config)
        overrides = {
            key: value
            for key, value in (("host", args.host), ("port", args.port), ("store_url", args.store_url))
            if value is not None
        }
        serve(settings.model_copy(update=overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
