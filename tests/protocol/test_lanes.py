from __future__ import annotations

import copy

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tether.protocol.errors import ErrorType, ProtocolError
from tether.protocol.lanes import Lane, LaneLimits, LaneScheduler


def snapshot(scheduler: LaneScheduler[str]) -> tuple[frozenset[Lane], list[tuple[Lane, str]]]:
    """The observable state: running lanes, and the waiting jobs in order (drained from a copy)."""
    return scheduler.running, copy.deepcopy(scheduler).drain()


def test_job_on_an_idle_lane_starts_at_once() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler()
    assert scheduler.idle
    assert scheduler.submit(None, "a")
    assert scheduler.running == {None}
    assert scheduler.queued == 0
    assert not scheduler.idle


def test_default_lane_queues_while_busy() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler()
    assert [scheduler.submit(None, job) for job in "abc"] == [True, False, False]
    assert scheduler.queued == 2


def test_default_lane_is_fifo() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler()
    for job in "abc":
        scheduler.submit(None, job)
    assert scheduler.finish(None) == [(None, "b")]
    assert scheduler.finish(None) == [(None, "c")]
    assert scheduler.finish(None) == []
    assert scheduler.idle


def test_lanes_run_concurrently() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler()
    assert scheduler.submit("a", "a1")
    assert scheduler.submit("b", "b1")
    assert scheduler.submit(None, "n1")
    assert scheduler.running == {"a", "b", None}
    assert scheduler.finish("b") == []
    assert scheduler.running == {"a", None}


def test_max_in_flight_caps_running_lanes_and_queues_the_rest() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler(LaneLimits(max_in_flight=2))
    assert scheduler.submit("a", "a1")
    assert scheduler.submit("b", "b1")
    assert not scheduler.submit("c", "c1")
    assert not scheduler.submit(None, "n1")
    assert scheduler.running == {"a", "b"}
    assert scheduler.queued == 2


def test_a_freed_slot_goes_to_the_earliest_waiting_job() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler(LaneLimits(max_in_flight=2))
    for lane, job in [("a", "a1"), ("b", "b1"), ("c", "c1"), (None, "n1")]:
        scheduler.submit(lane, job)
    assert scheduler.finish("a") == [("c", "c1")]
    assert scheduler.finish("b") == [(None, "n1")]
    assert scheduler.running == {"c", None}


def test_finishing_a_lane_starts_its_next_job_and_other_lanes_waiting_for_a_slot() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler(LaneLimits(max_in_flight=1))
    for lane, job in [("a", "a1"), ("a", "a2"), ("b", "b1")]:
        scheduler.submit(lane, job)
    assert scheduler.finish("a") == [("a", "a2")]
    assert scheduler.finish("a") == [("b", "b1")]


def test_a_waiting_job_keeps_later_jobs_of_its_lane_waiting() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler(LaneLimits(max_in_flight=1))
    scheduler.submit("a", "a1")
    scheduler.submit("b", "b1")
    assert not scheduler.submit("b", "b2")
    assert scheduler.queued == 2


def test_thirty_third_named_lane_is_refused_and_changes_nothing() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler()
    for i in range(32):
        scheduler.submit(f"s{i}", f"job{i}")
    assert len(scheduler.running) == 16
    assert scheduler.queued == 16
    before = snapshot(scheduler)

    for _ in range(2):  # a refused lane is not half-registered: it is refused again
        with pytest.raises(ProtocolError) as caught:
            scheduler.submit("s32", "extra")
        assert (caught.value.status, caught.value.code) == (400, "websocket_stream_limit_reached")
        assert caught.value.param == "stream_id"
        assert caught.value.error_type is ErrorType.INVALID_REQUEST
        assert snapshot(scheduler) == before

    assert not scheduler.submit("s0", "reuse")  # known lanes and the default lane stay usable
    assert not scheduler.submit(None, "default")


def test_queue_full_is_refused_and_changes_nothing() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler(LaneLimits(max_in_flight=1, max_queued=2))
    scheduler.submit("a", "a1")
    scheduler.submit("a", "a2")
    scheduler.submit(None, "n1")
    before = snapshot(scheduler)

    with pytest.raises(ProtocolError) as caught:
        scheduler.submit("b", "b1")
    error = caught.value
    assert (error.status, error.code, error.error_type) == (429, "websocket_queue_full", ErrorType.RATE_LIMIT)
    assert error.headers == {"retry-after": "1"}
    assert snapshot(scheduler) == before


def test_lane_refused_for_a_full_queue_does_not_count_as_named() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler(LaneLimits(max_in_flight=1, max_named_lanes=3, max_queued=1))
    scheduler.submit("a", "a1")
    scheduler.submit("b", "b1")
    with pytest.raises(ProtocolError, match="queued"):
        scheduler.submit("c", "c1")
    scheduler.drain()
    assert not scheduler.submit("d", "d1")  # "a", "b", "d": had "c" been counted, this would be a 4th lane


def test_drain_returns_waiting_jobs_in_order_and_keeps_running_ones() -> None:
    scheduler: LaneScheduler[str] = LaneScheduler(LaneLimits(max_in_flight=1))
    for lane, job in [("a", "a1"), ("a", "a2"), ("b", "b1"), (None, "n1")]:
        scheduler.submit(lane, job)
    assert scheduler.drain() == [("a", "a2"), ("b", "b1"), (None, "n1")]
    assert scheduler.queued == 0
    assert scheduler.running == {"a"}
    assert scheduler.drain() == []
    assert scheduler.finish("a") == []
    assert scheduler.idle


# --- stateful ------------------------------------------------------------------------------------------------

LANES: list[Lane] = [None, "a", "b", "c"]


class LaneSchedulerMachine(RuleBasedStateMachine):
    """Drives a scheduler with small limits next to a model of what the docstring promises.

    The model: a job starts when its lane is idle, a slot is free and no earlier job of its lane waits; when a job
    finishes, the waiting jobs that can now start do so, earliest first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.limits = LaneLimits()
        self.scheduler: LaneScheduler[int] = LaneScheduler(self.limits)
        self.running: dict[Lane, int] = {}
        self.waiting: list[tuple[Lane, int]] = []
        self.named: set[str] = set()
        self.next_job = 0

    @initialize(
        limits=st.builds(
            LaneLimits,
            max_in_flight=st.integers(1, 3),
            max_named_lanes=st.integers(1, 3),
            max_queued=st.integers(0, 4),
        )
    )
    def start(self, limits: LaneLimits) -> None:
        self.limits = limits
        self.scheduler = LaneScheduler(limits)

    def can_start(self, lane: Lane) -> bool:
        return (
            lane not in self.running
            and len(self.running) < self.limits.max_in_flight
            and all(waiting_lane != lane for waiting_lane, _ in self.waiting)
        )

    def record_start(self, lane: Lane, job: int) -> None:
        assert lane not in self.running, f"a second job started on running lane {lane!r}"
        self.running[lane] = job
        assert len(self.running) <= self.limits.max_in_flight
        if lane is not None:
            self.named.add(lane)

    @rule(lane=st.sampled_from(LANES))
    def submit(self, lane: Lane) -> None:
        job = self.next_job
        self.next_job += 1
        if lane is not None and lane not in self.named and len(self.named) >= self.limits.max_named_lanes:
            expected: str | bool = "websocket_stream_limit_reached"
        elif self.can_start(lane):
            expected = True
        elif len(self.waiting) >= self.limits.max_queued:
            expected = "websocket_queue_full"
        else:
            expected = False

        before = (self.scheduler.running, self.scheduler.queued, copy.deepcopy(self.scheduler).drain())
        try:
            started = self.scheduler.submit(lane, job)
        except ProtocolError as error:
            assert error.code == expected  # noqa: PT017 (a state-machine rule, not a test)
            assert (self.scheduler.running, self.scheduler.queued, copy.deepcopy(self.scheduler).drain()) == before
            return
        assert started is expected
        if started:
            self.record_start(lane, job)
        else:
            self.waiting.append((lane, job))
            if lane is not None:
                self.named.add(lane)

    def expected_starts(self) -> list[tuple[Lane, int]]:
        """Earliest first: each lane's first waiting job, while its lane is idle and a slot is free."""
        starts: list[tuple[Lane, int]] = []
        running = set(self.running)
        seen: set[Lane] = set()
        for lane, job in self.waiting:
            if lane not in seen and lane not in running and len(running) < self.limits.max_in_flight:
                starts.append((lane, job))
                running.add(lane)
            seen.add(lane)
        return starts

    def finish_lane(self, lane: Lane) -> None:
        del self.running[lane]
        expected = self.expected_starts()
        started = self.scheduler.finish(lane)
        for entry in started:
            entry_lane = entry[0]
            first_of_lane = next(waiting for waiting in self.waiting if waiting[0] == entry_lane)
            assert entry == first_of_lane, f"{entry} overtook {first_of_lane} on its lane"
            self.waiting.remove(entry)
            self.record_start(*entry)
        assert started == expected

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        self.finish_lane(data.draw(st.sampled_from(list(self.running)), label="lane"))

    @rule()
    def drain(self) -> None:
        assert self.scheduler.drain() == self.waiting
        self.waiting.clear()

    @rule()
    def finish_everything(self) -> None:
        """Every admitted job starts, in time, when running jobs keep finishing."""
        for _ in range(len(self.waiting) + 1):
            if not self.running:
                break
            for lane in list(self.running):
                self.finish_lane(lane)
        assert not self.waiting, f"jobs never started: {self.waiting}"
        assert self.scheduler.idle

    @invariant()
    def matches_the_model(self) -> None:
        assert self.scheduler.running == frozenset(self.running)
        assert self.scheduler.queued == len(self.waiting)
        assert self.scheduler.idle == (not self.running and not self.waiting)

    @invariant()
    def no_startable_job_is_left_waiting(self) -> None:
        assert len(self.running) <= self.limits.max_in_flight
        assert self.expected_starts() == [], f"could start but waits: {self.expected_starts()}"


def test_lane_scheduler_state_machine() -> None:
    run_state_machine_as_test(
        LaneSchedulerMachine, settings=settings(max_examples=200, stateful_step_count=40, deadline=None)
    )
