"""Background mode in process: answered at once, generated with nobody following, polled, cancelled, committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import cast

import pytest

from tether.engine.engine import Engine, EngineLimits
from tether.protocol.errors import ProtocolError
from tether.protocol.events import StreamEvent
from tether.protocol.request import CreateRequest
from tether.providers.router import ProviderRouter, Route
from tether.store.memory import MemoryStore

from .support import TENANT, GatedProvider, events_of, request, terminal

BOUND_S = 30.0


def background(**fields: object) -> CreateRequest:
    return request(model="gated", input="hi", background=True, **fields)


async def refusal(engine: Engine, response_id: str, tenant: str = TENANT) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        await engine.cancel(tenant, response_id)
    return refused.value


async def test_a_background_create_answers_queued_and_generates_with_nobody_following(
    engine: Engine, gated: GatedProvider, store: MemoryStore
) -> None:
    live = await engine.create(background(), tenant=TENANT)
    answer = await engine.started(live)
    assert (answer["status"], answer["background"], answer["output"]) == ("queued", True, [])
    assert "tether:resume_token" not in answer

    await gated.arrived(1)
    polled = await engine.get_response(TENANT, live.response_id)
    assert (polled["id"], polled["status"], polled["background"]) == (live.response_id, "in_progress", True)

    gated.gate.set()
    await asyncio.wait_for(live.log.ended(), BOUND_S)
    done = await engine.get_response(TENANT, live.response_id)
    assert (done["status"], done["background"]) == ("completed", True)
    assert done["output"][0]["content"][0]["text"] == "ok"
    record = await store.get(TENANT, live.response_id)
    assert record is not None
    assert record.status == "completed"


async def test_cancel_ends_a_running_background_response_cancelled_and_commits_it(
    engine: Engine, gated: GatedProvider, store: MemoryStore
) -> None:
    live = await engine.create(background(), tenant=TENANT)
    following = asyncio.create_task(events_of(engine, live))
    await gated.arrived(1)

    cancelled = await asyncio.wait_for(engine.cancel(TENANT, live.response_id), BOUND_S)
    assert (cancelled["status"], cancelled["background"]) == ("cancelled", True)
    events = await asyncio.wait_for(following, BOUND_S)
    assert terminal(events)["status"] == "cancelled"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    record = await store.get(TENANT, live.response_id)
    assert record is not None
    assert record.status == "cancelled"
    assert (await engine.get_response(TENANT, live.response_id))["status"] == "cancelled"
    assert (await engine.cancel(TENANT, live.response_id))["status"] == "cancelled"  # again: the same answer
    with pytest.raises(ProtocolError, match="not found"):  # a cancelled response is not continuable
        await engine.create(request(input="more", previous_response_id=live.response_id), tenant=TENANT)


async def test_cancel_while_queued_never_reaches_the_model(engine: Engine, gated: GatedProvider) -> None:
    live = await engine.create(background(), tenant=TENANT)
    cancelled = await engine.cancel(TENANT, live.response_id)  # in this task: before the turn's first step
    assert cancelled["status"] == "cancelled"
    assert gated.requests == []


async def test_what_cannot_be_cancelled_gets_openais_answers(engine: Engine, gated: GatedProvider) -> None:
    gated.gate.set()
    finished = await engine.create(background(), tenant=TENANT)
    await events_of(engine, finished)
    refused = await refusal(engine, finished.response_id)
    assert (refused.status, refused.code, refused.message) == (
        400,
        "response_not_cancellable",
        "Cannot cancel a completed response.",
    )
    assert refused.error_type == "invalid_request_error"

    synchronous = await engine.create(request(input="hi"), tenant=TENANT)
    await events_of(engine, synchronous)
    assert (await refusal(engine, synchronous.response_id)).message == "Cannot cancel a synchronous response."
    assert (await engine.get_response(TENANT, synchronous.response_id))["background"] is False


async def test_a_synchronous_response_in_flight_is_not_cancelled(engine: Engine, gated: GatedProvider) -> None:
    live = await engine.create(request(model="gated", input="hi"), tenant=TENANT)
    following = asyncio.create_task(events_of(engine, live))
    await gated.arrived(1)
    assert (await refusal(engine, live.response_id)).message == "Cannot cancel a synchronous response."
    gated.gate.set()
    assert terminal(await asyncio.wait_for(following, BOUND_S))["status"] == "completed"


async def test_unknown_and_other_tenants_ids_answer_alike(engine: Engine, gated: GatedProvider) -> None:
    live = await engine.create(background(), tenant=TENANT)
    await gated.arrived(1)
    theirs = await refusal(engine, live.response_id, tenant="mallory")
    unknown = await refusal(engine, "resp_0123456789abcdef0123456789abcdef")
    assert (theirs.status, theirs.code, theirs.param) == (unknown.status, unknown.code, unknown.param)
    assert (theirs.status, theirs.code) == (404, "response_not_found")
    with pytest.raises(ProtocolError, match="not found"):
        await engine.get_response("mallory", live.response_id)
    gated.gate.set()
    assert terminal(await asyncio.wait_for(events_of(engine, live), BOUND_S))["status"] == "completed"


async def test_no_follower_leaving_cancels_a_background_response(store: MemoryStore, gated: GatedProvider) -> None:
    router = ProviderRouter({"gated": gated}, [Route("gated", "gated")], default="gated")
    engine = Engine(store, router, EngineLimits(shutdown_grace_s=0.0, continue_on_disconnect=False))
    try:
        live = await engine.create(background(stream=True), tenant=TENANT)
        events = cast(AsyncGenerator[StreamEvent, None], engine.follow(live))  # an async generator, to close
        await anext(events)  # the client reads the first event and goes away
        await events.aclose()
        await gated.arrived(1)
        gated.gate.set()
        await asyncio.wait_for(live.log.ended(), BOUND_S)
        assert (await engine.get_response(TENANT, live.response_id))["status"] == "completed"
    finally:
        await engine.aclose()


async def test_a_retried_background_create_answers_the_original_as_it_stands(
    engine: Engine, gated: GatedProvider
) -> None:
    key = {"tether:idempotency_key": "once"}
    gated.gate.set()
    original = await engine.create(background(**key), tenant=TENANT)
    await asyncio.wait_for(original.log.ended(), BOUND_S)

    retried = await engine.create(background(**key), tenant=TENANT)
    answer = await engine.started(retried)
    assert (answer["id"], answer["status"]) == (original.response_id, "completed")
    assert engine.stats.generations == 1


async def test_a_background_response_in_flight_is_not_deleted_but_said_to_be_in_progress(
    engine: Engine, gated: GatedProvider, store: MemoryStore
) -> None:
    """DELETE answered 404 while GET showed it in_progress, and the response was stored when it ended all the same."""
    live = await engine.create(background(), tenant=TENANT)
    await gated.arrived(1)
    with pytest.raises(ProtocolError) as refused:
        await engine.delete_response(TENANT, live.response_id)
    error = refused.value
    assert (error.status, error.code, error.param) == (409, "response_in_progress", "response_id")
    assert f"/v1/responses/{live.response_id}/cancel" in error.message
    with pytest.raises(ProtocolError) as theirs:  # another tenant's is unknown, as everywhere
        await engine.delete_response("mallory", live.response_id)
    assert (theirs.value.status, theirs.value.code) == (404, "response_not_found")

    await engine.cancel(TENANT, live.response_id)
    await asyncio.wait_for(live.log.ended(), BOUND_S)
    assert (await engine.delete_response(TENANT, live.response_id))["deleted"] is True
    assert await store.get(TENANT, live.response_id) is None
    with pytest.raises(ProtocolError, match="not found"):
        await engine.get_response(TENANT, live.response_id)
