"""Server-Sent Events framing (sans-I/O).

:func:`encode_event` and :func:`encode_done` write the frames tether sends; :class:`SSEDecoder` reads the frames an
upstream sends, following the WHATWG ``EventSource`` parsing rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).

Lines end at CRLF, LF or CR and nowhere else: JSON payloads may carry U+2028, U+2029 or U+0085 unescaped, and a
``str.splitlines()``-based reader would cut them in half. The decoder splits lines on bytes, before decoding: CR
and LF are ASCII, so they never occur inside a multibyte UTF-8 sequence, a character cut across two chunks stays in
the buffered partial line until its line is complete, and the line-length bound counts real bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from tether.types import JSON

__all__ = ["SSEDecodeError", "SSEDecoder", "ServerSentEvent", "encode_done", "encode_event"]

DEFAULT_MAX_LINE_SIZE = 16 * 1024 * 1024

_LINE_END = re.compile(rb"\r\n|\r|\n")
_CR = 0x0D
_LF = 0x0A
_BOM = "\ufeff"
_DONE = b"data: [DONE]\n\n"
_MAX_RETRY_DIGITS = 18


def encode_event(event: Mapping[str, object]) -> bytes:
    """Frame one event as ``event: <type>`` plus ``data: <json>``.

    Args:
        event: a JSON object with a string ``type``.

    Returns:
        The frame, ending with the blank line that dispatches it.

    Raises:
        ValueError: if ``type`` is missing, empty, not a string, or contains CR or LF (it would break the framing).
    """
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type or "\r" in event_type or "\n" in event_type:
        raise ValueError(f"an SSE event needs a non-empty single-line string 'type', got {event_type!r}")
    # orjson escapes every control character, so the JSON is one line.
    return b"event: " + event_type.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def encode_done() -> bytes:
    """The terminal ``data: [DONE]`` frame of an Open Responses stream."""
    return _DONE


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: the ``event`` field; ``None`` when absent or empty, which means ``"message"``.
        data: the ``data`` lines joined with ``"\\n"``.
        id: the last event ID of the stream at dispatch (it persists across events); ``None`` if never set.
        retry: the ``retry`` value given in this event's block, if any.
    """

    event: str | None = None
    data: str = ""
    id: str | None = None
    retry: int | None = None

    @property
    def is_done(self) -> bool:
        """Whether this is the ``data: [DONE]`` terminator."""
        return self.data == "[DONE]"

    def json(self) -> JSON:
        """Parse ``data`` as JSON.

        Raises:
            orjson.JSONDecodeError: if ``data`` is not JSON (a ``ValueError``).
        """
        return orjson.loads(self.data)


class SSEDecodeError(ValueError):
    """The byte stream cannot be decoded as Server-Sent Events (a line longer than the decoder allows)."""


class SSEDecoder:
    """Incremental Server-Sent Events decoder: feed bytes as they arrive, get the events they complete.

    The same events come out however the input is chunked. At the end of the stream call :meth:`flush`: as the
    specification requires, an event whose blank line never arrived is discarded, not dispatched (check
    :attr:`incomplete` first to tell a truncated stream from a clean end).

    Args:
        max_line_size: the longest line accepted, in bytes, without its line ending.

    Raises:
        ValueError: if ``max_line_size`` is not positive.
    """

    def __init__(self, max_line_size: int = DEFAULT_MAX_LINE_SIZE) -> None:
        if max_line_size <= 0:
            raise ValueError(f"max_line_size must be positive, got {max_line_size}")
        self.max_line_size = max_line_size
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._line = bytearray()
        self._skip_lf = False
        self._at_stream_start = True
        self._event_type = ""
        self._data: list[str] = []
        self._event_retry: int | None = None

    @property
    def incomplete(self) -> bool:
        """Whether :meth:`flush` would discard a partial line or an event still waiting for its blank line."""
        return bool(self._line) or bool(self._data)

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume the next bytes of the stream.

        Returns:
            The events completed by this chunk, in order.

        Raises:
            SSEDecodeError: if a line exceeds ``max_line_size``. The decoder must not be used afterwards.
        """
        events: list[ServerSentEvent] = []
        start = 0
        if self._skip_lf and chunk:
            # A CR ended the previous chunk: an LF opening this one is the rest of that CRLF.
            self._skip_lf = False
            if chunk[0] == _LF:
                start = 1
        for match in _LINE_END.finditer(chunk, start):
            end = match.start()
            self._check_size(len(self._line) + end - start)
            if self._line:
                self._line += chunk[start:end]
                line = bytes(self._line)
                self._line.clear()
            else:
                line = chunk[start:end]
            event = self._process_line(line)
            if event is not None:
                events.append(event)
            start = match.end()
        if start < len(chunk):
            self._check_size(len(self._line) + len(chunk) - start)
            self._line += chunk[start:]
        elif chunk and chunk[-1] == _CR:
            self._skip_lf = True
        return events

    def flush(self) -> list[ServerSentEvent]:
        """End the stream: discard any partial line and undispatched event, and get ready for a new stream.

        ``last_event_id`` and ``retry`` survive, since a client reconnecting needs them.

        Returns:
            Always an empty list: the specification never dispatches an event the stream did not finish.
        """
        self._line.clear()
        self._skip_lf = False
        self._at_stream_start = True
        self._reset_event()
        return []

    def _check_size(self, size: int) -> None:
        if size > self.max_line_size:
            raise SSEDecodeError(f"SSE line of more than {self.max_line_size} bytes")

    def _process_line(self, raw: bytes) -> ServerSentEvent | None:
        line = raw.decode("utf-8", "replace")
        if self._at_stream_start:
            self._at_stream_start = False
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event_type = value
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            digits = value.lstrip("0") or "0"
            # Longer values are absurd as milliseconds, and int() refuses more than 4,300 digits anyway.
            if len(digits) <= _MAX_RETRY_DIGITS:
                self.retry = self._event_retry = int(digits)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event = None
        if self._data:
            event = ServerSentEvent(
                event=self._event_type or None,
                data="\n".join(self._data),
                id=self.last_event_id,
                retry=self._event_retry,
            )
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._event_type = ""
        self._data = []
        self._event_retry = None
