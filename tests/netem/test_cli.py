"""``python -m tether.netem``: the proxy as a process."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from .support import close, connect


async def test_the_proxy_runs_as_a_process(echo_port: int) -> None:
    profile = json.dumps({"name": "cli", "rtt_s": 0.1})
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tether.netem", "--upstream", f"127.0.0.1:{echo_port}", "--profile-json", profile],
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    word, address = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().split()
    assert word == "listening"
    started = time.monotonic()
    reader, writer = await connect(int(address.rpartition(":")[2]))
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    elapsed = time.monotonic() - started
    await close(writer)
    process.terminate()
    output, _ = await asyncio.wait_for(process.communicate(), 10)
    summary = json.loads(output.splitlines()[-1])
    assert process.returncode == 0
    assert elapsed >= 0.19, "the handshake's RTT and the exchange's"
    assert (summary["bytes_up"], summary["bytes_down"]) == (4, 4)
    assert summary["record"]["tier"] == "proxy"
