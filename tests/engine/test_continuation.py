"""The continuation rules, in process (design.md, "Continuation rules"): where ``previous_response_id`` resolves,
``store=false`` isolation, eviction on a failed continuation, call ids, forks and ``generate: false``."""

from __future__ import annotations

import pytest

from tether.engine.cache import ConnectionState
from tether.engine.engine import Engine, EngineLimits
from tether.engine.observer import Resolution
from tether.protocol.errors import ProtocolError
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import ScriptedProvider, ScriptedTiming
from tether.store.memory import MemoryStore
from tether.types import JSONObject

from .support import TENANT, GatedProvider, call, call_output, events_of, request, run, terminal, texts, user


async def on_lane(
    engine: Engine, connection: ConnectionState, lane: str | None = None, **fields: object
) -> list[JSONObject]:
    live = await engine.create(request(**fields), tenant=TENANT, connection=connection, lane=lane)
    return await events_of(engine, live)


async def refused(engine: Engine, connection: ConnectionState | None = None, lane: str | None = None,
                  tenant: str = TENANT, **fields: object) -> ProtocolError:  # fmt: skip
    with pytest.raises(ProtocolError) as raised:
        await engine.create(request(**fields), tenant=tenant, connection=connection, lane=lane)
    return raised.value


async def sampled_by(engine: Engine, gated: GatedProvider, **fields: object) -> list[str]:
    """The texts of the context the model was given for one turn."""
    gated.gate.set()
    await run(engine, model="gated", **fields)
    return texts(gated.requests[-1].context)


# -- rule 1: lane cache, then hot cache, then the durable store ----------------------------------------------------


async def test_a_continuation_samples_the_parent_context_its_output_and_the_new_input(
    engine: Engine, gated: GatedProvider
) -> None:
    first = terminal(await run(engine, input="one"))
    assert await sampled_by(engine, gated, input="two", previous_response_id=first["id"]) == ["one", "one", "two"]


async def test_the_parent_is_found_on_the_lane_then_in_the_hot_cache_then_in_the_store(store: MemoryStore) -> None:
    engine = Engine(store, ProviderRouter({"scripted": ScriptedProvider(ScriptedTiming())}))
    connection = engine.connect(TENANT)
    first = terminal(await on_lane(engine, connection, input="one"))
    parent = request(input="two", previous_response_id=first["id"])
    assert (await engine.continuations.parent(parent, TENANT, connection))[1] is Resolution.LANE
    assert (await engine.continuations.parent(parent, TENANT, None))[1] is Resolution.HOT_CACHE
    restarted = Engine(store, ProviderRouter({"scripted": ScriptedProvider(ScriptedTiming())}))
    entry, resolution = await restarted.continuations.parent(parent, TENANT, None)
    assert resolution is Resolution.STORE
    assert entry is not None
    assert texts(entry.context.items) == ["one", "one"]
    assert (await restarted.continuations.parent(parent, TENANT, None))[1] is Resolution.HOT_CACHE


async def test_an_unknown_id_and_another_tenants_id_are_the_same_miss(engine: Engine) -> None:
    first = terminal(await run(engine, input="mine"))
    unknown = await refused(engine, input="x", previous_response_id="resp_unknown")
    foreign = await refused(engine, tenant="bob", input="x", previous_response_id=first["id"])
    for error in (unknown, foreign):
        assert (error.status, error.code, error.param) == (400, "previous_response_not_found", "previous_response_id")


async def test_a_failed_response_cannot_be_continued(engine: Engine) -> None:
    failed = terminal(await run(engine, model="fail", input="x"))
    assert failed["status"] == "failed"
    error = await refused(engine, input="y", previous_response_id=failed["id"])
    assert error.code == "previous_response_not_found"


# -- rule 2: store=false state lives only in its connection --------------------------------------------------------


async def test_store_false_is_found_only_on_its_own_connection(engine: Engine, store: MemoryStore) -> None:
    mine, other = engine.connect(TENANT), engine.connect(TENANT)
    first = terminal(await on_lane(engine, mine, input="secret", store=False))
    assert await store.get(TENANT, first["id"]) is None
    for connection in (other, None):
        error = await refused(engine, connection, input="x", previous_response_id=first["id"], store=False)
        assert error.code == "previous_response_not_found"
    second = terminal(await on_lane(engine, mine, input="more", previous_response_id=first["id"], store=False))
    assert second["status"] == "completed"


async def test_store_false_state_dies_with_its_connection(engine: Engine) -> None:
    connection = engine.connect(TENANT)
    first = terminal(await on_lane(engine, connection, input="secret", store=False))
    connection.clear()
    error = await refused(engine, connection, input="x", previous_response_id=first["id"], store=False)
    assert error.code == "previous_response_not_found"


async def test_a_store_false_child_of_a_stored_parent_stays_off_the_hot_cache(engine: Engine) -> None:
    connection = engine.connect(TENANT)
    stored = terminal(await on_lane(engine, connection, input="kept"))
    child = terminal(await on_lane(engine, connection, input="off", previous_response_id=stored["id"], store=False))
    assert engine.hot.get(TENANT, stored["id"]) is not None
    assert engine.hot.get(TENANT, child["id"]) is None


# -- rule 3: a failed continuation evicts the id it referenced from that lane only -------------------------------


async def test_a_continuation_refused_on_a_lane_evicts_its_parent_from_that_lane(engine: Engine) -> None:
    connection = engine.connect(TENANT)
    first = terminal(await on_lane(engine, connection, "a", input="one", store=False))
    terminal(await on_lane(engine, connection, "b", input="other lane", store=False))
    bad = await refused(engine, connection, "a", input=[call_output("call_nope")],
                        previous_response_id=first["id"], store=False)  # fmt: skip
    assert bad.code == "function_call_not_found"
    assert connection.find(first["id"]) is None
    again = await refused(engine, connection, "a", input="retry", previous_response_id=first["id"], store=False)
    assert again.code == "previous_response_not_found"


async def test_eviction_is_per_lane_and_a_stored_parent_stays_reachable(engine: Engine) -> None:
    connection = engine.connect(TENANT)
    first = terminal(await on_lane(engine, connection, "a", input="one"))
    await refused(engine, connection, "b", input=[call_output("call_nope")], previous_response_id=first["id"])
    assert connection.find(first["id"]) is not None  # lane b never held it: lane a keeps it
    await refused(engine, connection, "a", input=[call_output("call_nope")], previous_response_id=first["id"])
    assert connection.find(first["id"]) is None
    retry = terminal(await on_lane(engine, connection, "a", input="retry", previous_response_id=first["id"]))
    assert retry["status"] == "completed"  # found again through the hot cache


async def test_a_continuation_that_fails_while_generating_evicts_its_parent(engine: Engine) -> None:
    connection = engine.connect(TENANT)
    first = terminal(await on_lane(engine, connection, input="one", store=False))
    fields = {"model": "fail", "input": "x", "previous_response_id": first["id"], "store": False}
    failed = terminal(await on_lane(engine, connection, **fields))
    assert failed["status"] == "failed"
    assert connection.find(first["id"]) is None


# -- rule 4: every function_call_output answers an earlier function_call -----------------------------------------


async def test_a_call_output_may_answer_a_call_in_the_parent_or_earlier_in_the_same_input(
    engine: Engine, gated: GatedProvider
) -> None:
    first = terminal(await run(engine, input=[user("go"), call("call_1")]))
    assert await sampled_by(engine, gated, input=[call_output("call_1")], previous_response_id=first["id"]) == [
        "go",
        "go",
    ]
    same_input = terminal(await run(engine, input=[user("go"), call("call_2"), call_output("call_2")]))
    assert same_input["status"] == "completed"


@pytest.mark.parametrize(
    "items",
    [
        [call_output("call_9")],
        [user("go"), call_output("call_9"), call("call_9")],  # the answer comes before its call
    ],
)
async def test_an_orphan_call_output_is_refused_naming_it(engine: Engine, items: list[object]) -> None:
    error = await refused(engine, input=items)
    index = next(i for i, item in enumerate(items) if isinstance(item, dict) and item["type"] == "function_call_output")
    assert (error.code, error.param) == ("function_call_not_found", f"input[{index}].call_id")


# -- forks ---------------------------------------------------------------------------------------------------------


async def test_forks_of_one_parent_each_see_only_their_own_branch(engine: Engine, gated: GatedProvider) -> None:
    root = terminal(await run(engine, input="root"))
    left = terminal(await run(engine, input="left", previous_response_id=root["id"]))
    right = terminal(await run(engine, input="right", previous_response_id=root["id"]))
    assert await sampled_by(engine, gated, input="l2", previous_response_id=left["id"]) == [
        "root", "root", "left", "left", "l2",
    ]  # fmt: skip
    assert await sampled_by(engine, gated, input="r2", previous_response_id=right["id"]) == [
        "root", "root", "right", "right", "r2",
    ]  # fmt: skip


async def test_a_fork_from_the_store_after_a_restart_sees_the_same_branch(store: MemoryStore) -> None:
    def fresh() -> tuple[Engine, GatedProvider]:
        gated = GatedProvider()
        gated.gate.set()
        router = ProviderRouter({"scripted": ScriptedProvider(ScriptedTiming()), "gated": gated},
                                [Route("gated", "gated")])  # fmt: skip
        return Engine(store, router, EngineLimits(snapshot_every=2)), gated

    engine, _ = fresh()
    ids = [terminal(await run(engine, input="t0"))["id"]]
    for n in range(1, 5):
        ids.append(terminal(await run(engine, input=f"t{n}", previous_response_id=ids[-1]))["id"])
    restarted, gated = fresh()
    await run(restarted, model="gated", input="fork", previous_response_id=ids[2])
    assert texts(gated.requests[-1].context) == ["t0", "t0", "t1", "t1", "t2", "t2", "fork"]


# -- generate: false -----------------------------------------------------------------------------------------------


async def test_generate_false_warms_the_context_without_calling_the_model(engine: Engine, gated: GatedProvider) -> None:
    first = terminal(await run(engine, input="one"))
    warm = terminal(await run(engine, model="gated", input="two", previous_response_id=first["id"], generate=False))
    assert gated.requests == []
    assert warm["status"] == "completed"
    assert warm["output"] == []
    usage = warm["usage"]
    assert usage["output_tokens"] == 0
    assert 0 < usage["input_tokens_details"]["cached_tokens"] < usage["input_tokens"]
    assert await sampled_by(engine, gated, input="three", previous_response_id=warm["id"]) == [
        "one", "one", "two", "three",
    ]  # fmt: skip
