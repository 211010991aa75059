"""One proxied TCP connection: two pipes, and what each kind of cut does to them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable, Coroutine
from enum import Enum
from typing import Any

from tether.netem.pipe import LinkControl, Pipe
from tether.netem.profiles import NetworkProfile
from tether.netem.shaping import DirectionShaper, OutageClock
from tether.netem.stats import ConnectionStats, ProxyStats
from tether.netem.types import Direction, FaultMode


class ConnectionState(Enum):
    """Where a proxied connection is in its life."""

    CONNECTING = "connecting"
    OPEN = "open"
    BLACKHOLED = "blackholed"
    HALF_CLOSED = "half_closed"
    RESET = "reset"


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket at once, with a TCP reset rather than a FIN (``SO_LINGER`` on, timeout 0)."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None and not transport.is_closing():
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Connection:
    """A client connection, its upstream connection, and the shaping between them.

    Args:
        conn_id: Sequence number within the proxy; with ``seed`` it seeds this connection's random draws.
        client: The accepted client's streams.
        upstream: Host and port to connect to.
        profile: The link to emulate.
        seed: The proxy's seed.
        outages: The proxy's outage clock, or ``None``.
        totals: The proxy's counters, updated alongside this connection's.
        link: The proxy, for byte triggers.
        max_queue_bytes: Bytes a direction may hold before reading pauses.
        blackholed: Accept into a blackhole: never connect upstream, drop what the client sends.
    """

    def __init__(
        self,
        conn_id: int,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[str, int],
        profile: NetworkProfile,
        seed: int,
        outages: OutageClock | None,
        totals: ProxyStats,
        link: LinkControl,
        max_queue_bytes: int,
        *,
        blackholed: bool = False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._client_reader, self._client_writer = client
        self._upstream_address = upstream
        self._upstream_writer: asyncio.StreamWriter | None = None
        self._profile = profile
        self._seed = seed
        self._outages = outages
        self._totals = totals
        self._link = link
        self._max_queue_bytes = max_queue_bytes
        self._pipes: list[Pipe] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.state = ConnectionState.BLACKHOLED if blackholed else ConnectionState.CONNECTING
        self.stats = ConnectionStats(conn_id, opened_at=self._loop.time())
        if blackholed:
            self._fault(FaultMode.BLACKHOLE)

    async def run(self) -> None:
        """Connect upstream and forward until both directions are done, or the connection is cut."""
        try:
            if self.state is ConnectionState.CONNECTING:
                await self._connect()
            if self._pipes and self._upstream_writer is not None:
                up, down = self._pipes
                client, upstream = self._client_writer, self._upstream_writer
                # Each pump is paired with the side whose socket its errors come from.
                # The pumps are passed uncalled: a task cancelled before it first runs then leaves no coroutine
                # that was never awaited.
                pumps = [(up.pump_in, client), (up.pump_out, upstream), (down.pump_in, upstream)]
                pumps.append((down.pump_out, client))
                self._tasks = [self._loop.create_task(self._guard(pump, side)) for pump, side in pumps]
                await asyncio.wait(self._tasks)
            elif self.state is not ConnectionState.RESET:
                await self._guard(self._discard_client, self._client_writer)
        finally:
            for writer in self._writers():
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            self.stats.closed_at = self._loop.time()

    def reset(self, *, injected: bool = True) -> bool:
        """Reset both sides (``FaultMode.RST``); returns whether the connection was still live."""
        if self.state is ConnectionState.RESET:
            return False
        self.state = ConnectionState.RESET
        if injected:
            self._fault(FaultMode.RST)
        for writer in self._writers():
            abort_with_rst(writer)
        for task in self._tasks:
            task.cancel()
        return True

    def blackhole(self) -> bool:
        """Deliver nothing more either way, keeping both sockets open; returns whether it applied."""
        if self.state not in (ConnectionState.CONNECTING, ConnectionState.OPEN):
            return False
        self.state = ConnectionState.BLACKHOLED
        self._fault(FaultMode.BLACKHOLE)
        for pipe in self._pipes:
            pipe.stop_forwarding()
        return True

    def half_close(self) -> bool:
        """Send the client EOF, drop what it writes, close upstream; returns whether it applied."""
        if self.state not in (ConnectionState.CONNECTING, ConnectionState.OPEN):
            return False
        self.state = ConnectionState.HALF_CLOSED
        self._fault(FaultMode.HALF_CLOSE)
        for pipe in self._pipes:
            pipe.stop_forwarding()
        if not self._client_writer.is_closing() and self._client_writer.can_write_eof():
            with contextlib.suppress(OSError):
                self._client_writer.write_eof()
        if self._upstream_writer is not None:
            self._upstream_writer.close()
        return True

    def close_now(self) -> None:
        """Abort both sockets without counting a fault (the proxy is shutting down)."""
        self.state = ConnectionState.RESET
        for writer in self._writers():
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()

    async def _connect(self) -> None:
        host, port = self._upstream_address
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            # Nothing listens upstream: the client gets the reset a refused connection would give it.
            self.reset(injected=False)
            return
        self._upstream_writer = upstream_writer
        if self.state is ConnectionState.RESET:
            abort_with_rst(upstream_writer)
            return
        if self.state is not ConnectionState.CONNECTING:
            upstream_writer.transport.abort()
            return
        self.state = ConnectionState.OPEN
        for writer in self._writers():
            # Drained means handed to the kernel: a cut after ``drain()`` lands after exactly those bytes.
            writer.transport.set_write_buffer_limits(high=0)
        accepted = self.stats.opened_at
        rtt = self._profile.rtt_s
        self._pipes = [
            # The client's first bytes leave once the handshake is done (one RTT); the server's, once the SYN is in.
            self._pipe(Direction.UP, self._client_reader, upstream_writer, self._profile.up_bps, accepted + rtt),
            self._pipe(
                Direction.DOWN, upstream_reader, self._client_writer, self._profile.down_bps, accepted + rtt / 2
            ),
        ]

    def _pipe(
        self,
        direction: Direction,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        rate_bps: float | None,
        start: float,
    ) -> Pipe:
        key = f"{self._seed}:{self.stats.id}:{direction}"
        shaper = DirectionShaper(
            rate_bps=rate_bps,
            delay_s=self._profile.one_way_delay_s,
            loss=self._profile.loss,
            rto_s=self._profile.rto_s,
            jitter_s=self._profile.jitter_s,
            loss_rng=random.Random(f"{key}:loss"),
            jitter_rng=random.Random(f"{key}:jitter"),
            outages=self._outages,
            link_free_at=start,
        )
        self.stats.stalled_packets[direction] = shaper.stalled_packets
        counters = (self.stats.direction(direction), self._totals.direction(direction))
        return Pipe(direction, source, sink, shaper, counters, self._link, self._max_queue_bytes)

    async def _guard(self, pump: Callable[[], Coroutine[Any, Any, None]], writer: asyncio.StreamWriter) -> None:
        try:
            await pump()
        except OSError:
            # A side reset or vanished. On a live link the other side learns of it the way the network would tell
            # it; through a blackhole or a half-close nothing passes, so only the failed side is closed.
            if self.state is ConnectionState.OPEN:
                self.reset(injected=False)
            else:
                writer.transport.abort()

    async def _discard_client(self) -> None:
        while data := await self._client_reader.read(65536):
            self.stats.up.dropped += len(data)
            self._totals.up.dropped += len(data)

    def _writers(self) -> list[asyncio.StreamWriter]:
        writers = [self._client_writer]
        if self._upstream_writer is not None:
            writers.append(self._upstream_writer)
        return writers

    def _fault(self, mode: FaultMode) -> None:
        self.stats.fault = mode
        self._totals.count_fault(mode)
