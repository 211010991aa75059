"""A real agent process killed mid-turn (SIGKILL): a new process continues from the journal, without a second
generation and without losing the turn."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tether.client import AsyncSession, PendingTurnError
from tether.server.runner import RunningServer

from .support import TEST_TIMEOUT_S, Recorder, long_message, stored_response_count

AGENT = """
import asyncio, sys
from tether.client import AsyncSession, TextDelta

async def main(base_url: str, journal: str, message: str) -> None:
    async with AsyncSession(base_url, model="echo", journal=journal, session_id="agent") as session:
        async for delta in session.stream(message):
            if isinstance(delta, TextDelta):
                print("first delta", flush=True)
                await asyncio.sleep(60)  # killed here

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_killed_agent_continues_from_its_journal(slow_server: RunningServer, tmp_path: Path) -> None:
    journal = tmp_path / "agent.journal"
    message = long_message()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT, slow_server.base_url, str(journal), message, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            assert process.stdout is not None
            assert await process.stdout.readline() == b"first delta\n"
    finally:
        process.kill()
        await process.wait()

    recorder = Recorder()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        AsyncSession(
            slow_server.base_url, journal=journal, session_id="agent", on_request=recorder.on_request
        ) as session,
    ):
        pending = session.pending
        assert pending is not None
        assert pending.response_id is not None  # journaled before the first delta reached the agent
        with pytest.raises(PendingTurnError):
            await session.send("something else")
        result = await session.recover()
        assert result is not None
        assert result.response_id == pending.response_id
        assert result.text == message
        assert session.last_response_id == result.response_id
        assert (await session.send("and then?")).text == "and then?"

    assert stored_response_count(tmp_path / "tether.db") == 2  # the killed turn ran once, plus the next one
    assert recorder.requests[0].body is not None
    assert recorder.requests[0].body["type"] == "tether:response.resume"
