"""The proxy on its own thread, driven by synchronous code."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tether.netem import FaultMode, NetworkProfile, ShapingProxy


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


@pytest.fixture
def sync_echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def recv_exactly(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        assert chunk, "EOF before the expected bytes"
        data += chunk
    return data


def test_a_sync_client_goes_through_the_thread(sync_echo_port: int) -> None:
    proxy = ShapingProxy("127.0.0.1", sync_echo_port, NetworkProfile("near", rtt_s=0.02), seed=3)
    with proxy.start_in_thread() as handle:
        with socket.create_connection((handle.host, handle.port), timeout=5) as client:
            client.sendall(b"ping")
            assert recv_exactly(client, 4) == b"ping"
            stats = handle.stats()
            assert (stats.bytes_up, stats.bytes_down, stats.connections_opened) == (4, 4, 1)
            assert handle.cut("rst") == 1
            with pytest.raises(ConnectionResetError):
                client.recv(1)
        assert handle.connections()[0].fault is FaultMode.RST
        port = handle.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_faults_from_another_thread(sync_echo_port: int) -> None:
    with ShapingProxy("127.0.0.1", sync_echo_port).start_in_thread() as handle:
        handle.cut_after_bytes("down", 3, "half_close")
        with socket.create_connection((handle.host, handle.port), timeout=5) as client:
            client.sendall(b"hello")
            assert recv_exactly(client, 3) == b"hel"
            assert client.recv(10) == b""
        handle.cut("blackhole")
        handle.restore()
        with socket.create_connection((handle.host, handle.port), timeout=5) as client:
            client.sendall(b"again")
            assert recv_exactly(client, 5) == b"again"
    handle.stop()  # a second stop does nothing


def test_a_proxy_that_cannot_listen_fails_to_start() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        proxy = ShapingProxy("127.0.0.1", 1, port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="failed to start"):
            proxy.start_in_thread()
