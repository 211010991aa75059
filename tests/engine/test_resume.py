"""The resume rule, in process: a resume ends in the terminal event or in ``nothing_to_resume``, never in silence."""

from __future__ import annotations

import asyncio

import pytest

from tether.engine.engine import Engine
from tether.protocol.errors import ProtocolError

from .support import TENANT, GatedProvider, events_of, request, run


async def test_a_finished_response_resumes_after_any_earlier_sequence_number(engine: Engine) -> None:
    events = await run(engine, input="hello")
    response_id, last = events[0]["response"]["id"], events[-1]["sequence_number"]
    for after in (None, -1, 0, last - 1):
        live = await engine.attach(TENANT, response_id, after=after)
        start = -1 if after is None else after
        assert await events_of(engine, live, start) == events[start + 1 :]


@pytest.mark.parametrize("past", [0, 1, 50])
async def test_a_finished_response_has_nothing_after_its_last_event(engine: Engine, past: int) -> None:
    events = await run(engine, input="hello")
    last = events[-1]["sequence_number"]
    with pytest.raises(ProtocolError) as raised:
        await engine.attach(TENANT, events[0]["response"]["id"], after=last + past)
    assert (raised.value.code, raised.value.param, raised.value.status) == ("nothing_to_resume", "starting_after", 400)


async def test_a_live_response_that_ends_before_the_asked_for_number_ends_the_resume_with_the_error(
    engine: Engine, gated: GatedProvider
) -> None:
    live = await engine.create(request(model="gated", input="hi"), tenant=TENANT)
    resumed = await engine.attach(TENANT, live.response_id, after=1000)
    follower = asyncio.create_task(events_of(engine, resumed, 1000))
    gated.gate.set()
    with pytest.raises(ProtocolError) as raised:
        await asyncio.wait_for(follower, 10)
    assert raised.value.code == "nothing_to_resume"


async def test_a_live_response_resumed_inside_its_log_yields_the_rest(engine: Engine, gated: GatedProvider) -> None:
    live = await engine.create(request(model="gated", input="hi"), tenant=TENANT)
    resumed = await engine.attach(TENANT, live.response_id, after=0)
    follower = asyncio.create_task(events_of(engine, resumed, 0))
    gated.gate.set()
    tail = await asyncio.wait_for(follower, 10)
    assert [event["sequence_number"] for event in tail] == list(range(1, len(tail) + 1))
    assert tail[-1]["type"] == "response.completed"


async def test_unknown_and_other_tenants_responses_are_not_found(engine: Engine) -> None:
    events = await run(engine, input="hello")
    for tenant, response_id in (("bob", events[0]["response"]["id"]), (TENANT, "resp_unknown")):
        with pytest.raises(ProtocolError) as raised:
            await engine.attach(tenant, response_id, after=None)
        assert raised.value.code == "response_not_found"
