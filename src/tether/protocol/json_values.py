"""How many JSON values a request holds, counted without decoding it.

Decoding JSON costs per value far more than per byte: orjson reads 16 MiB of prose in one string in ~17 ms, but 16
MiB of tiny objects in ~0.5 s, one call that holds the GIL wherever it runs. So a request is limited in values as
well as in bytes, and a request over the limit must be refused without being decoded. A *value* is every object,
array, string, number, ``true``, ``false`` and ``null``, the outermost one included; an object's keys are not values.

Two counts, both at C speed over the raw text:

* :func:`values_upper_bound`: commas, ``{`` and ``[`` plus one (each value after a container's first child follows a
  comma; commas and brackets inside strings only add), and never more than half the length. About 15 ms for 16 MiB.
  Real requests carry most of their bytes in strings and stay far under the limit by this bound alone.
* :func:`survey`: the exact count of a valid JSON text, from its bytes outside strings, and the top-level string field
  a WebSocket event's lane (or an edge frame's turn) is read from. Up to ~0.35 s for 16 MiB of tiny strings (that
  many string objects are made and dropped again, 1 MiB at a time), so the server runs it in a worker process
  (:mod:`tether.server.value_counter`), which runs this file as a script: it imports nothing of tether, so the worker
  starts without the server's imports.

:func:`survey` assumes valid JSON: a text that is not gets a number that means nothing, but such a text is refused
either way (as ``invalid_json`` by the decode that follows a count within the limit).
"""

from __future__ import annotations

import re
import sys
from typing import BinaryIO

import orjson

# Escapes are blanked (at the same length, so offsets still match the raw text) before strings are found by their
# quotes: an escaped backslash first, so that the quote after ``\\`` still closes its string.
_BLANK = b"\x01\x01"
CHUNK_BYTES = 1024 * 1024
_WHITESPACE = b" \t\r\n"
# A body naming its key more often than this is read for its count only (the key's value is then not looked for).
MAX_KEY_CANDIDATES = 1024
# The longest string :func:`survey` hands back (a ``stream_id`` is at most 256 characters).
MAX_FOUND_CHARS = 256
WORKER_HEADER_BYTES = 8


def values_upper_bound(text: bytes | str) -> int:
    """A number never below the count of JSON values in ``text`` (valid JSON or not), in three passes at C speed."""
    if isinstance(text, str):
        marks = text.count(",") + text.count("{") + text.count("[")
    else:
        marks = text.count(b",") + text.count(b"{") + text.count(b"[")
    return min(marks + 1, (len(text) + 1) // 2)


def survey(raw: bytes, key: str = "stream_id", chunk_bytes: int = CHUNK_BYTES) -> tuple[int, str | None]:
    """The number of JSON values in ``raw`` (valid JSON), and the string ``raw``'s top-level object holds at ``key``.

    The string is the one a decode would find (the last occurrence of the key wins, as orjson's does), or ``None``
    when there is none, when the value is not a string or is longer than :data:`MAX_FOUND_CHARS`, or when ``key``
    occurs more than :data:`MAX_KEY_CANDIDATES` times. Strings are found ``chunk_bytes`` at a time, so that only
    that many bytes' worth of string objects exist at once.
    """
    text = raw.replace(b"\\\\", _BLANK).replace(b'\\"', _BLANK)
    marker = orjson.dumps(key)
    stops = _occurrences(text, marker)
    field = re.compile(re.escape(marker) + rb"[ \t\r\n]*:[ \t\r\n]*")
    pieces: list[bytes] = []
    inside, depth, start, found = False, 0, 0, None
    for stop in [*stops, len(text)]:
        for begin in range(start, stop, chunk_bytes):
            piece, inside = _outside_strings(text, begin, min(begin + chunk_bytes, stop), inside)
            pieces.append(piece)
            if stops:
                depth += piece.count(b"{") + piece.count(b"[") - piece.count(b"}") - piece.count(b"]")
        start = stop
        if stop < len(text) and not inside and depth == 1:
            member = field.match(text, stop)
            if member is not None:  # the key of a top-level member, not a string value that happens to match
                found = _string_at(raw, text, member.end())
    outside = b"".join(pieces)
    opened = outside.count(b"{") + outside.count(b"[")
    empty = outside.count(b"{}") + outside.count(b"[]")
    return 1 + outside.count(b",") + opened - empty, found


def _occurrences(text: bytes, marker: bytes) -> list[int]:
    found: list[int] = []
    at = text.find(marker)
    while at >= 0:
        if len(found) == MAX_KEY_CANDIDATES:
            return []
        found.append(at)
        at = text.find(marker, at + len(marker))
    return found


def _outside_strings(text: bytes, begin: int, end: int, inside: bool) -> tuple[bytes, bool]:
    """The bytes of ``text[begin:end]`` outside strings, each string that opens there as one ``s``, without
    whitespace; and whether the slice ends inside a string."""
    parts = text[begin:end].split(b'"')
    outside = parts[1::2] if inside else parts[0::2]
    ends_inside = (len(parts) - 1 + inside) % 2 == 1
    piece = b"s".join(outside) + (b"s" if ends_inside else b"")
    return piece.translate(None, _WHITESPACE), ends_inside


def _string_at(raw: bytes, text: bytes, at: int) -> str | None:
    if not text.startswith(b'"', at):
        return None
    close = text.find(b'"', at + 1)
    if close < 0 or close - at - 1 > 6 * MAX_FOUND_CHARS:  # an escape (\uXXXX) is at most six bytes a character
        return None
    try:
        value = orjson.loads(raw[at : close + 1])
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) and len(value) <= MAX_FOUND_CHARS else None


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """The worker's loop, until ``source`` ends. In: the limit, the key to find (its length, then its UTF-8), then
    the text in chunks, each after its length, then a length of 0 (every number in :data:`WORKER_HEADER_BYTES`
    bytes, big-endian). Out: one line, the count and the string found at the key (JSON). The count is exact when it
    is over the limit; within it, it may be the cheap bound (and no string is looked for).
    """
    while limit := _number(source):
        key = source.read(_number(source)).decode()
        chunks: list[bytes] = []
        while size := _number(source):
            chunks.append(source.read(size))
        raw = b"".join(chunks)
        bound = values_upper_bound(raw)
        values, found = (bound, None) if bound <= limit else survey(raw, key)
        sink.write(b"%d %s\n" % (values, orjson.dumps(found)))
        sink.flush()


def _number(source: BinaryIO) -> int:
    """The next number of the worker's input; 0 at its end."""
    return int.from_bytes(source.read(WORKER_HEADER_BYTES), "big")


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
