"""IPv4/TCP parsing, forged resets, and the connection table that aims them."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from tether.netem.flows import FlowTable
from tether.netem.ipv4 import ACK, RST, SYN, checksum, parse_tcp, reset
from tether.netem.types import Direction

CLIENT, SERVER = bytes([10, 78, 0, 1]), bytes([10, 78, 0, 2])


def segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst) + tcp


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=100))
def test_segments_parse_back(seq: int, ack: int, payload: bytes) -> None:
    parsed = parse_tcp(segment(CLIENT, SERVER, 40000, 8000, seq, ack, ACK, payload))
    assert parsed is not None
    assert (parsed.sport, parsed.dport, parsed.seq, parsed.ack, parsed.payload) == (40000, 8000, seq, ack, len(payload))
    assert parsed.seq_end == (seq + len(payload)) % 2**32


@given(st.binary(max_size=60))
def test_garbage_is_not_a_segment_and_does_not_raise(data: bytes) -> None:
    parsed = parse_tcp(data)
    assert parsed is None or parsed.payload >= 0


def test_a_forged_reset_has_valid_checksums() -> None:
    packet = reset(CLIENT, SERVER, 40000, 8000, 12345)
    assert checksum(packet[:20]) == 0, "IPv4 header checksum"
    pseudo = CLIENT + SERVER + struct.pack("!BBH", 0, 6, len(packet) - 20)
    assert checksum(pseudo + packet[20:]) == 0, "TCP checksum"
    parsed = parse_tcp(packet)
    assert parsed is not None
    assert (parsed.seq, parsed.flags) == (12345, RST)


def test_resets_aim_at_what_each_side_expects_next() -> None:
    table = FlowTable()
    table.observe(Direction.UP, parse_or_fail(segment(CLIENT, SERVER, 40000, 8000, 100, 0, SYN, b"")))
    table.observe(Direction.DOWN, parse_or_fail(segment(SERVER, CLIENT, 8000, 40000, 900, 101, SYN | ACK, b"")))
    table.observe(Direction.UP, parse_or_fail(segment(CLIENT, SERVER, 40000, 8000, 101, 901, ACK, b"hello")))
    assert table.connections_opened == 1
    packets = table.resets()
    to_server = sorted(parse_or_fail(p).seq for d, p in packets if d is Direction.UP)
    to_client = sorted(parse_or_fail(p).seq for d, p in packets if d is Direction.DOWN)
    assert to_server == [101, 106], "the server's last ack, and the client's next byte"
    assert to_client == [901], "the client's last ack is also the server's next byte"
    assert len(table) == 0
    assert table.resets() == []


def test_a_reset_connection_is_forgotten() -> None:
    table = FlowTable()
    table.observe(Direction.UP, parse_or_fail(segment(CLIENT, SERVER, 40000, 8000, 1, 1, ACK, b"x")))
    table.observe(Direction.DOWN, parse_or_fail(segment(SERVER, CLIENT, 8000, 40000, 1, 2, RST, b"")))
    assert table.resets() == []


def parse_or_fail(packet: bytes):  # type: ignore[no-untyped-def]
    parsed = parse_tcp(packet)
    assert parsed is not None
    return parsed
