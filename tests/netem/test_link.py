"""The packet link model, with plain function calls: pacing, delay, jitter, loss, bursts, outages, queue."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tether.netem.link import Drop, LinkDirection
from tether.netem.profiles import NetworkProfile, mbit
from tether.netem.shaping import OutageClock


def direction(profile: NetworkProfile, *, seed: int = 1, rate: float | None = None) -> LinkDirection:
    return LinkDirection.for_profile(profile, rate if rate is not None else profile.down_bps, random.Random(seed), 0.0)


def test_packets_leave_at_the_rate_and_arrive_one_delay_later() -> None:
    link = direction(NetworkProfile("x", rtt_s=0.2, down_bps=mbit(1)))
    arrivals = [link.admit(1250, 0.0) for _ in range(3)]
    assert arrivals == [0.01 + 0.1, 0.02 + 0.1, 0.03 + 0.1], "1250 bytes at 1 Mbit/s take 10 ms each"


def test_an_idle_link_starts_from_now() -> None:
    link = direction(NetworkProfile("x", rtt_s=0.1))
    assert link.admit(100, 5.0) == 5.05


def test_loss_drops_about_the_configured_fraction() -> None:
    link = direction(NetworkProfile("x", loss=0.1))
    verdicts = [link.admit(100, float(i)) for i in range(20_000)]
    lost = sum(verdict is Drop.LOSS for verdict in verdicts)
    assert 0.09 < lost / len(verdicts) < 0.11
    assert link.counters.dropped[Drop.LOSS] == lost
    assert link.counters.delivered_packets == len(verdicts) - lost


def test_loss_depends_on_the_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        link = direction(NetworkProfile("x", loss=0.3), seed=seed)
        return [link.admit(100, float(i)) is Drop.LOSS for i in range(200)]

    assert pattern(1) == pattern(1)
    assert pattern(1) != pattern(2)


@given(st.lists(st.tuples(st.integers(40, 1500), st.floats(0, 0.05)), min_size=1, max_size=200))
def test_jitter_never_reorders_and_never_beats_the_delay(packets: list[tuple[int, float]]) -> None:
    link = direction(NetworkProfile("x", rtt_s=0.2, jitter_s=0.1, down_bps=mbit(2)))
    now, previous = 0.0, 0.0
    for size, gap in packets:
        now += gap
        arrival = link.admit(size, now)
        assert isinstance(arrival, float)
        assert arrival >= previous
        assert arrival >= now + 0.1 + size * 8 / mbit(2) - 1e-9
        previous = arrival


def test_every_packet_leaving_during_an_outage_is_lost() -> None:
    link = direction(NetworkProfile("x", rtt_s=0.1, outage_every_s=10.0, outage_s=2.0))
    assert isinstance(link.admit(100, 7.9), float)
    assert link.admit(100, 8.0) is Drop.OUTAGE
    assert link.admit(100, 9.99) is Drop.OUTAGE
    assert link.admit(100, 10.0) == 10.05
    assert link.counters.dropped[Drop.OUTAGE] == 2


def test_bursts_raise_loss_and_delay_only_inside_them() -> None:
    profile = NetworkProfile("x", rtt_s=0.04, burst_every_s=15.0, burst_s=1.0, burst_loss=0.5, burst_delay_s=0.03)
    link = direction(profile)
    calm = [link.admit(100, 10.0 + i / 1000) for i in range(1000)]
    assert all(isinstance(verdict, float) for verdict in calm), "no loss outside bursts"
    stormy = [link.admit(100, 14.0 + i / 1000) for i in range(1000)]
    lost = sum(verdict is Drop.LOSS for verdict in stormy)
    assert 400 < lost < 600
    delivered = [verdict for verdict in stormy if isinstance(verdict, float)]
    assert min(d - t for d, t in zip(delivered, [14.0 + i / 1000 for i in range(1000)], strict=False)) >= 0.05 - 1e-9


def test_a_full_queue_drops_arrivals() -> None:
    link = direction(NetworkProfile("x", down_bps=mbit(1)))
    link.queue_limit_s = 0.5
    verdicts = [link.admit(1250, 0.0) for _ in range(100)]
    assert Drop.QUEUE in verdicts
    delivered = [verdict for verdict in verdicts if isinstance(verdict, float)]
    assert 50 <= len(delivered) <= 51, "0.5 s of queue holds about 50 packets of 10 ms behind the first"


def test_outage_clock_covers_only_dark_windows() -> None:
    clock = OutageClock(every_s=10.0, dark_s=2.0, origin=1.0)
    assert [clock.covers(t) for t in (0.5, 8.9, 9.0, 10.9, 11.0, 19.5)] == [False, False, True, True, False, True]
