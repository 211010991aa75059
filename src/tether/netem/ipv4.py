"""The little of IPv4 and TCP the packet emulator reads and writes: header fields, and forged resets.

Sans-I/O: bytes in, values out. Packets that are not IPv4, or are too short to hold what they claim, parse as
``None`` and are forwarded untouched (the emulator shapes them but never looks inside).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TCP = 6
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


@dataclass(frozen=True, slots=True)
class Segment:
    """A TCP segment's addressing and sequence fields.

    Attributes:
        src, dst: IPv4 addresses (4 bytes each).
        sport, dport: Ports.
        seq, ack: Sequence and acknowledgement numbers.
        flags: TCP flags (``FIN``, ``SYN``, ``RST``, ``ACK``, ...).
        payload: Payload bytes carried.
    """

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: int

    @property
    def seq_end(self) -> int:
        """The sequence number that follows this segment (SYN and FIN count as one)."""
        return (self.seq + self.payload + bool(self.flags & SYN) + bool(self.flags & FIN)) % (1 << 32)


def parse_tcp(packet: bytes) -> Segment | None:
    """The TCP segment in an IPv4 ``packet``, or ``None`` if it is not one (or is malformed)."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != TCP:
        return None
    header = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if header < 20 or total > len(packet) or total < header + 20:
        return None
    sport, dport, seq, ack, offset, flags = struct.unpack_from("!HHIIBB", packet, header)
    tcp_header = (offset >> 4) * 4
    if tcp_header < 20 or header + tcp_header > total:
        return None
    return Segment(packet[12:16], packet[16:20], sport, dport, seq, ack, flags, total - header - tcp_header)


def reset(src: bytes, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
    """An IPv4 packet holding a TCP RST from ``src:sport`` to ``dst:dport`` with sequence number ``seq``."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, RST, 0, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
