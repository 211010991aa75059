"""Bounded exponential backoff with jitter, deterministic under a seed (sans-I/O: it computes delays, never sleeps)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a turn waits through drops and offline periods.

    The n-th retry waits ``min(max_delay_s, initial_delay_s * multiplier ** (n - 1))``, scaled down by a random
    factor in ``[1 - jitter, 1]`` so that many clients cut off together do not come back together. A turn gives
    up after ``max_attempts`` retries in a row without progress, or once ``max_elapsed_s`` have passed since the
    first failure of the streak, whichever comes first. Progress (any new event) starts a new streak.

    Args:
        initial_delay_s: the first delay.
        multiplier: growth per retry.
        max_delay_s: the largest delay.
        jitter: the fraction of each delay that is random, in ``[0, 1]``.
        max_attempts: retries per streak.
        max_elapsed_s: seconds per streak.

    Raises:
        ValueError: for a negative delay, a multiplier below 1, a jitter outside ``[0, 1]`` or no attempts.
    """

    initial_delay_s: float = 0.25
    multiplier: float = 2.0
    max_delay_s: float = 8.0
    jitter: float = 0.5
    max_attempts: int = 10
    max_elapsed_s: float = 120.0

    def __post_init__(self) -> None:
        if self.initial_delay_s < 0 or self.max_delay_s < 0 or self.max_elapsed_s < 0:
            raise ValueError("RetryPolicy delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("RetryPolicy.multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("RetryPolicy.jitter must be between 0 and 1")
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")


class Backoff:
    """The retry state of one turn: :attr:`attempt` counts the retries granted in the current streak.

    Args:
        policy: the bounds and delays.
        rng: the jitter source (seed it for reproducible delays).
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self, policy: RetryPolicy, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self.attempt = 0
        self._rng = rng or random.Random()
        self._clock = clock
        self._started: float | None = None

    @property
    def elapsed_s(self) -> float:
        """Seconds since the first failure of the current streak (0 without one)."""
        return 0.0 if self._started is None else self._clock() - self._started

    def next_delay(self, hint_s: float | None = None) -> float | None:
        """Record a failure and return how long to wait before the next attempt.

        Args:
            hint_s: the server's ``retry-after``, used when it is longer than the computed delay.

        Returns:
            The delay in seconds, or ``None`` when the streak is over its bounds (give up).
        """
        if self._started is None:
            self._started = self._clock()
        policy = self.policy
        if self.attempt >= policy.max_attempts:
            return None
        base = min(policy.max_delay_s, policy.initial_delay_s * policy.multiplier**self.attempt)
        delay = base * (1.0 - policy.jitter * self._rng.random())
        if hint_s is not None:
            delay = max(delay, min(hint_s, policy.max_delay_s))
        if self.elapsed_s + delay > policy.max_elapsed_s:
            return None
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Progress was made: the next failure starts a new streak."""
        self.attempt = 0
        self._started = None
