"""Steering in process: the inbox's answers, and successor turns through the lane driver and the engine (no socket).

A test provider plays the upstream's side of :class:`~tether.providers.base.SteeringPort`: it takes the client's
steer, accepts it, and ends its response ``steered`` with a successor (or stops for tool output, ``pending``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal, cast

import orjson
import pytest

from tether.engine.cache import ConnectionState
from tether.engine.engine import Engine, EngineLimits
from tether.engine.lane_driver import OUTBOX_SIZE, Close, LaneDriver
from tether.engine.live import LiveResponse
from tether.engine.steering import MAX_OPEN_STEERS, SteeringInbox
from tether.protocol.events import OutgoingEvent
from tether.protocol.lanes import LaneLimits
from tether.protocol.model_events import Finish, ModelEvent, TextDelta, ToolCallDelta, Usage
from tether.protocol.request import Transport, parse_create
from tether.protocol.steer import Steer, SteerAnswer, read_steer
from tether.providers.base import Provider, ProviderRequest, SteeringPort
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import ScriptedProvider, ScriptedTiming
from tether.store.memory import MemoryStore
from tether.store.turns import Claim
from tether.types import JSONObject

from .support import TENANT, GatedProvider, texts

BOUND_S = 10.0


def steer_of(text: str, target: str = "resp_a") -> object:
    return read_steer({"type": "response.steer", "previous_response_id": target, "input": text})


def taken(inbox: SteeringInbox) -> Steer:
    steer = inbox.take()
    assert steer is not None
    return steer


async def next_steer(port: SteeringPort) -> Steer:
    """The client's next steer, once it comes (as a provider's sender is woken for it)."""
    while (steer := port.take()) is None:
        arrived = asyncio.Event()
        port.notify(arrived.set)
        await arrived.wait()
    port.notify(None)
    return steer


class Answers:
    def __init__(self) -> None:
        self.events: list[SteerAnswer] = []

    def __call__(self, event: SteerAnswer) -> None:
        self.events.append(event)

    @property
    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


class Continued:
    """A stand-in for the upstream response a steer started (the provider's continuation)."""

    def __init__(self) -> None:
        self.abandoned = False
        self.taken = False

    def abandon(self) -> None:
        if not self.taken:
            self.abandoned = True


# -- the inbox ----------------------------------------------------------------------------------------------------


async def test_an_accepted_steer_gets_tethers_id_and_the_lane_and_a_failure_after_it_keeps_the_id() -> None:
    inbox, answers = SteeringInbox("resp_a", "main"), Answers()
    inbox.submit(read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": "x"}), answers)
    steer = taken(inbox)
    inbox.accepted(steer)
    assert answers.events[0]["type"] == "response.steer.accepted"
    accepted = answers.events[0]
    assert accepted["steer"]["id"].startswith("steer_")
    assert accepted["stream_id"] == "main"
    inbox.failed(steer, "successor_creation_failed", "no")
    failed = answers.events[1]
    assert failed["type"] == "response.steer.failed"
    assert failed["steer"] == {"id": accepted["steer"]["id"], "input": "x", "previous_response_id": "resp_a"}
    inbox.failed(steer, "response_not_active", "again")  # answered once only
    assert len(answers.events) == 2


async def test_pending_waits_for_the_terminal_event_and_holds_the_input_for_the_continuation() -> None:
    connection = ConnectionState(TENANT)
    inbox, answers = SteeringInbox("resp_a", "main", connection), Answers()
    inbox.submit(read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": "x"}), answers)
    steer = taken(inbox)
    inbox.accepted(steer)
    stub: JSONObject = {"type": "function_call_output", "call_id": "call_1", "name": "lookup"}
    inbox.pending(steer, "waiting_for_required_input", [stub])
    assert answers.types == ["response.steer.accepted"]  # held: the terminal event goes first
    assert connection.held_steering("main", "resp_a") == [{"type": "message", "role": "user", "content": "x"}]
    assert connection.held_steering(None, "resp_a") == []  # another lane's continuation does not get it
    inbox.release()
    assert answers.types == ["response.steer.accepted", "response.steer.pending"]
    assert answers.events[1]["required_input"] == [stub]  # type: ignore[typeddict-item]


async def test_what_is_unanswered_at_the_end_fails_with_the_reason() -> None:
    inbox, answers = SteeringInbox("resp_a", None), Answers()
    for text in ("taken", "queued"):
        inbox.submit(read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": text}), answers)
    taken(inbox)
    inbox.close()
    inbox.release()
    codes = {event["steer"]["input"]: event["error"]["code"] for event in answers.events}  # type: ignore[typeddict-item]
    assert codes == {"taken": "response_not_active", "queued": "response_already_completed"}
    inbox.submit(read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": "late"}), answers)
    assert answers.events[-1]["error"]["code"] == "response_already_completed"  # type: ignore[typeddict-item]


async def test_too_many_open_steers_are_refused() -> None:
    inbox, answers = SteeringInbox("resp_a", None), Answers()
    for n in range(MAX_OPEN_STEERS + 1):
        inbox.submit(read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": f"{n}"}), answers)
    assert [event["error"]["code"] for event in answers.events] == ["too_many_pending_steers"]  # type: ignore[typeddict-item]


async def test_a_successor_that_cannot_run_returns_its_steers_and_gives_the_upstream_up() -> None:
    inbox, answers = SteeringInbox("resp_a", None), Answers()
    inbox.submit(read_steer({"type": "response.steer", "previous_response_id": "resp_a", "input": "x"}), answers)
    steer = taken(inbox)
    inbox.accepted(steer)
    continued = Continued()
    inbox.succeeded_by(continued)
    inbox.close()
    inbox.release()
    assert continued.abandoned
    assert answers.types == ["response.steer.accepted", "response.steer.failed"]
    assert answers.events[1]["error"]["code"] == "successor_creation_failed"  # type: ignore[typeddict-item]


# -- successors through the engine and the lane driver ---------------------------------------------------------


class SteeringModel:
    """Takes one steer, accepts it, and ends ``steered`` with a successor (or stops for tool output: ``pending``)."""

    name = "steering"
    relays_steering = True

    def __init__(self, mode: Literal["successor", "pending"] = "successor", steers: int = 1) -> None:
        self.mode = mode
        self.steers = steers
        self.requests: list[ProviderRequest] = []

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(request)
        usage = Usage(input_tokens=1, output_tokens=1)
        if isinstance(request.continues, Continued):
            request.continues.taken = True
            yield TextDelta("successor")
            yield Finish(usage)
            return
        if request.steering is None or request.previous_response_id is not None:
            yield TextDelta("plain")
            yield Finish(usage)
            return
        yield TextDelta("working")
        for _ in range(self.steers):
            steer = await next_steer(request.steering)
            request.steering.accepted(steer)
        if self.mode == "pending":
            yield ToolCallDelta("call_1", "lookup", "{}")
            request.steering.upstream_ended()
            stub: JSONObject = {"type": "function_call_output", "call_id": "call_1", "name": "lookup"}
            request.steering.pending(steer, "waiting_for_required_input", [stub])
            yield Finish(usage)
            return
        request.steering.upstream_ended()
        request.steering.succeeded_by(Continued())
        yield Finish(usage, "steered")

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore()


async def make_engine(store: MemoryStore, model: SteeringModel) -> Engine:
    providers: dict[str, Provider] = {
        "scripted": ScriptedProvider(ScriptedTiming()),
        "gated": GatedProvider(),
        "steering": model,
    }
    router = ProviderRouter(providers, [Route("gated", "gated"), Route("steer*", "steering")])
    return Engine(store, router, EngineLimits(shutdown_grace_s=0.0))


@pytest.fixture
async def model() -> SteeringModel:
    return SteeringModel()


@pytest.fixture
async def driver(store: MemoryStore, model: SteeringModel) -> AsyncIterator[LaneDriver]:
    engine = await make_engine(store, model)
    driver = LaneDriver(engine, TENANT, LaneLimits(max_in_flight=4, max_named_lanes=4, max_queued=4), 3600.0)
    driver.start()
    yield driver
    await driver.aclose()
    await engine.aclose()


def send(driver: LaneDriver, **event: object) -> None:
    driver.receive(orjson.dumps(event).decode())


async def out_until(driver: LaneDriver, kind: str) -> list[JSONObject]:
    events: list[JSONObject] = []
    while True:
        item = await asyncio.wait_for(driver.outbox.get(), BOUND_S)
        assert not isinstance(item, Close)
        events.append(dict(item))
        if item["type"] == kind:
            return events


async def test_a_steered_turn_is_followed_by_its_successor_on_the_same_lane(
    driver: LaneDriver, model: SteeringModel, store: MemoryStore
) -> None:
    send(driver, type="response.create", model="steer-1", input="hi", stream_id="main", instructions="Be brief.")
    target = (await out_until(driver, "response.created"))[-1]["response"]["id"]
    send(driver, type="response.create", model="echo", input="queued behind", stream_id="main")
    send(driver, type="response.steer", previous_response_id=target, input="change course")
    steered = await out_until(driver, "response.incomplete")
    accepted = [event for event in steered if event["type"] == "response.steer.accepted"]
    assert [event["steer"]["previous_response_id"] for event in accepted] == [target]
    assert steered[-1]["response"]["incomplete_details"] == {"reason": "steered"}
    after = await out_until(driver, "response.completed")
    assert after[0]["type"] == "response.created"  # the successor, before the turn queued on the lane
    successor = after[-1]["response"]
    assert successor["previous_response_id"] == target
    assert successor["instructions"] == "Be brief."
    assert {event.get("stream_id") for event in [*steered, *after]} == {"main"}
    queued = await out_until(driver, "response.completed")
    assert queued[-1]["response"]["previous_response_id"] is None

    successor_request = model.requests[1]
    assert isinstance(successor_request.continues, Continued)
    assert [item.get("content") for item in successor_request.new_items] == ["change course"]
    assert successor_request.previous_response_id == target
    record = await store.get(TENANT, successor["id"])
    assert record is not None
    assert record.parent_id == target
    assert record.input_items == [{"type": "message", "role": "user", "content": "change course"}]
    steered_record = await store.get(TENANT, target)
    assert steered_record is not None
    assert steered_record.status == "incomplete"

    # The successor is continued like any turn.
    send(driver, type="response.create", model="steer-1", previous_response_id=successor["id"], input="next")
    continued = await out_until(driver, "response.completed")
    assert continued[-1]["response"]["previous_response_id"] == successor["id"]
    assert texts(model.requests[-1].context) == ["hi", "working", "change course", "successor", "next"]


async def test_steering_that_waits_for_tool_output_goes_first_in_the_lanes_continuation(store: MemoryStore) -> None:
    model = SteeringModel("pending")
    engine = await make_engine(store, model)
    driver = LaneDriver(engine, TENANT, LaneLimits(max_in_flight=4, max_named_lanes=4, max_queued=4), 3600.0)
    driver.start()
    try:
        send(driver, type="response.create", model="steer-1", input="hi", stream_id="main")
        target = (await out_until(driver, "response.created"))[-1]["response"]["id"]
        send(driver, type="response.steer", previous_response_id=target, input="then stop")
        events = await out_until(driver, "response.steer.pending")
        types = [event["type"] for event in events]
        assert types[-2:] == ["response.completed", "response.steer.pending"]
        output = {"type": "function_call_output", "call_id": "call_1", "output": "42"}
        send(
            driver,
            type="response.create",
            model="steer-1",
            previous_response_id=target,
            input=[output],
            stream_id="main",
        )
        done = await out_until(driver, "response.completed")
        continued = await store.get(TENANT, done[-1]["response"]["id"])
        assert continued is not None
        assert continued.input_items == [{"type": "message", "role": "user", "content": "then stop"}, output]
        assert model.requests[-1].queued_upstream == 1  # the upstream holds it: not to be sent again
    finally:
        await driver.aclose()
        await engine.aclose()


async def test_a_provider_that_does_not_relay_steering_gets_no_inbox(driver: LaneDriver) -> None:
    send(driver, type="response.create", model="gated", input="hi")
    target = (await out_until(driver, "response.created"))[-1]["response"]["id"]
    send(driver, type="response.steer", previous_response_id=target, input="x")
    failed = await out_until(driver, "response.steer.failed")
    assert failed[-1]["error"]["code"] == "steering_not_supported"


async def test_every_accepted_steer_goes_into_the_successor_in_the_order_sent(store: MemoryStore) -> None:
    model = SteeringModel(steers=2)
    engine = await make_engine(store, model)
    driver = LaneDriver(engine, TENANT, LaneLimits(max_in_flight=4, max_named_lanes=4, max_queued=4), 3600.0)
    driver.start()
    try:
        send(driver, type="response.create", model="steer-1", input="hi")
        target = (await out_until(driver, "response.created"))[-1]["response"]["id"]
        send(driver, type="response.steer", previous_response_id=target, input="first")
        send(driver, type="response.steer", previous_response_id=target, input=[{"role": "user", "content": "second"}])
        steered = await out_until(driver, "response.incomplete")
        accepted = [event["steer"]["id"] for event in steered if event["type"] == "response.steer.accepted"]
        assert len(set(accepted)) == 2
        successor = (await out_until(driver, "response.completed"))[-1]["response"]
        record = await store.get(TENANT, successor["id"])
        assert record is not None
        assert texts(record.input_items) == ["first", "second"]
    finally:
        await driver.aclose()
        await engine.aclose()


class SlowSuccessorClaims(MemoryStore):
    """A store whose claim of a successor turn (the second claim) waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.claiming = asyncio.Event()
        self.release = asyncio.Event()

    async def claim_turn(self, tenant: str, response_id: str, *, key: str | None, node: str, lease_s: float) -> Claim:
        self.claims += 1
        if self.claims == 2:
            self.claiming.set()
            await self.release.wait()
        return await super().claim_turn(tenant, response_id, key=key, node=node, lease_s=lease_s)


class HeldSuccessorModel(SteeringModel):
    """A :class:`SteeringModel` whose successor generates until ``finish`` is set; it notes being closed (the
    router's shutdown) while a successor was still generating."""

    def __init__(self) -> None:
        super().__init__()
        self.successor_started = asyncio.Event()
        self.finish = asyncio.Event()
        self.generating = False
        self.closed = asyncio.Event()
        self.closed_while_generating = False

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ModelEvent]:
        if not isinstance(request.continues, Continued):
            async for event in super().stream(request):
                yield event
            return
        self.generating = True
        self.successor_started.set()
        try:
            await self.finish.wait()
            async for event in super().stream(request):
                yield event
        finally:
            self.generating = False

    async def aclose(self) -> None:
        self.closed_while_generating = self.generating
        self.closed.set()
        self.finish.set()  # nothing is left waiting


async def test_shutdown_waits_for_a_successor_that_started_while_it_was_draining() -> None:
    # The steered turn's log has closed and it is claiming its successor in the store when shutdown begins: the
    # successor it then launches is a generation in flight like any other, waited for before the providers close.
    store, model = SlowSuccessorClaims(), HeldSuccessorModel()
    router = ProviderRouter({"steering": model}, [Route("steer*", "steering")], default=None)
    engine = Engine(store, router, EngineLimits(shutdown_grace_s=BOUND_S))
    looked = [asyncio.Event(), asyncio.Event()]  # shutdown took stock of the turns in flight: once, and again
    running = engine.live.running

    def watched() -> list[LiveResponse]:
        looked[0 if not looked[0].is_set() else 1].set()
        return running()

    engine.live.running = watched  # type: ignore[method-assign]
    connection = engine.connect(TENANT)
    request = parse_create({"model": "steer-1", "input": "hi"}, Transport.WEBSOCKET)
    steered = await engine.create(request, tenant=TENANT, connection=connection, lane="main")
    assert steered.steering is not None
    steer = read_steer({"type": "response.steer", "previous_response_id": steered.response_id, "input": "again"})
    steered.steering.submit(steer, Answers())
    await asyncio.wait_for(store.claiming.wait(), BOUND_S)
    closing = asyncio.create_task(engine.aclose())
    await asyncio.wait_for(looked[0].wait(), BOUND_S)
    store.release.set()
    await asyncio.wait_for(model.successor_started.wait(), BOUND_S)
    # Shutdown either looks again and waits for the successor, or goes on to close the providers under it.
    waits = [asyncio.create_task(looked[1].wait()), asyncio.create_task(model.closed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED, timeout=3 * BOUND_S)
    model.finish.set()
    await asyncio.wait_for(closing, 3 * BOUND_S)
    for task in waits:
        task.cancel()
    assert not model.closed_while_generating
    assert steered.successor is not None
    successor = steered.successor.result()
    assert successor is not None
    assert successor.task is not None
    assert successor.task.done()
    record = await store.get(TENANT, successor.response_id)
    assert record is not None
    assert record.status == "completed"  # generated to its end within the grace


class SteerableModel:
    """Relays steering, and is never steered: ``"ok"``, then the end."""

    name = "steerable"
    relays_steering = True

    def __init__(self) -> None:
        self.requests: list[ProviderRequest] = []
        self.arrived = asyncio.Event()

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(request)
        self.arrived.set()
        yield TextDelta("ok")
        yield Finish(Usage(input_tokens=1, output_tokens=1))

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_a_steer_that_comes_as_the_response_ends_is_answered_after_its_terminal_event() -> None:
    # A slow link: the outbox is full, so the client has not read the response's end when its steer arrives.
    model = SteerableModel()
    router = ProviderRouter({"steerable": model}, [Route("steer*", "steerable")], default=None)
    engine = Engine(MemoryStore(), router, EngineLimits(shutdown_grace_s=0.0))
    driver = LaneDriver(engine, TENANT, LaneLimits(max_in_flight=4, max_named_lanes=4, max_queued=4), 3600.0)
    filler = cast(OutgoingEvent, {"type": "response.output_text.delta", "delta": "x"})
    try:
        for _ in range(OUTBOX_SIZE):
            driver.outbox.put_nowait(filler)
        send(driver, type="response.create", model="steer-1", input="hi", stream_id="main")
        await asyncio.wait_for(model.arrived.wait(), BOUND_S)
        live = engine.live.get(model.requests[0].response_id)
        assert live is not None
        assert live.successor is not None
        assert await asyncio.wait_for(asyncio.shield(live.successor), BOUND_S) is None  # the turn is over
        send(driver, type="response.steer", previous_response_id=live.response_id, input="too late")
        for _ in range(OUTBOX_SIZE):
            assert await asyncio.wait_for(driver.outbox.get(), BOUND_S) == filler
        events = await out_until(driver, "response.steer.failed")
        types = [event["type"] for event in events]
        assert types[-2:] == ["response.completed", "response.steer.failed"], events
        assert events[-1]["error"]["code"] == "response_already_completed"
        assert events[-1]["stream_id"] == "main"
    finally:
        await driver.aclose()
        await engine.aclose()
