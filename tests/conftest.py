"""Fixtures shared by every test folder: real tether servers on 127.0.0.1."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings

ServerFactory = Callable[..., RunningServer]

# Hypothesis's timing checks (deadline, too_slow) measure the machine, not the code: on a shared 2-core CI they
# fail tests whose properties hold. Property tests keep their example counts; only the clocks are off.
settings.register_profile(
    "tether", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors]
)
settings.load_profile("tether")


@pytest.fixture(autouse=True)
def _collect_garbage_after_the_test() -> Iterator[None]:
    """Collect garbage once the test's other fixtures (its event loop among them) are torn down.

    A socket, transport or event loop a test leaves unclosed in a reference cycle is otherwise finalized whenever the
    collector next runs, and its ResourceWarning (an error here: ``filterwarnings = error``) fails an innocent later
    test. Collected here, it fails the teardown of the test that leaked it.
    """
    yield
    gc.collect()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start real servers (uvicorn in a thread, SQLite in tmp_path); keyword arguments override Settings fields."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> RunningServer:
            overrides.setdefault("store_url", f"sqlite:///{tmp_path / 'tether.db'}")
            overrides.setdefault("log_level", "warning")
            return stack.enter_context(serve_in_thread(Settings(**overrides)))

        yield start


@pytest.fixture
def server(make_server: ServerFactory) -> RunningServer:
    """A server with default settings."""
    return make_server()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Exempt what collection built (modules, strategies, parameters) from the collections after each test below:
    without it each full collection walks them all again, which doubled the time of tests/engine and tests/store."""
    gc.collect()
    gc.freeze()
