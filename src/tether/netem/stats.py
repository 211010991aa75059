"""Counters of what went through the emulator, per connection and per proxy."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from tether.netem.shaping import HEADER_BYTES
from tether.netem.types import Direction, FaultMode


@dataclass(slots=True)
class DirectionStats:
    """Traffic of one direction.

    Attributes:
        bytes: TCP payload bytes forwarded (HTTP, SSE and WebSocket framing included).
        packets: Packets those bytes were counted as (one per started ``MSS``).
        dropped: Bytes read but never delivered (blackhole, half-close, or in flight at a cut).
        loss_stalls: Packets that waited one RTO for a simulated retransmission.
    """

    bytes: int = 0
    packets: int = 0
    dropped: int = 0
    loss_stalls: int = 0

    @property
    def wire_bytes(self) -> int:
        """Estimated IP bytes: payload plus headers of the data packets (pure ACKs and handshakes not counted)."""
        return self.bytes + self.packets * HEADER_BYTES


@dataclass(slots=True)
class ConnectionStats:
    """One proxied connection.

    Attributes:
        id: Sequence number of the connection in its proxy, from 0.
        up: Client → server traffic.
        down: Server → client traffic.
        opened_at: Event-loop time of the accept.
        closed_at: Event-loop time at which both sockets were closed, or ``None`` while open.
        fault: How the connection was cut, if it was.
        stalled_packets: Per direction, the indices of the packets that took a loss stall.
    """

    id: int
    opened_at: float
    up: DirectionStats = field(default_factory=DirectionStats)
    down: DirectionStats = field(default_factory=DirectionStats)
    closed_at: float | None = None
    fault: FaultMode | None = None
    stalled_packets: dict[Direction, list[int]] = field(default_factory=dict)

    def direction(self, direction: Direction) -> DirectionStats:
        """The counters of ``direction``."""
        return self.up if direction is Direction.UP else self.down

    @property
    def bytes_up(self) -> int:
        """Client → server bytes forwarded."""
        return self.up.bytes

    @property
    def bytes_down(self) -> int:
        """Server → client bytes forwarded."""
        return self.down.bytes


@dataclass(slots=True)
class ProxyStats:
    """Totals over every connection a proxy has handled.

    Attributes:
        up: Client → server traffic.
        down: Server → client traffic.
        connections_opened: Connections accepted.
        connections_closed: Connections whose sockets are both closed.
        resets_injected: Connections reset by a fault or by a ``reset`` outage.
        blackholes_injected: Connections blackholed (accepted while blackholed included).
        half_closes_injected: Connections half-closed.
    """

    up: DirectionStats = field(default_factory=DirectionStats)
    down: DirectionStats = field(default_factory=DirectionStats)
    connections_opened: int = 0
    connections_closed: int = 0
    resets_injected: int = 0
    blackholes_injected: int = 0
    half_closes_injected: int = 0

    def direction(self, direction: Direction) -> DirectionStats:
        """The counters of ``direction``."""
        return self.up if direction is Direction.UP else self.down

    def count_fault(self, mode: FaultMode) -> None:
        """Count one connection cut with ``mode``."""
        if mode is FaultMode.RST:
            self.resets_injected += 1
        elif mode is FaultMode.BLACKHOLE:
            self.blackholes_injected += 1
        else:
            self.half_closes_injected += 1

    @property
    def bytes_up(self) -> int:
        """Client → server bytes forwarded."""
        return self.up.bytes

    @property
    def bytes_down(self) -> int:
        """Server → client bytes forwarded."""
        return self.down.bytes

    def snapshot(self) -> ProxyStats:
        """An independent copy, for reading from another thread or comparing before and after."""
        return copy.deepcopy(self)
