"""The shaping proxy over real sockets: exact forwarding, rate, delay, seeded loss, counters, backpressure."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from tether.netem import PROFILES, Direction, NetworkProfile, ShapingProxy, mbit
from tether.netem.shaping import HEADER_BYTES

from .support import Servers, Sink, close, connect, read_until_closed, sender, wait_until


async def write_in_random_chunks(writer: asyncio.StreamWriter, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    position = 0
    while position < len(data):
        size = rng.choice([1, 7, 100, 1459, 1460, 1461, 5000, 40_000])
        writer.write(data[position : position + size])
        await writer.drain()
        if rng.random() < 0.1:
            await asyncio.sleep(0.001)
        position += size
    writer.write_eof()


LOSSY = NetworkProfile("lossy", rtt_s=0.01, loss=0.02, jitter_s=0.005)


@pytest.mark.parametrize("profile", [PROFILES["loopback"], LOSSY], ids=lambda p: p.name)
async def test_bytes_arrive_exactly_both_ways(echo_port: int, profile: NetworkProfile) -> None:
    payload = os.urandom(150_000)
    async with ShapingProxy("127.0.0.1", echo_port, profile, seed=5) as proxy:
        reader, writer = await connect(proxy.port)
        writing = asyncio.create_task(write_in_random_chunks(writer, payload, seed=9))
        received, error = await read_until_closed(reader, within=20)
        await writing
        await close(writer)
    assert error is None
    assert received == payload


async def test_rate_limit_slows_an_upload(servers: Servers) -> None:
    sink = Sink()
    port = await servers.start(sink)
    profile = NetworkProfile("slow-up", up_bps=256_000)
    async with ShapingProxy("127.0.0.1", port, profile) as proxy:
        _, writer = await connect(proxy.port)
        started = time.monotonic()
        writer.write(bytes(64 * 1024))
        writer.write_eof()
        await asyncio.wait_for(sink.done.wait(), 10)
        elapsed = time.monotonic() - started
        await close(writer)
    assert len(sink.received) == 64 * 1024
    assert elapsed >= 1.5, "64 KiB at 256 kbit/s takes about 2.1 s with headers"


async def test_rate_limit_slows_a_download(servers: Servers) -> None:
    port = await servers.start(sender(bytes(64 * 1024)))
    profile = NetworkProfile("slow-down", down_bps=256_000, up_bps=mbit(100))
    async with ShapingProxy("127.0.0.1", port, profile) as proxy:
        reader, writer = await connect(proxy.port)
        started = time.monotonic()
        received = await reader.readexactly(64 * 1024)
        elapsed = time.monotonic() - started
        await close(writer)
    assert len(received) == 64 * 1024
    assert elapsed >= 1.5


async def test_each_round_trip_costs_at_least_one_rtt(echo_port: int) -> None:
    rtt = 0.15
    async with ShapingProxy("127.0.0.1", echo_port, NetworkProfile("far", rtt_s=rtt)) as proxy:
        started = time.monotonic()
        reader, writer = await connect(proxy.port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(4):
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
        four = time.monotonic() - started
        await close(writer)
    assert first >= 2 * rtt * 0.95, "the handshake's RTT, then the exchange's"
    assert four >= 4 * rtt * 0.95


async def loss_pattern(port: int, seed: int) -> dict[Direction, list[int]]:
    profile = NetworkProfile("lossy", loss=0.1)
    async with ShapingProxy("127.0.0.1", port, profile, seed=seed) as proxy:
        _, writer = await connect(proxy.port)
        await write_in_random_chunks(writer, bytes(30_000), seed=seed)
        await wait_until(lambda: proxy.stats.bytes_up == 30_000, within=10)
        await close(writer)
        return proxy.connections[0].stalled_packets


async def test_loss_decisions_are_seeded(servers: Servers) -> None:
    port = await servers.start(Sink())
    first, again, other = [await loss_pattern(port, seed) for seed in (11, 11, 12)]
    assert first == again
    assert first[Direction.UP], "21 packets at 10 % loss: seed 11 stalls some"
    assert first != other


async def test_counters(echo_port: int) -> None:
    async with ShapingProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await connect(proxy.port)
        writer.write(bytes(10_000))
        await reader.readexactly(10_000)
        await close(writer)
        await wait_until(lambda: proxy.stats.connections_closed == 1)
        stats = proxy.stats.snapshot()
        connection = proxy.connections[0]
    assert (stats.bytes_up, stats.bytes_down) == (10_000, 10_000)
    assert (stats.up.packets, stats.down.packets) == (7, 7), "10,000 bytes are 7 packets of at most 1460"
    assert stats.up.wire_bytes == 10_000 + 7 * HEADER_BYTES
    assert (stats.connections_opened, stats.connections_closed, stats.resets_injected) == (1, 1, 0)
    assert (connection.bytes_up, connection.bytes_down) == (10_000, 10_000)
    assert connection.closed_at is not None
    assert connection.closed_at >= connection.opened_at
    assert connection.fault is None


async def test_each_connection_is_counted(echo_port: int) -> None:
    async with ShapingProxy("127.0.0.1", echo_port) as proxy:
        for size in (10, 20, 30):
            reader, writer = await connect(proxy.port)
            writer.write(bytes(size))
            await reader.readexactly(size)
            await close(writer)
        await wait_until(lambda: proxy.live_connections == 0)
    assert [c.bytes_up for c in proxy.connections] == [10, 20, 30]
    assert [c.id for c in proxy.connections] == [0, 1, 2]
    assert proxy.stats.connections_opened == proxy.stats.connections_closed == 3
    assert proxy.stats.bytes_down == 60


async def test_a_slow_reader_pushes_back_instead_of_filling_memory(servers: Servers) -> None:
    written = 0
    blocked = asyncio.Event()

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        chunk = bytes(256 * 1024)
        for _ in range(256):  # 64 MiB, far beyond every buffer on the way
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                blocked.set()
                await reader.read()
                return
            written += len(chunk)

    port = await servers.start(firehose)
    async with ShapingProxy("127.0.0.1", port, max_queue_bytes=64 * 1024) as proxy:
        _, writer = await connect(proxy.port)
        await asyncio.wait_for(blocked.wait(), 20)
        await close(writer)
    assert written < 32 * 1024 * 1024, "without backpressure all 64 MiB would be taken in"


async def test_a_refused_upstream_resets_the_client(servers: Servers) -> None:
    port = await servers.start(Sink())
    await servers.aclose()
    async with ShapingProxy("127.0.0.1", port) as proxy:
        reader, writer = await connect(proxy.port)
        received, _ = await read_until_closed(reader, within=5)
        await close(writer)
        await wait_until(lambda: proxy.live_connections == 0)
    assert received == b""
    assert proxy.stats.resets_injected == 0


async def test_profiles_by_name_and_the_record(echo_port: int) -> None:
    async with ShapingProxy("127.0.0.1", echo_port, "3g", seed=4) as proxy:
        assert proxy.profile is PROFILES["mobile-3g"], "an old name is an alias"
        record = proxy.record.as_dict()
    assert record["tier"] == "proxy"
    assert record["seed"] == 4
    assert record["mechanisms"] == {
        "delay": "proxy", "rate": "proxy", "loss": "proxy", "outages": "none", "bursts": "none",
    }  # fmt: skip
    assert ShapingProxy("127.0.0.1", 1).record.mechanisms["delay"] == "none"


async def test_port_needs_a_started_proxy() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = ShapingProxy("127.0.0.1", 1).port
