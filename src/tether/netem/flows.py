"""The TCP connections crossing the packet emulator, tracked well enough to reset them (sans-I/O).

When a ``reset`` outage starts (a NAT or a radio bearer lost its state), every live connection is reset at both
ends, as the proxy tier does. A forged RST is only accepted when its sequence number is exactly the receiver's
next expected one (RFC 5961), so the table keeps, per connection, the last acknowledgement each side sent (that
side's next expected number) and the next sequence number each side would send; a reset is sent with each.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.netem.ipv4 import ACK, RST, SYN, Segment, reset
from tether.netem.types import Direction

FlowKey = tuple[bytes, int, bytes, int]
"""Client address, client port, server address, server port."""


@dataclass(slots=True)
class _Flow:
    client_ack: int | None = None
    client_next: int | None = None
    server_ack: int | None = None
    server_next: int | None = None


class FlowTable:
    """Live TCP connections, fed every segment that crosses the link, in either direction."""

    def __init__(self) -> None:
        self._flows: dict[FlowKey, _Flow] = {}
        self.connections_opened = 0
        """Connections the client opened (SYNs without ACK, each client port counted once)."""
        self._syn_ports: set[tuple[bytes, int]] = set()

    def __len__(self) -> int:
        return len(self._flows)

    def observe(self, direction: Direction, segment: Segment) -> None:
        """Record ``segment``, read from the client (``UP``) or from the server (``DOWN``)."""
        if direction is Direction.UP:
            key = (segment.src, segment.sport, segment.dst, segment.dport)
        else:
            key = (segment.dst, segment.dport, segment.src, segment.sport)
        if segment.flags & RST:
            self._flows.pop(key, None)
            return
        opening = direction is Direction.UP and segment.flags & SYN and not segment.flags & ACK
        if opening and (segment.src, segment.sport) not in self._syn_ports:
            self._syn_ports.add((segment.src, segment.sport))
            self.connections_opened += 1
        flow = self._flows.setdefault(key, _Flow())
        ack = segment.ack if segment.flags & ACK else None
        if direction is Direction.UP:
            flow.client_next = segment.seq_end
            flow.client_ack = ack if ack is not None else flow.client_ack
        else:
            flow.server_next = segment.seq_end
            flow.server_ack = ack if ack is not None else flow.server_ack

    def resets(self) -> list[tuple[Direction, bytes]]:
        """RST packets that reset every live connection at both ends, and forget them.

        ``UP`` packets go to the server (they appear to come from the client), ``DOWN`` packets to the client.
        """
        packets: list[tuple[Direction, bytes]] = []
        for (client, cport, server, sport), flow in self._flows.items():
            for seq in _distinct(flow.server_ack, flow.client_next):
                packets.append((Direction.UP, reset(client, server, cport, sport, seq)))
            for seq in _distinct(flow.client_ack, flow.server_next):
                packets.append((Direction.DOWN, reset(server, client, sport, cport, seq)))
        self._flows.clear()
        return packets


def _distinct(*values: int | None) -> list[int]:
    return list(dict.fromkeys(value for value in values if value is not None))
