"""The nesting limit on JSON that clients send.

orjson reads 1,023 levels but writes at most 254, and tether writes what it reads (into events, the store and
upstream requests), usually a few levels deeper than it came. A value nested deeper than :data:`MAX_JSON_DEPTH`
is refused where it is parsed, so it can never fail later, half-way through a turn.
"""

from __future__ import annotations

import orjson

MAX_JSON_DEPTH = 128
# orjson's writer refuses the 255th level of containers.
_ORJSON_WRITE_LIMIT = 254


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests more than ``limit`` levels of arrays and objects (the value itself is level 1).

    The check is orjson's own writer, run on the value wrapped in ``254 - limit`` more levels: it fails exactly when
    the value is deeper than ``limit``, at C speed, where walking a large body in Python would stall the loop.
    """
    wrapped = value
    for _ in range(_ORJSON_WRITE_LIMIT - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return True
    return False
