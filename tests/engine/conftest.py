"""An engine in process: a real memory store, the scripted model, and a gated model (model name ``gated``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tether.engine.engine import Engine, EngineLimits
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import ScriptedProvider, ScriptedTiming
from tether.store.memory import MemoryStore

from .support import GatedProvider


@pytest.fixture
def gated() -> GatedProvider:
    return GatedProvider()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def engine(store: MemoryStore, gated: GatedProvider) -> AsyncIterator[Engine]:
    router = ProviderRouter({"scripted": ScriptedProvider(ScriptedTiming()), "gated": gated}, [Route("gated", "gated")])
    engine = Engine(store, router, EngineLimits(shutdown_grace_s=0.0))
    yield engine
    await engine.aclose()
