"""The observer seam, in process: what the engine tells an observer at each point of a turn's life."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest

from tether.engine.cache import ConnectionState
from tether.engine.engine import Engine, EngineLimits
from tether.engine.observer import FanOut, Resolution, TurnObserver, TurnOrigin, turn_outcome
from tether.engine.turn import Turn
from tether.protocol.errors import ProtocolError
from tether.protocol.request import CreateRequest
from tether.providers.router import ProviderRouter
from tether.providers.scripted import ScriptedProvider, ScriptedTiming
from tether.store.memory import MemoryStore

from .support import TENANT, GatedProvider, events_of, request, user


class Recorder(TurnObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def turn_started(self, turn: Turn) -> None:
        self.seen.append(("started", turn.plan.resolution))

    def upstream_headers(self, turn: Turn) -> Mapping[str, str]:
        return {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}

    def turn_finished(self, turn: Turn) -> None:
        timings = turn.timings
        assert timings.resolved is not None
        assert timings.ended is not None
        assert timings.opened <= timings.resolved <= timings.ended
        self.seen.append(("finished", turn_outcome(turn)))

    def turn_rejected(
        self, request: CreateRequest, origin: TurnOrigin, error: ProtocolError, *, route: str, provider: str
    ) -> None:
        self.seen.append(("rejected", (error.code, origin.transport, route, provider)))

    def idempotent_replay(self, source: str) -> None:
        self.seen.append(("replay", source))

    def resumed(self, response_id: str) -> None:
        self.seen.append(("resumed", response_id))


@pytest.fixture
async def observed() -> AsyncIterator[tuple[Engine, Recorder, ScriptedProvider]]:
    recorder = Recorder()
    scripted = ScriptedProvider(ScriptedTiming())
    engine = Engine(
        MemoryStore(),
        ProviderRouter({"scripted": scripted}),
        EngineLimits(hot_cache_size=1, shutdown_grace_s=0.0),
        observer=FanOut([TurnObserver(), recorder]),
    )
    yield engine, recorder, scripted
    await engine.aclose()


async def test_each_continuation_says_where_it_resolved(observed: tuple[Engine, Recorder, ScriptedProvider]) -> None:
    engine, recorder, _ = observed
    lane = ConnectionState(TENANT)
    first = await engine.create(request(input=[user("a")]), tenant=TENANT, connection=lane)
    await events_of(engine, first)
    on_lane = await engine.create(
        request(input=[user("b")], previous_response_id=first.response_id), tenant=TENANT, connection=lane
    )
    await events_of(engine, on_lane)
    other = await engine.create(request(input=[user("c")]), tenant=TENANT)  # evicts on_lane from the hot cache
    await events_of(engine, other)
    hot = await engine.create(request(input=[user("d")], previous_response_id=other.response_id), tenant=TENANT)
    await events_of(engine, hot)
    stored = await engine.create(request(input=[user("e")], previous_response_id=on_lane.response_id), tenant=TENANT)
    await events_of(engine, stored)
    started = [value for kind, value in recorder.seen if kind == "started"]
    assert started == [
        Resolution.NEW_CHAIN,
        Resolution.LANE,
        Resolution.NEW_CHAIN,
        Resolution.HOT_CACHE,
        Resolution.STORE,
    ]
    assert [value for kind, value in recorder.seen if kind == "finished"] == ["completed"] * 5


async def test_rejections_replays_and_resumes_are_told(observed: tuple[Engine, Recorder, ScriptedProvider]) -> None:
    engine, recorder, _ = observed
    origin = TurnOrigin(transport="websocket", request_bytes=10)
    with pytest.raises(ProtocolError):
        await engine.create(request(previous_response_id="resp_missing"), tenant=TENANT, origin=origin)
    assert ("rejected", ("previous_response_not_found", "websocket", "default", "scripted")) in recorder.seen
    keyed = request(input=[user("once")], **{"tether:idempotency_key": "k"})
    live = await engine.create(keyed, tenant=TENANT)
    again = await engine.create(request(input=[user("once")], **{"tether:idempotency_key": "k"}), tenant=TENANT)
    assert again is live
    await events_of(engine, live)
    await engine.attach(TENANT, live.response_id, after=0)
    assert ("replay", "live") in recorder.seen
    assert ("resumed", live.response_id) in recorder.seen


async def test_upstream_headers_reach_the_provider(gated: GatedProvider) -> None:
    engine = Engine(MemoryStore(), ProviderRouter({"scripted": gated}), observer=Recorder())
    gated.gate.set()
    await events_of(engine, await engine.create(request(input=[user("x")]), tenant=TENANT))
    await engine.aclose()
    (sent,) = gated.requests
    assert sent.trace_headers == {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
