"""The link model, without I/O: when each byte of a stream may be delivered.

``DirectionShaper`` turns the bytes read from one side of a connection into ``Piece`` objects, each with the time
at which it may be written to the other side. It never sleeps and never touches a socket; the proxy does both. Time
is whatever clock the caller passes (the event loop's, or a number in a test).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

MSS = 1460
"""Payload bytes per packet: an Ethernet MTU of 1500 less 20 bytes of IPv4 and 20 of TCP header."""

HEADER_BYTES = 52
"""IPv4 (20) + TCP (20) + timestamps option (12): what each packet adds on the wire."""


@dataclass(frozen=True, slots=True)
class OutageClock:
    """Periodic outages: up for ``every_s - dark_s`` seconds, then dark for ``dark_s``, from ``origin``.

    Args:
        every_s: Period of the outages.
        dark_s: Length of each outage.
        origin: Clock time at which the first period starts.
    """

    every_s: float
    dark_s: float
    origin: float

    def covers(self, t: float) -> bool:
        """Whether ``t`` falls inside a dark window."""
        return t >= self.origin and (t - self.origin) % self.every_s >= self.every_s - self.dark_s

    def defer(self, t: float) -> float:
        """``t`` itself if the link is up then, otherwise the end of the outage that covers ``t``."""
        if t < self.origin:
            return t
        phase = (t - self.origin) % self.every_s
        if phase >= self.every_s - self.dark_s:
            return t + (self.every_s - phase)
        return t

    def next_outage(self, t: float) -> float:
        """Clock time at which the first outage that starts after ``t`` begins."""
        first = self.origin + self.every_s - self.dark_s
        if t < first:
            return first
        periods = int((t - first) // self.every_s) + 1
        return first + periods * self.every_s


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of a stream (never more than one packet's payload) and when it may be delivered.

    Attributes:
        data: The bytes.
        release_at: Clock time at which the bytes reach the far side.
        new_packet: Whether the piece starts a packet (``False`` for the rest of a packet split across reads).
        stalled: Whether the packet was "lost" and waited one RTO.
    """

    data: bytes
    release_at: float
    new_packet: bool
    stalled: bool = False


@dataclass(slots=True)
class DirectionShaper:
    """Serialisation, propagation, jitter, loss stalls and outages for one direction of one connection.

    A piece leaves when the link is free (``max(now, link_free_at)``, later if the link is dark), occupies the link
    for ``wire bytes / rate``, and arrives one propagation delay (plus jitter) after it left, never before the piece
    in front of it. A lost packet is not dropped: it leaves one RTO later and everything behind it waits, which is
    what a TCP receiver sees. Loss decisions are drawn once per packet, in stream order, from ``loss_rng``, so the
    same seed gives the same decisions however the stream is chunked by reads.

    Args:
        rate_bps: Link rate in bits per second; ``None`` for unlimited.
        delay_s: One-way propagation delay.
        loss: Probability that a packet needs a retransmission.
        rto_s: The stall of a lost packet.
        jitter_s: Upper bound of the uniform extra delay of each piece.
        loss_rng: Random source of loss decisions.
        jitter_rng: Random source of jitter, kept apart so jitter never shifts the loss decisions.
        outages: Periodic outages, or ``None``.
        link_free_at: Clock time before which nothing leaves (the TCP handshake for the first bytes).
    """

    rate_bps: float | None
    delay_s: float
    loss: float
    rto_s: float
    jitter_s: float
    loss_rng: random.Random
    jitter_rng: random.Random
    outages: OutageClock | None = None
    link_free_at: float = 0.0
    stream_offset: int = 0
    packets: int = 0
    stalled_packets: list[int] = field(default_factory=list)
    _last_arrival: float = field(default=0.0, init=False, repr=False)

    def shape(self, data: bytes, now: float) -> list[Piece]:
        """The pieces of ``data``, just read at clock time ``now``, with their delivery times."""
        return [self._shape_piece(chunk, new_packet, now) for chunk, new_packet in self._split(data)]

    def _split(self, data: bytes) -> Iterator[tuple[bytes, bool]]:
        position = 0
        while position < len(data):
            offset = self.stream_offset + position
            size = min(MSS - offset % MSS, len(data) - position)
            yield data[position : position + size], offset % MSS == 0
            position += size
        self.stream_offset += len(data)

    def _shape_piece(self, chunk: bytes, new_packet: bool, now: float) -> Piece:
        start = self._defer(max(now, self.link_free_at))
        stalled = False
        wire_bytes = len(chunk)
        if new_packet:
            wire_bytes += HEADER_BYTES
            if self.loss > 0 and self.loss_rng.random() < self.loss:
                stalled = True
                self.stalled_packets.append(self.packets)
                start = self._defer(start + self.rto_s)
            self.packets += 1
        done = start if self.rate_bps is None else start + wire_bytes * 8 / self.rate_bps
        self.link_free_at = done
        jitter = self.jitter_rng.uniform(0.0, self.jitter_s) if self.jitter_s > 0 else 0.0
        arrival = max(self._defer(done + self.delay_s + jitter), self._last_arrival)
        self._last_arrival = arrival
        return Piece(chunk, arrival, new_packet, stalled)

    def _defer(self, t: float) -> float:
        return t if self.outages is None else self.outages.defer(t)
