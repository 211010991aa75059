"""Fault schedules: when to cut a connection, and how, without I/O.

A ``FaultSchedule`` is a list of ``Fault`` objects, each a trigger (``AtTime`` or ``AtBytes``) and a ``FaultMode``.
``ByteTriggers`` is the bookkeeping the proxy uses for byte triggers: how many more bytes may be forwarded before
the next one fires, and which fire once a byte count is reached. ``seeded_cuts`` draws reproducible mid-stream
cut points for fault-injection runs.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass

from tether.netem.types import Direction, FaultMode


@dataclass(frozen=True, slots=True)
class AtTime:
    """Fire ``offset_s`` seconds after the schedule is installed."""

    offset_s: float


@dataclass(frozen=True, slots=True)
class AtBytes:
    """Fire right after the ``offset``-th byte in ``direction`` (counted from installation) has been forwarded."""

    direction: Direction
    offset: int


@dataclass(frozen=True, slots=True)
class Fault:
    """A cut of every live connection.

    Args:
        trigger: When the cut happens.
        mode: How connections are cut.
        hold_new: For ``BLACKHOLE``: connections accepted until ``restore()`` are blackholed too.
        restore_after_s: Call ``restore()`` this long after the cut (``None``: the caller restores, if ever).
    """

    trigger: AtTime | AtBytes
    mode: FaultMode
    hold_new: bool = True
    restore_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class FaultSchedule:
    """Faults to inject, in any order; install with ``ShapingProxy(..., faults=...)`` or ``proxy.schedule()``."""

    faults: tuple[Fault, ...] = ()

    @classmethod
    def of(cls, *pairs: tuple[AtTime | AtBytes, FaultMode | str]) -> FaultSchedule:
        """A schedule from ``(trigger, mode)`` pairs with default options."""
        return cls(tuple(Fault(trigger, FaultMode(mode)) for trigger, mode in pairs))


class ByteTriggers:
    """Byte triggers armed at absolute byte counts, per direction."""

    def __init__(self) -> None:
        self._armed: dict[Direction, list[tuple[int, int, Fault]]] = {direction: [] for direction in Direction}
        self._sequence = 0

    def arm(self, direction: Direction, at: int, fault: Fault) -> None:
        """Fire ``fault`` once ``at`` bytes in ``direction`` have been forwarded in total."""
        self._sequence += 1
        bisect.insort(self._armed[direction], (at, self._sequence, fault))

    def budget(self, direction: Direction, forwarded: int) -> int | None:
        """How many more bytes may be forwarded before the next trigger fires; ``None`` if none is armed."""
        armed = self._armed[direction]
        return max(0, armed[0][0] - forwarded) if armed else None

    def reached(self, direction: Direction, forwarded: int) -> list[Fault]:
        """Remove and return the faults whose byte count ``forwarded`` has reached, in order."""
        armed = self._armed[direction]
        count = 0
        while count < len(armed) and armed[count][0] <= forwarded:
            count += 1
        fired = [fault for _, _, fault in armed[:count]]
        del armed[:count]
        return fired

    def __len__(self) -> int:
        return sum(len(armed) for armed in self._armed.values())


def seeded_cuts(
    seed: int,
    count: int,
    *,
    up_bytes: int,
    down_bytes: int,
    modes: Sequence[FaultMode] = tuple(FaultMode),
) -> list[Fault]:
    """``count`` reproducible byte-triggered faults, spread over the bytes a clean run moves.

    Each fault cuts after a byte drawn uniformly from the ``up_bytes + down_bytes`` bytes of a clean run (so a
    direction is picked in proportion to its traffic, and cuts land mid-stream), with a mode drawn from ``modes``.
    Run each against a fresh proxy (or one after another, each installed after the previous has fired).

    Args:
        seed: Seed of the draw.
        count: Number of faults.
        up_bytes: Client → server bytes of a clean run.
        down_bytes: Server → client bytes of a clean run.
        modes: Modes to draw from.

    Raises:
        ValueError: If there are no bytes to cut in, or no modes.
    """
    if up_bytes + down_bytes <= 0 or not modes:
        raise ValueError("need at least one byte and one mode")
    rng = random.Random(seed)
    faults = []
    for _ in range(count):
        point = rng.randrange(up_bytes + down_bytes)
        direction, offset = (Direction.UP, point + 1) if point < up_bytes else (Direction.DOWN, point - up_bytes + 1)
        faults.append(Fault(AtBytes(direction, offset), rng.choice(modes)))
    return faults
