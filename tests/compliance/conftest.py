"""One real ``tether serve`` process for the whole compliance folder."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from openai import AsyncOpenAI, OpenAI

from tether.testing import ServeProcess, serve_subprocess

from .support import API_KEY, SCRIPTS, TENANT

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
SERVER_FAULT = re.compile(r"Traceback|\[(?:error|critical)\s*\]", re.IGNORECASE)


@pytest.fixture(scope="session")
def tether_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``tether serve`` with the compliance scripts loaded and one API key required."""
    workdir = tmp_path_factory.mktemp("tether-compliance")
    scripts_file = workdir / "scripts.json"
    scripts_file.write_text(json.dumps({"scripts": SCRIPTS}))
    env = {
        "TETHER_SCRIPTED__SCRIPTS_FILE": str(scripts_file),
        "TETHER_API_KEYS": json.dumps({API_KEY: TENANT}),
        "TETHER_LOG_LEVEL": "warning",
    }
    with serve_subprocess(workdir, env) as server:
        yield server
    log = ANSI_ESCAPE.sub("", server.log())
    assert SERVER_FAULT.search(log) is None, f"the server logged a fault during the compliance run:\n{log}"


@pytest.fixture
def client(tether_server: ServeProcess) -> Iterator[OpenAI]:
    """The official sync SDK, validating every body and event strictly, with no retries to hide errors."""
    with OpenAI(
        api_key=API_KEY, base_url=tether_server.base_url, max_retries=0, _strict_response_validation=True
    ) as sdk:
        yield sdk


@pytest.fixture
async def async_client(tether_server: ServeProcess) -> AsyncIterator[AsyncOpenAI]:
    """The official async SDK (WebSocket mode and async HTTP), strict, with no retries."""
    async with AsyncOpenAI(
        api_key=API_KEY, base_url=tether_server.base_url, max_retries=0, _strict_response_validation=True
    ) as sdk:
        yield sdk
