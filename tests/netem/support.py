"""Real TCP servers on 127.0.0.1 for the emulator to sit in front of, and client helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Servers:
    """Starts servers; on teardown stops them and every handler still running."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, handler: Handler) -> int:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                await handler(reader, writer)
            except OSError:
                pass
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                self._handlers.discard(task)

        server = await asyncio.start_server(run, "127.0.0.1", 0)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back whatever arrives, until EOF."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def sender(payload: bytes) -> Handler:
    """A handler that sends ``payload`` on connect, then waits for the client to finish."""

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        await reader.read()

    return send


class Sink:
    """A handler that reads until EOF and keeps what it got; ``done`` is set at EOF or error."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.done = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.received += data
        finally:
            self.done.set()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection to 127.0.0.1:``port``."""
    return await asyncio.open_connection("127.0.0.1", port)


async def close(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``, ignoring a connection the proxy already cut."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def read_until_closed(reader: asyncio.StreamReader, within: float = 5.0) -> tuple[bytes, BaseException | None]:
    """Everything ``reader`` yields until EOF or an error, and the error (``None`` at a clean EOF)."""
    received = bytearray()
    try:
        async with asyncio.timeout(within):
            while data := await reader.read(65536):
                received += data
    except OSError as exc:
        return bytes(received), exc
    return bytes(received), None


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
