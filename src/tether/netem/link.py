"""The packet-level link model, without I/O: what happens to each IP packet of one direction.

The emulator process (``tether.netem.router``) moves the packets; this module only decides. ``LinkDirection.admit``
takes a packet's size and arrival time and returns when it leaves the far end of the link, or why it never does.
Time is whatever clock the caller passes (``time.monotonic()`` in the emulator, plain numbers in tests).

A packet waits for the link to be free (drop-tail beyond ``queue_limit_s`` of queueing), occupies it for
``size * 8 / rate`` seconds, and arrives one propagation delay (plus jitter, plus the burst's extra delay) after it
left, never before the packet in front of it. It is lost with probability ``loss`` (``burst_loss`` during a loss
burst), and every packet that would leave during an outage is lost. Nothing is retransmitted here: the TCP stacks
at both ends see the loss and recover by themselves, with their own timers and congestion control.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from tether.netem.profiles import NetworkProfile
from tether.netem.shaping import OutageClock

DEFAULT_QUEUE_LIMIT_S = 1.0
"""Queueing a direction allows before it drops arriving packets: a bloated but bounded modem buffer."""


class Drop(StrEnum):
    """Why a packet never arrived."""

    LOSS = "loss"
    """Random loss (``loss``, or ``burst_loss`` during a burst)."""
    OUTAGE = "outage"
    """The link was dark when the packet would have left."""
    QUEUE = "queue"
    """The queue in front of the link was full (more than ``queue_limit_s`` of waiting)."""


@dataclass(slots=True)
class DirectionCounters:
    """Packets and bytes of one direction, as the link saw them.

    Attributes:
        packets: IP packets offered to the link (sent by the sender, retransmissions included).
        bytes: IP bytes offered (headers included).
        delivered_packets: Packets that reached the far end.
        delivered_bytes: IP bytes that reached the far end.
        dropped: Packets lost, per reason.
    """

    packets: int = 0
    bytes: int = 0
    delivered_packets: int = 0
    delivered_bytes: int = 0
    dropped: dict[Drop, int] = field(default_factory=lambda: dict.fromkeys(Drop, 0))

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "delivered_packets": self.delivered_packets,
            "delivered_bytes": self.delivered_bytes,
            "dropped": {str(reason): count for reason, count in self.dropped.items()},
        }


@dataclass(slots=True)
class LinkDirection:
    """Rate, delay, jitter, loss, loss bursts and outages for the packets of one direction.

    Args:
        rate_bps: Link rate in bits per second (IP bytes); ``None`` for unlimited.
        delay_s: One-way propagation delay.
        jitter_s: Upper bound of the uniform extra delay of each packet.
        loss: Probability that a packet is lost outside bursts.
        rng: Random source of loss and jitter.
        outages: Dark windows (every packet that would leave in one is lost), or ``None``.
        bursts: Loss-burst windows, or ``None``.
        burst_loss: Loss probability inside a burst.
        burst_delay_s: Extra one-way delay inside a burst.
        queue_limit_s: Longest wait in front of the link before arriving packets are dropped.
    """

    rate_bps: float | None
    delay_s: float
    jitter_s: float
    loss: float
    rng: random.Random
    outages: OutageClock | None = None
    bursts: OutageClock | None = None
    burst_loss: float = 0.0
    burst_delay_s: float = 0.0
    queue_limit_s: float = DEFAULT_QUEUE_LIMIT_S
    counters: DirectionCounters = field(default_factory=DirectionCounters)
    _link_free_at: float = field(default=float("-inf"), init=False, repr=False)
    _last_arrival: float = field(default=float("-inf"), init=False, repr=False)

    @classmethod
    def for_profile(
        cls, profile: NetworkProfile, rate_bps: float | None, rng: random.Random, origin: float
    ) -> LinkDirection:
        """One direction of ``profile`` (``rate_bps``: its ``up_bps`` or ``down_bps``), clocks from ``origin``."""
        outages = bursts = None
        if profile.outage_every_s is not None:
            outages = OutageClock(profile.outage_every_s, profile.outage_s, origin)
        if profile.burst_every_s is not None:
            bursts = OutageClock(profile.burst_every_s, profile.burst_s, origin)
        return cls(
            rate_bps=rate_bps,
            delay_s=profile.one_way_delay_s,
            jitter_s=profile.jitter_s,
            loss=profile.loss,
            rng=rng,
            outages=outages,
            bursts=bursts,
            burst_loss=profile.burst_loss,
            burst_delay_s=profile.burst_delay_s,
        )

    def admit(self, size: int, now: float) -> float | Drop:
        """When a packet of ``size`` IP bytes, arriving at ``now``, reaches the far end; or why it never does."""
        self.counters.packets += 1
        self.counters.bytes += size
        verdict = self._verdict(size, now)
        if isinstance(verdict, Drop):
            self.counters.dropped[verdict] += 1
        else:
            self.counters.delivered_packets += 1
            self.counters.delivered_bytes += size
        return verdict

    def _verdict(self, size: int, now: float) -> float | Drop:
        start = max(now, self._link_free_at)
        if start - now > self.queue_limit_s:
            return Drop.QUEUE
        done = start if self.rate_bps is None else start + size * 8 / self.rate_bps
        self._link_free_at = done
        if self.outages is not None and self.outages.covers(done):
            return Drop.OUTAGE
        in_burst = self.bursts is not None and self.bursts.covers(done)
        loss = self.burst_loss if in_burst else self.loss
        # Both draws happen for every packet, so that loss decisions do not shift when jitter is switched on.
        lost = self.rng.random() < loss
        jitter = self.rng.uniform(0.0, self.jitter_s)
        if lost:
            return Drop.LOSS
        arrival = done + self.delay_s + jitter + (self.burst_delay_s if in_burst else 0.0)
        arrival = max(arrival, self._last_arrival)
        self._last_arrival = arrival
        return arrival
