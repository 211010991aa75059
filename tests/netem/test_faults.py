"""Fault schedules and byte triggers, without sockets."""

from __future__ import annotations

from tether.netem import AtBytes, AtTime, ByteTriggers, Direction, Fault, FaultMode, FaultSchedule, seeded_cuts


def fault(offset: int, mode: FaultMode = FaultMode.RST) -> Fault:
    return Fault(AtBytes(Direction.DOWN, offset), mode)


def test_schedule_of_pairs_accepts_mode_names() -> None:
    schedule = FaultSchedule.of((AtTime(1.0), "rst"), (AtBytes(Direction.UP, 10), FaultMode.HALF_CLOSE))
    assert [f.mode for f in schedule.faults] == [FaultMode.RST, FaultMode.HALF_CLOSE]
    assert schedule.faults[0].hold_new
    assert schedule.faults[0].restore_after_s is None


def test_budget_counts_down_to_the_nearest_trigger() -> None:
    triggers = ByteTriggers()
    assert triggers.budget(Direction.DOWN, 0) is None
    triggers.arm(Direction.DOWN, 500, fault(500))
    triggers.arm(Direction.DOWN, 100, fault(100))
    assert triggers.budget(Direction.DOWN, 40) == 60
    assert triggers.budget(Direction.UP, 40) is None
    assert triggers.reached(Direction.DOWN, 99) == []
    assert triggers.reached(Direction.DOWN, 100) == [fault(100)]
    assert triggers.budget(Direction.DOWN, 100) == 400
    assert len(triggers) == 1


def test_triggers_passed_together_fire_in_order() -> None:
    triggers = ByteTriggers()
    for offset in (30, 10, 20):
        triggers.arm(Direction.UP, offset, fault(offset))
    assert triggers.budget(Direction.UP, 50) == 0
    assert triggers.reached(Direction.UP, 50) == [fault(10), fault(20), fault(30)]
    assert len(triggers) == 0


def test_seeded_cuts_are_reproducible_and_within_the_traffic() -> None:
    cuts = seeded_cuts(7, 300, up_bytes=1_000, down_bytes=9_000)
    assert cuts == seeded_cuts(7, 300, up_bytes=1_000, down_bytes=9_000)
    assert cuts != seeded_cuts(8, 300, up_bytes=1_000, down_bytes=9_000)
    for cut in cuts:
        assert isinstance(cut.trigger, AtBytes)
        limit = 1_000 if cut.trigger.direction is Direction.UP else 9_000
        assert 1 <= cut.trigger.offset <= limit
    downs = sum(isinstance(c.trigger, AtBytes) and c.trigger.direction is Direction.DOWN for c in cuts)
    assert 230 < downs < 300, "directions are drawn in proportion to their bytes"
    assert {cut.mode for cut in cuts} == set(FaultMode)


def test_seeded_cuts_can_be_restricted_to_some_modes() -> None:
    cuts = seeded_cuts(1, 50, up_bytes=10, down_bytes=10, modes=[FaultMode.BLACKHOLE])
    assert {cut.mode for cut in cuts} == {FaultMode.BLACKHOLE}
