"""Log output for operators: JSON lines when stderr is not a terminal, colours only on a terminal.

structlog renders tether's own events; the standard library's records (uvicorn, websockets, httpx) go through the
same renderer, so a log file holds one format, one event per line, and no ANSI codes.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog

LogFormat = Literal["auto", "console", "json"]


def wants_json(log_format: LogFormat, stream: TextIO) -> bool:
    """``json`` and ``console`` are what they say; ``auto`` is JSON unless ``stream`` is a terminal."""
    if log_format == "auto":
        return not _is_tty(stream)
    return log_format == "json"


def configure_logging(level: str, log_format: LogFormat, stream: TextIO) -> None:
    """Configure structlog and the standard library's root logger to write to ``stream``."""
    numeric = getattr(logging, level.upper())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        clip_long_values,
    ]
    renderer: structlog.typing.Processor
    if wants_json(log_format, stream):
        # A traceback becomes one string field, so a record stays one line.
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(stream))
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)


MAX_VALUE_CHARS = 1024
"""A log field's string past this many characters is cut: a client can put a megabyte in a model name or a path."""

UNCLIPPED = frozenset({"exception", "stack"})


def clip_long_values(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Cut each top-level string field past :data:`MAX_VALUE_CHARS`, saying how long it was (a 1 MB model name made
    a 1 MB log line per request). Tracebacks stay whole, and so does content an operator opted into (a list)."""
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS and key not in UNCLIPPED:
            event[key] = f"{value[:MAX_VALUE_CHARS]}... ({len(value):,} characters)"
    return event


def _dumps(value: object, **_: object) -> str:
    """One record as JSON with orjson: 0.6x the cost of the standard library's encoder for a turn's line."""
    return orjson.dumps(value, default=str).decode()


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
