"""The small vocabulary shared by the emulator's modules."""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    """A direction of a TCP connection through the emulator."""

    UP = "up"
    """Client → server."""
    DOWN = "down"
    """Server → client."""


class FaultMode(StrEnum):
    """How a connection is cut."""

    RST = "rst"
    """Both sides receive a TCP reset (the sockets are closed with ``SO_LINGER`` 0)."""
    BLACKHOLE = "blackhole"
    """Nothing more is delivered either way; sockets stay open, as when a route or a NAT mapping vanishes."""
    HALF_CLOSE = "half_close"
    """The client reads EOF and whatever it writes is dropped; the server sees the connection close."""
