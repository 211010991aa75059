"""Fixtures: upstream servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .support import Servers, echo


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """Start upstream servers on 127.0.0.1 with ``await servers.start(handler)``."""
    started = Servers()
    yield started
    await started.aclose()


@pytest.fixture
async def echo_port(servers: Servers) -> int:
    """Port of an echo server."""
    return await servers.start(echo)
