"""Faults over real sockets: reset, blackhole, half-close, byte-exact cuts, schedules, outages."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import time

import pytest

from tether.netem import AtTime, Direction, Fault, FaultMode, FaultSchedule, NetworkProfile, ShapingProxy

from .support import Servers, Sink, close, connect, read_until_closed, sender, wait_until


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes = b"hello", *, within: float = 5.0
) -> None:
    writer.write(message)
    assert await asyncio.wait_for(reader.readexactly(len(message)), within) == message


async def test_rst_resets_both_sides_promptly(servers: Servers) -> None:
    upstream = Sink()
    port = await servers.start(upstream)
    async with ShapingProxy("127.0.0.1", port) as proxy:
        reader, writer = await connect(proxy.port)
        writer.write(b"request")
        await wait_until(lambda: bytes(upstream.received) == b"request")
        assert proxy.cut("rst") == 1
        received, error = await read_until_closed(reader, within=2)
        await asyncio.wait_for(upstream.done.wait(), 2)
        await close(writer)
    assert received == b""
    assert isinstance(error, ConnectionResetError)
    assert proxy.stats.resets_injected == 1
    assert proxy.connections[0].fault is FaultMode.RST


async def test_blackhole_swallows_everything_until_restore(echo_port: int) -> None:
    async with ShapingProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await connect(proxy.port)
        await exchange(reader, writer)
        assert proxy.cut("blackhole") == 1
        writer.write(b"anyone?")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        late_reader, late_writer = await connect(proxy.port)
        late_writer.write(b"me too")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(late_reader.read(1), 0.3)
        assert proxy.stats.up.dropped == len(b"anyone?") + len(b"me too")

        proxy.restore()
        for dead in (reader, late_reader):
            received, error = await read_until_closed(dead, within=2)
            assert received == b""
            assert isinstance(error, ConnectionResetError), "a dead connection is reset"
        fresh_reader, fresh_writer = await connect(proxy.port)
        await exchange(fresh_reader, fresh_writer)
        for each in (writer, late_writer, fresh_writer):
            await close(each)
    assert proxy.stats.blackholes_injected == 2
    assert [c.fault for c in proxy.connections] == [FaultMode.BLACKHOLE, FaultMode.BLACKHOLE, None]


async def test_blackhole_can_spare_new_connections(echo_port: int) -> None:
    async with ShapingProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await connect(proxy.port)
        proxy.cut("blackhole", hold_new=False)
        new_reader, new_writer = await connect(proxy.port)
        await exchange(new_reader, new_writer)
        with pytest.raises(TimeoutError):
            await exchange(reader, writer, within=0.3)
        await close(writer)
        await close(new_writer)


async def test_half_close_gives_the_client_eof_and_drops_its_writes(servers: Servers) -> None:
    upstream = Sink()
    port = await servers.start(upstream)
    async with ShapingProxy("127.0.0.1", port) as proxy:
        reader, writer = await connect(proxy.port)
        writer.write(b"before")
        await wait_until(lambda: bytes(upstream.received) == b"before")
        assert proxy.cut("half_close") == 1
        received, error = await read_until_closed(reader, within=2)
        writer.write(b"after")
        await writer.drain()
        await asyncio.wait_for(upstream.done.wait(), 2)
        await close(writer)
        await wait_until(lambda: proxy.live_connections == 0)
    assert (received, error) == (b"", None)
    assert bytes(upstream.received) == b"before"
    assert proxy.stats.half_closes_injected == 1


CUT_POINTS = [1, 1459, 1460, 1461, *random.Random(2024).sample(range(2, 100_000), 4)]


@pytest.mark.parametrize("n", CUT_POINTS)
@pytest.mark.parametrize("mode", [FaultMode.HALF_CLOSE, FaultMode.BLACKHOLE])
async def test_cut_after_bytes_delivers_exactly_n_bytes_down(servers: Servers, mode: FaultMode, n: int) -> None:
    payload = os.urandom(100_000)
    port = await servers.start(sender(payload))
    async with ShapingProxy("127.0.0.1", port) as proxy:
        proxy.cut_after_bytes("down", n, mode)
        reader, writer = await connect(proxy.port)
        received, error = await read_until_closed(reader, within=0.5 if mode is FaultMode.BLACKHOLE else 5)
        await close(writer)
    assert received == payload[:n]
    assert error is None if mode is FaultMode.HALF_CLOSE else isinstance(error, TimeoutError)


@pytest.mark.parametrize("n", CUT_POINTS[:4])
async def test_cut_after_bytes_with_rst_delivers_n_bytes_then_the_reset(servers: Servers, n: int) -> None:
    payload = os.urandom(20_000)
    port = await servers.start(sender(payload))
    loop = asyncio.get_running_loop()
    async with ShapingProxy("127.0.0.1", port) as proxy:
        proxy.cut_after_bytes(Direction.DOWN, n, FaultMode.RST)
        with socket.create_connection(("127.0.0.1", proxy.port)) as client:
            client.setblocking(False)
            received = bytearray()
            with pytest.raises(ConnectionResetError):  # noqa: PT012 - the reset ends the reading loop
                async with asyncio.timeout(5):
                    while data := await loop.sock_recv(client, 65536):
                        received += data
    assert bytes(received) == payload[:n]


async def test_cut_after_bytes_up_gives_the_server_exactly_n_bytes(servers: Servers) -> None:
    upstream = Sink()
    port = await servers.start(upstream)
    payload = os.urandom(50_000)
    async with ShapingProxy("127.0.0.1", port) as proxy:
        proxy.cut_after_bytes("up", 12_345, "half_close")
        reader, writer = await connect(proxy.port)
        writer.write(payload)
        await asyncio.wait_for(upstream.done.wait(), 5)
        assert await reader.read() == b""
        await close(writer)
    assert bytes(upstream.received) == payload[:12_345]


async def test_byte_offsets_count_from_the_call(echo_port: int) -> None:
    async with ShapingProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await connect(proxy.port)
        await exchange(reader, writer, b"x" * 100)
        proxy.cut_after_bytes("down", 10, "half_close")
        writer.write(b"y" * 100)
        received, _ = await read_until_closed(reader)
        await close(writer)
    assert received == b"y" * 10


async def test_a_scheduled_reset_fires_on_time(echo_port: int) -> None:
    schedule = FaultSchedule.of((AtTime(0.3), "rst"))
    started = time.monotonic()
    async with ShapingProxy("127.0.0.1", echo_port, faults=schedule) as proxy:
        reader, writer = await connect(proxy.port)
        await exchange(reader, writer)
        _, error = await read_until_closed(reader, within=3)
        elapsed = time.monotonic() - started
        await close(writer)
    assert isinstance(error, ConnectionResetError)
    assert elapsed >= 0.28


async def test_a_blackhole_can_restore_itself(echo_port: int) -> None:
    fault = Fault(AtTime(0.0), FaultMode.BLACKHOLE, restore_after_s=0.4)
    async with ShapingProxy("127.0.0.1", echo_port, faults=FaultSchedule((fault,))) as proxy:
        await asyncio.sleep(0.05)
        reader, writer = await connect(proxy.port)
        with pytest.raises(TimeoutError):
            await exchange(reader, writer, within=0.2)
        await asyncio.sleep(0.3)
        fresh_reader, fresh_writer = await connect(proxy.port)
        await exchange(fresh_reader, fresh_writer)
        await close(writer)
        await close(fresh_writer)


async def test_an_outage_stalls_then_resumes_with_data_intact(echo_port: int) -> None:
    profile = NetworkProfile("flaky", outage_every_s=1.0, outage_s=0.5)  # dark during [0.5, 1.0) of each second
    messages = [f"{i:04d}".encode() for i in range(24)]
    arrivals: list[float] = []
    async with ShapingProxy("127.0.0.1", echo_port, profile) as proxy:
        started = time.monotonic()
        reader, writer = await connect(proxy.port)

        async def write_steadily() -> None:
            for message in messages:
                writer.write(message)
                await asyncio.sleep(0.04)

        writing = asyncio.create_task(write_steadily())
        received = b""
        while len(received) < 4 * len(messages):
            received += await asyncio.wait_for(reader.read(4096), 3)
            arrivals.append(time.monotonic() - started)
        await writing
        await close(writer)
    assert received == b"".join(messages)
    assert max(later - earlier for earlier, later in itertools.pairwise(arrivals)) >= 0.3
    assert proxy.stats.resets_injected == 0


async def test_a_reset_outage_resets_live_connections(echo_port: int) -> None:
    profile = NetworkProfile("nat", outage_every_s=0.6, outage_s=0.2, outage_mode="reset")  # first dark at 0.4
    async with ShapingProxy("127.0.0.1", echo_port, profile) as proxy:
        reader, writer = await connect(proxy.port)
        await exchange(reader, writer)
        _, error = await read_until_closed(reader, within=3)
        await close(writer)
    assert isinstance(error, ConnectionResetError)
    assert proxy.stats.resets_injected >= 1
