"""The link model, with plain function calls: pacing, delay, loss stalls, outages."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.netem import DirectionShaper, OutageClock
from tether.netem.shaping import HEADER_BYTES, MSS


def shaper(
    *,
    rate_bps: float | None = None,
    delay_s: float = 0.0,
    loss: float = 0.0,
    jitter_s: float = 0.0,
    seed: int = 1,
    outages: OutageClock | None = None,
) -> DirectionShaper:
    return DirectionShaper(
        rate_bps=rate_bps,
        delay_s=delay_s,
        loss=loss,
        rto_s=0.2,
        jitter_s=jitter_s,
        loss_rng=random.Random(f"{seed}:loss"),
        jitter_rng=random.Random(f"{seed}:jitter"),
        outages=outages,
    )


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, position = [], 0
    for size in sizes:
        if position >= len(data):
            break
        chunks.append(data[position : position + size])
        position += size
    if position < len(data):
        chunks.append(data[position:])
    return chunks


def test_pieces_leave_at_the_link_rate_and_arrive_one_delay_later() -> None:
    rate = (MSS + HEADER_BYTES) * 8 * 10  # ten full packets a second
    link = shaper(rate_bps=rate, delay_s=0.05)
    pieces = link.shape(bytes(10 * MSS), now=100.0)
    assert [len(piece.data) for piece in pieces] == [MSS] * 10
    assert [piece.release_at for piece in pieces] == pytest.approx([100.0 + 0.1 * (i + 1) + 0.05 for i in range(10)])


def test_an_idle_link_starts_from_now_and_honours_link_free_at() -> None:
    link = shaper(delay_s=0.1)
    link.link_free_at = 5.0  # the handshake
    assert link.shape(b"x", now=1.0)[0].release_at == pytest.approx(5.1)
    assert link.shape(b"y", now=9.0)[0].release_at == pytest.approx(9.1)


def test_a_lost_packet_stalls_one_rto_and_everything_behind_it() -> None:
    link = shaper(loss=0.999999)
    pieces = link.shape(bytes(3 * MSS), now=0.0)
    assert [piece.stalled for piece in pieces] == [True, True, True]
    assert [piece.release_at for piece in pieces] == pytest.approx([0.2, 0.4, 0.6])
    assert link.stalled_packets == [0, 1, 2]


def test_jitter_never_reorders() -> None:
    link = shaper(delay_s=0.01, jitter_s=0.5)
    releases = [piece.release_at for i in range(200) for piece in link.shape(b"z" * 100, now=i * 0.001)]
    assert releases == sorted(releases)
    assert max(releases) > 0.2


@given(st.binary(min_size=1, max_size=20_000), st.lists(st.integers(1, 5000), max_size=40))
def test_pieces_cover_the_stream_in_packets(data: bytes, sizes: list[int]) -> None:
    link = shaper()
    pieces = [piece for chunk in chunked(data, sizes) for piece in link.shape(chunk, now=0.0)]
    assert b"".join(piece.data for piece in pieces) == data
    assert all(0 < len(piece.data) <= MSS for piece in pieces)
    assert sum(piece.new_packet for piece in pieces) == link.packets == -(-len(data) // MSS)


@given(st.lists(st.integers(1, 9000), max_size=30), st.lists(st.integers(1, 9000), max_size=30))
def test_loss_decisions_depend_on_the_seed_not_on_the_chunking(first: list[int], second: list[int]) -> None:
    data = bytes(60_000)
    links = [shaper(loss=0.1, seed=3), shaper(loss=0.1, seed=3)]
    for link, sizes in zip(links, (first, second), strict=True):
        for chunk in chunked(data, sizes):
            link.shape(chunk, now=0.0)
    assert links[0].stalled_packets == links[1].stalled_packets
    assert links[0].stalled_packets, "42 packets at 10 % loss: this seed stalls some"


def test_another_seed_gives_other_decisions() -> None:
    patterns = []
    for seed in (3, 4):
        link = shaper(loss=0.1, seed=seed)
        link.shape(bytes(60_000), now=0.0)
        patterns.append(link.stalled_packets)
    assert patterns[0] != patterns[1]


def test_outage_clock_defers_to_the_end_of_the_dark_window() -> None:
    clock = OutageClock(every_s=10.0, dark_s=2.0, origin=100.0)
    assert clock.defer(99.0) == 99.0
    assert clock.defer(107.9) == 107.9
    assert clock.defer(108.0) == pytest.approx(110.0)
    assert clock.defer(119.5) == pytest.approx(120.0)
    assert clock.defer(120.0) == 120.0
    assert clock.next_outage(0.0) == 108.0
    assert clock.next_outage(108.0) == 118.0
    assert clock.next_outage(117.0) == 118.0


def test_bytes_sent_into_an_outage_arrive_after_it() -> None:
    link = shaper(delay_s=0.5, outages=OutageClock(every_s=10.0, dark_s=2.0, origin=0.0))
    assert link.shape(b"a", now=7.8)[0].release_at == pytest.approx(10.0), "it would arrive at 8.3, in the dark"
    assert link.shape(b"b", now=9.0)[0].release_at == pytest.approx(10.5), "departure waits for the link"
