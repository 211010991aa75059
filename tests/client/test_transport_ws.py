"""The WebSocket transport over real sockets: a connection it gives up on is closed, even when the peer is gone."""

from __future__ import annotations

import pytest

from tether.client.errors import ConnectionLostError
from tether.client.events import ClientStats, Emitter
from tether.client.transport import ConnectionPolicy
from tether.client.transport_ws import WebSocketTransport
from tether.netem.proxy import ShapingProxy
from tether.server.runner import RunningServer

from .support import MODEL


def transport_through(proxy: ShapingProxy, read_timeout_s: float = 300.0) -> WebSocketTransport:
    return WebSocketTransport(
        f"ws://{proxy.host}:{proxy.port}/v1/responses",
        {},
        ConnectionPolicy(read_timeout_s=read_timeout_s),
        Emitter(None, None),
        ClientStats(),
    )


async def test_a_connection_dropped_on_a_dead_link_has_its_socket_closed(server: RunningServer) -> None:
    # A blackhole never answers the close frame: the socket must be aborted, not left open until the event loop
    # ends (and then garbage-collected at some later moment, a ResourceWarning in whatever runs then).
    async with ShapingProxy(server.host, server.port, "loopback", seed=1) as proxy:
        transport = transport_through(proxy, read_timeout_s=0.5)
        await transport.connect()
        dropped = transport._ws
        assert dropped is not None
        proxy.cut("blackhole")
        with pytest.raises(ConnectionLostError):
            async for _ in transport.create({"model": MODEL, "input": "hi"}, None):
                pass
        assert dropped.transport.is_closing()
        await transport.aclose()


async def test_closing_over_a_dead_link_closes_the_socket(server: RunningServer) -> None:
    async with ShapingProxy(server.host, server.port, "loopback", seed=1) as proxy:
        transport = transport_through(proxy)
        await transport.connect()
        connection = transport._ws
        assert connection is not None
        proxy.cut("blackhole")
        await transport.aclose()
        assert connection.transport.is_closing()
