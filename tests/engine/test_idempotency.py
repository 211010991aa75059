"""Idempotency in process: a turn retried with the same key is answered from its log, never generated twice."""

from __future__ import annotations

import asyncio

from tether.engine.engine import Engine, EngineLimits
from tether.providers.router import ProviderRouter
from tether.providers.scripted import ScriptedProvider, ScriptedTiming
from tether.store.memory import MemoryStore

from .support import TENANT, GatedProvider, events_of, request, run, terminal

KEY = {"tether:idempotency_key": "turn-1"}


def restarted(store: MemoryStore) -> Engine:
    return Engine(store, ProviderRouter({"scripted": ScriptedProvider(ScriptedTiming())}), EngineLimits())


async def test_a_retry_after_the_end_replays_the_same_events(engine: Engine) -> None:
    first = await run(engine, input="hello", **KEY)
    again = await run(engine, input="hello", **KEY)
    assert again == first
    assert (engine.stats.generations, engine.stats.idempotent_replays) == (1, 1)


async def test_a_retry_while_generating_follows_the_original(engine: Engine, gated: GatedProvider) -> None:
    original = await engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    retry = await engine.create(request(model="gated", input="hi", **KEY), tenant=TENANT)
    assert retry is original
    followers = [asyncio.create_task(events_of(engine, live)) for live in (original, retry)]
    gated.gate.set()
    first, second = await asyncio.wait_for(asyncio.gather(*followers), 10)
    assert first == second
    assert terminal(first)["status"] == "completed"
    assert len(gated.requests) == 1
    assert engine.stats.generations == 1


async def test_a_retry_after_a_restart_is_replayed_from_the_store(engine: Engine, store: MemoryStore) -> None:
    first = await run(engine, input="hello", **KEY)
    fresh = restarted(store)
    again = await run(fresh, input="hello", **KEY)
    assert again == first
    assert (fresh.stats.generations, fresh.stats.idempotent_replays) == (0, 1)


async def test_keys_belong_to_their_tenant(engine: Engine) -> None:
    mine = terminal(await run(engine, input="hello", **KEY))
    live = await engine.create(request(input="hello", **KEY), tenant="bob")
    theirs = terminal(await events_of(engine, live))
    assert theirs["id"] != mine["id"]
    assert engine.stats.generations == 2


async def test_a_store_false_key_lives_in_memory_only(engine: Engine, store: MemoryStore) -> None:
    first = terminal(await run(engine, input="hello", store=False, **KEY))
    assert terminal(await run(engine, input="hello", store=False, **KEY))["id"] == first["id"]
    fresh = restarted(store)
    assert terminal(await run(fresh, input="hello", store=False, **KEY))["id"] != first["id"]
    assert fresh.stats.generations == 1
