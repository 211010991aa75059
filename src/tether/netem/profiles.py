"""Network profiles: what a link does to a TCP byte stream, in numbers.

The named profiles, each with its sources, are in ``tether.netem.catalog``.

In the proxy tier, loss is applied per direction and per ~1460-byte packet, and modelled as TCP experiences it:
nothing is lost, the packet (and everything behind it) is delayed by a retransmission timeout, ``max(0.2, 2 * rtt)``
(Linux's minimum RTO is 200 ms). Treating every loss as an RTO is pessimistic for long bulk transfers, where fast
retransmit recovers in about one RTT, and right for the short request/response exchanges of an agent loop, where a
lost tail packet has no duplicate ACKs behind it. In the packet tier (``tether.netem.router``) packets are really
dropped, and the TCP stacks at both ends recover by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

OutageMode: TypeAlias = Literal["stall", "reset"]

MIN_RTO_S = 0.2


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """How a link behaves, per direction: up is client → server, down is server → client.

    Args:
        name: A short identifier, recorded with every run.
        rtt_s: Round-trip propagation delay; half of it is added to each direction.
        up_bps: Client → server rate in bits per second; ``None`` for unlimited.
        down_bps: Server → client rate in bits per second; ``None`` for unlimited.
        loss: Probability, per packet and direction, that the packet needs a retransmission (a stall of one RTO).
        jitter_s: Extra one-way delay drawn uniformly from ``[0, jitter_s]``; packets never overtake each other.
        outage_every_s: Period of the outages; ``None`` for a link that never goes dark.
        outage_s: Length of each outage, at the end of each period: the link is up for
            ``outage_every_s - outage_s`` seconds, then dark for ``outage_s``.
        outage_mode: ``"stall"``: bytes stop flowing both ways and resume intact after the outage (TCP keeps
            retransmitting); ``"reset"``: live connections are reset when an outage starts (a NAT or a radio
            bearer that lost its state).
        burst_every_s: Period of the loss bursts (a satellite handover, a congested beam); ``None``: no bursts.
        burst_s: Length of each burst, at the end of each period (as for outages).
        burst_loss: Loss probability per packet during a burst, in place of ``loss``.
        burst_delay_s: Extra one-way delay during a burst (the latency spike of a handover).
    """

    name: str
    rtt_s: float = 0.0
    up_bps: float | None = None
    down_bps: float | None = None
    loss: float = 0.0
    jitter_s: float = 0.0
    outage_every_s: float | None = None
    outage_s: float = 0.0
    outage_mode: OutageMode = "stall"
    burst_every_s: float | None = None
    burst_s: float = 0.0
    burst_loss: float = 0.0
    burst_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.rtt_s < 0 or self.jitter_s < 0:
            raise ValueError("rtt_s and jitter_s must be >= 0")
        for rate in (self.up_bps, self.down_bps):
            if rate is not None and rate <= 0:
                raise ValueError("rates must be > 0 bits per second, or None for unlimited")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        if self.outage_every_s is not None and not 0.0 < self.outage_s < self.outage_every_s:
            raise ValueError("outage_s must be in (0, outage_every_s)")
        if self.outage_mode not in ("stall", "reset"):
            raise ValueError("outage_mode must be 'stall' or 'reset'")
        if self.burst_every_s is not None and not 0.0 < self.burst_s < self.burst_every_s:
            raise ValueError("burst_s must be in (0, burst_every_s)")
        if not 0.0 <= self.burst_loss < 1.0 or self.burst_delay_s < 0:
            raise ValueError("burst_loss must be in [0, 1) and burst_delay_s >= 0")

    @property
    def one_way_delay_s(self) -> float:
        """Propagation delay of one direction, half the RTT."""
        return self.rtt_s / 2

    @property
    def rto_s(self) -> float:
        """The stall a lost packet costs: one retransmission timeout."""
        return max(MIN_RTO_S, 2 * self.rtt_s)


def mbit(value: float) -> float:
    """Megabits per second in bits per second."""
    return value * 1_000_000
