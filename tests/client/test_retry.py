"""Backoff: growth, jitter bounds, both limits, retry-after hints, determinism under a seed."""

from __future__ import annotations

import random

import pytest

from tether.client import Backoff, RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_delays_grow_to_the_cap_within_the_jitter_band() -> None:
    policy = RetryPolicy(initial_delay_s=0.5, multiplier=2.0, max_delay_s=4.0, jitter=0.5, max_attempts=8)
    backoff = Backoff(policy, random.Random(1), FakeClock())
    delays = [backoff.next_delay() for _ in range(6)]
    for index, (delay, base) in enumerate(zip(delays, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], strict=True)):
        assert delay is not None
        assert base * 0.5 <= delay <= base, (index, delay)
    assert backoff.attempt == 6


def test_the_same_seed_gives_the_same_delays() -> None:
    policy = RetryPolicy()
    first = Backoff(policy, random.Random(42), FakeClock())
    second = Backoff(policy, random.Random(42), FakeClock())
    assert [first.next_delay() for _ in range(5)] == [second.next_delay() for _ in range(5)]


def test_attempts_are_bounded() -> None:
    backoff = Backoff(RetryPolicy(max_attempts=3, jitter=0.0), random.Random(0), FakeClock())
    assert [backoff.next_delay() for _ in range(3)] == [0.25, 0.5, 1.0]
    assert backoff.next_delay() is None
    assert backoff.attempt == 3


def test_elapsed_time_is_bounded() -> None:
    clock = FakeClock()
    backoff = Backoff(RetryPolicy(initial_delay_s=1.0, multiplier=1.0, jitter=0.0, max_elapsed_s=2.5), clock=clock)
    assert backoff.next_delay() == 1.0
    clock.now += 1.0
    assert backoff.next_delay() == 1.0
    clock.now += 1.0
    assert backoff.next_delay() is None  # 2 s spent, another 1 s would pass 2.5 s
    assert backoff.elapsed_s == 2.0


def test_progress_starts_a_new_streak() -> None:
    clock = FakeClock()
    backoff = Backoff(RetryPolicy(max_attempts=2, jitter=0.0), clock=clock)
    backoff.next_delay()
    backoff.next_delay()
    clock.now += 50
    backoff.reset()
    assert backoff.elapsed_s == 0.0
    assert backoff.next_delay() == 0.25


def test_a_retry_after_hint_lengthens_the_delay_up_to_the_cap() -> None:
    backoff = Backoff(RetryPolicy(jitter=0.0, max_delay_s=8.0), clock=FakeClock())
    assert backoff.next_delay(hint_s=3.0) == 3.0
    assert backoff.next_delay(hint_s=60.0) == 8.0
    assert backoff.next_delay(hint_s=0.1) == 1.0


@pytest.mark.parametrize(
    "fields",
    [{"initial_delay_s": -1.0}, {"multiplier": 0.5}, {"jitter": 1.5}, {"max_attempts": 0}, {"max_elapsed_s": -1.0}],
)
def test_policies_are_checked(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**fields)  # type: ignore[arg-type]
