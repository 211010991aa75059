"""httpcore2's network I/O on asyncio's own transports, without anyio in between, a request written in one go.

httpcore2's default backend goes through anyio: every read and write of an upstream call enters a cancel scope,
asks sniffio which loop runs and looks up the current task (on Python 3.11 each of those lookups is a ``getpid``
system call), and a request goes out as three writes (head, body, an empty end). This backend reads from an
:class:`asyncio.Protocol`'s buffer and gathers writes until the next read, so a request's head and body leave in one
system call. HTTP/1.1 writes the whole request before it reads the answer, so nothing waits on a gathered write;
a write's timeout becomes the read's (an upstream that does not take the request does not answer it either).
"""

# ruff: noqa: ASYNC109  # httpcore2's network interface takes its timeouts as arguments

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterable, Iterator
from typing import Any, cast

import httpcore2
from httpcore2._utils import is_socket_readable

# Reading pauses when this much has arrived unread, and resumes once it is read.
READ_HIGH_WATER = 256 * 1024


class _Receiver(asyncio.Protocol):
    """Collects what arrives on a connection for :class:`AsyncioStream` to read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: Exception | None = None
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_HIGH_WATER and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_readable(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def drain(self) -> None:
        if self._writing_paused and not self.eof:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None


@contextlib.contextmanager
def _mapped(errors: dict[type[Exception], type[Exception]]) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for kind, mapped in errors.items():
            if isinstance(exc, kind):
                raise mapped(str(exc) or type(exc).__name__) from exc
        raise


class AsyncioStream(httpcore2.AsyncNetworkStream):
    """One connection: reads from the receiver's buffer, writes gathered until the next read."""

    def __init__(self, transport: asyncio.Transport, receiver: _Receiver) -> None:
        self._transport = transport
        self._receiver = receiver
        self._pending: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        receiver = self._receiver
        try:
            if self._pending:
                await self._flush()
            if not receiver.buffer and not receiver.eof:
                async with asyncio.timeout(timeout):
                    await receiver.wait_readable()
        except TimeoutError:
            raise httpcore2.ReadTimeout("no data within the read timeout") from None
        except OSError as exc:
            raise httpcore2.ReadError(str(exc) or type(exc).__name__) from exc
        if not receiver.buffer:
            if receiver.error is not None:
                raise httpcore2.ReadError(str(receiver.error) or type(receiver.error).__name__)
            return b""
        if len(receiver.buffer) <= max_bytes:
            data = bytes(receiver.buffer)
            receiver.buffer.clear()
        else:
            data = bytes(receiver.buffer[:max_bytes])
            del receiver.buffer[:max_bytes]
        if receiver.paused and len(receiver.buffer) <= READ_HIGH_WATER // 2 and not self._transport.is_closing():
            receiver.paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if self._transport.is_closing():
            raise httpcore2.WriteError("the connection is closed")
        self._transport.write(data)
        await self._receiver.drain()

    async def aclose(self) -> None:
        self._pending.clear()
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            with _mapped({TimeoutError: httpcore2.ConnectTimeout, OSError: httpcore2.ConnectError}):
                await self._flush()
                async with asyncio.timeout(timeout):
                    transport = await loop.start_tls(
                        self._transport, self._receiver, ssl_context, server_hostname=server_hostname
                    )
        except BaseException:
            self._transport.close()
            raise
        if transport is None:  # pragma: no cover  # only for a transport that is already closing
            raise httpcore2.ConnectError("the connection closed during the TLS handshake")
        self._receiver.transport = transport
        return AsyncioStream(transport, self._receiver)

    def get_extra_info(self, info: str) -> Any:
        transport = self._transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":  # an idle connection the server closed (or wrote to) is not reused
            receiver = self._receiver
            return bool(receiver.buffer) or receiver.eof or is_socket_readable(transport.get_extra_info("socket"))
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """Connections on the running asyncio loop's transports (uvloop's under ``tether serve``)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        with _mapped({TimeoutError: httpcore2.ConnectTimeout, OSError: httpcore2.ConnectError}):
            async with asyncio.timeout(timeout):
                transport, receiver = await loop.create_connection(_Receiver, host, port, local_addr=local)
            _set_options(transport, socket_options)
        return AsyncioStream(transport, receiver)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        with _mapped({TimeoutError: httpcore2.ConnectTimeout, OSError: httpcore2.ConnectError}):
            async with asyncio.timeout(timeout):
                transport, receiver = await loop.create_unix_connection(_Receiver, path)
            _set_options(transport, socket_options)
        return AsyncioStream(transport, receiver)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _set_options(transport: asyncio.Transport, options: Iterable[Any] | None) -> None:
    sock: socket.socket | None = transport.get_extra_info("socket")
    for option in options or ():
        if sock is not None:
            sock.setsockopt(*option)
