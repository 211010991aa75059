"""httpcore2's network I/O on asyncio transports: gathered writes, reads, timeouts, closed connections, uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpcore2
import httpx2 as httpx
import pytest
import uvloop

from tether.providers.asyncio_network import AsyncioBackend, AsyncioStream, _Receiver
from tether.providers.http_upstream import _asyncio_transport

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 12\r\n\r\ndata: done\n\n"


class CountingTransport(asyncio.Transport):
    """Records writes instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


async def test_a_request_leaves_in_one_write_at_the_first_read() -> None:
    transport, receiver = CountingTransport(), _Receiver()
    receiver.connection_made(transport)
    stream = AsyncioStream(transport, receiver)
    for part in (b"POST / HTTP/1.1\r\n\r\n", b"{}", b""):
        await stream.write(part)
    assert transport.writes == []
    receiver.data_received(b"HTTP/1.1 200 OK\r\n")
    assert await stream.read(1024, timeout=1) == b"HTTP/1.1 200 OK\r\n"
    assert transport.writes == [b"POST / HTTP/1.1\r\n\r\n{}"]


async def test_a_read_takes_at_most_max_bytes_and_keeps_the_rest() -> None:
    receiver = _Receiver()
    receiver.connection_made(CountingTransport())
    assert receiver.transport is not None
    stream = AsyncioStream(receiver.transport, receiver)
    receiver.data_received(b"abcdef")
    assert await stream.read(4) == b"abcd"
    assert await stream.read(4) == b"ef"
    receiver.eof_received()
    assert await stream.read(4) == b""


async def test_silence_is_a_read_timeout() -> None:
    receiver = _Receiver()
    receiver.connection_made(CountingTransport())
    assert receiver.transport is not None
    with pytest.raises(httpcore2.ReadTimeout):
        await AsyncioStream(receiver.transport, receiver).read(1024, timeout=0.01)


async def test_a_refused_connection_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(httpcore2.ConnectError):
        await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)


async def test_an_idle_connection_the_server_closed_reads_as_readable() -> None:
    closed = asyncio.Event()

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        closed.set()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.sockets[0].getsockname()[1], timeout=5)
        await closed.wait()
        assert await stream.read(1024, timeout=5) == b""  # the end of the stream, then the check
        assert stream.get_extra_info("is_readable") is True
        await stream.aclose()


@pytest.fixture
async def answering_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server that answers every request with a short SSE body and records what each read brought (and an
    empty chunk for each connection)."""
    chunks: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks.append(b"")
        while data := await reader.read(65536):
            chunks.append(data)
            writer.write(ANSWER)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], chunks


async def exchange(port: int, turns: int) -> list[bytes]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    bodies = []
    transport = _asyncio_transport(True, limits)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(turns):
            async with client.stream("POST", "/v1/responses", content=b'{"input": []}') as reply:
                bodies.append(await reply.aread())
    return bodies


async def test_turns_reuse_one_connection(answering_server: tuple[int, list[bytes]]) -> None:
    port, chunks = answering_server
    assert await exchange(port, 3) == [b"data: done\n\n"] * 3
    assert chunks[0] == b""
    requests = chunks[1:]
    assert len(requests) == 3  # one connection, and each request in one piece: its head and body in one write
    assert all(chunk.startswith(b"POST /v1/responses") and chunk.endswith(b'{"input": []}') for chunk in requests)


def test_it_runs_on_uvloop() -> None:
    # uvloop's transports are not asyncio.Transport instances: the first version failed its first read here.
    async def main() -> list[bytes]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(65536):
                writer.write(ANSWER)
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        async with server:
            return await asyncio.wait_for(exchange(server.sockets[0].getsockname()[1], 2), 30)

    run: Callable[[Any], list[bytes]] = uvloop.run
    assert run(main()) == [b"data: done\n\n"] * 2
