from __future__ import annotations

import pytest

from .backends import BACKENDS, Backend, backend_or_skip


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each store in turn: memory, SQLite, PostgreSQL, Redis."""
    name: str = request.param
    return backend_or_skip(name)
