"""uvicorn's own log lines, as tether's structured logs: a client's mistake is one warning line, never a traceback.

uvicorn logs some client mistakes with a traceback (an invalid UTF-8 text frame goes through ``logger.exception``)
and others as bare sentences. This handler sends each of uvicorn's records through structlog as an event with the
sentence as ``problem``; only a server fault (an ERROR that is not a known client mistake) keeps its traceback.
"""

from __future__ import annotations

import logging

import structlog

# uvicorn's sentences for what a client did wrong; the connection is answered or closed, and the server is fine.
CLIENT_MISTAKES = frozenset(
    {
        "Invalid HTTP request received.",
        "Invalid UTF-8 sequence received from client.",
        "Unsupported upgrade request.",
        "Invalid WebSocket upgrade request.",
    }
)
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


class UvicornLogHandler(logging.Handler):
    """Re-emits uvicorn's records through structlog (installed by :func:`route_uvicorn_logs`)."""

    def __init__(self) -> None:
        super().__init__()
        self._log = structlog.get_logger("tether.uvicorn")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        details = {"problem": message} if error is None else {"problem": message, "error": _described(error)}
        if message in CLIENT_MISTAKES:
            self._log.warning("http.client_mistake", **details)
        elif record.levelno >= logging.ERROR:
            self._log.error("server.uvicorn_error", **details, exc_info=record.exc_info)
        elif record.levelno >= logging.WARNING:
            self._log.warning("server.uvicorn_warning", **details)
        else:
            self._log.debug("server.uvicorn", **details)


def _described(error: BaseException) -> str:
    """The error without the bytes it carries: a UnicodeError's repr holds the whole frame, a client's payload."""
    if isinstance(error, UnicodeError) and hasattr(error, "reason") and hasattr(error, "start"):
        return f"{type(error).__name__}: {error.reason} at position {error.start}"
    return repr(error)


def route_uvicorn_logs(level: int) -> None:
    """Send uvicorn's loggers through :class:`UvicornLogHandler` only (no second copy through the root logger)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [UvicornLogHandler()]
        logger.setLevel(level)
        logger.propagate = False
