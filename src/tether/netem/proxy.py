"""``ShapingProxy``: a TCP proxy on 127.0.0.1 that makes a connection behave like a ``NetworkProfile``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

from tether.netem.catalog import profile_named
from tether.netem.connection import Connection, ConnectionState
from tether.netem.faults import AtBytes, AtTime, ByteTriggers, Fault, FaultSchedule
from tether.netem.profiles import NetworkProfile
from tether.netem.record import EmulationRecord
from tether.netem.shaping import OutageClock
from tether.netem.stats import ConnectionStats, ProxyStats
from tether.netem.thread import ProxyThread
from tether.netem.types import Direction, FaultMode

DEFAULT_MAX_QUEUE_BYTES = 1 << 20


class ShapingProxy:
    """Forwards TCP connections to an upstream, shaped by a profile, with faults on demand or on a schedule.

    Each direction of each connection has its own serialisation clock (rate), propagation delay, seeded loss
    stalls and the proxy's outages; see ``DirectionShaper``. Use it as an async context manager, or run it on its
    own thread with ``start_in_thread()`` for synchronous clients::

        async with ShapingProxy("127.0.0.1", server_port, PROFILES["mobile-3g"], seed=1) as proxy:
            client = connect("127.0.0.1", proxy.port)

    Args:
        upstream_host: Host the proxy connects to for each accepted connection.
        upstream_port: Port the proxy connects to.
        profile: A ``NetworkProfile``, or the name (or alias) of one in ``PROFILES``.
        seed: Seed of every random draw (loss, jitter); connection ``i`` direction ``d`` draws from its own stream.
        faults: Faults to install when the proxy starts (offsets count from then).
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one (read it from ``port``).
        max_queue_bytes: Bytes a direction may hold before it stops reading from its sender.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        profile: NetworkProfile | str = "loopback",
        *,
        seed: int = 0,
        faults: FaultSchedule | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
    ) -> None:
        self.profile = profile_named(profile) if isinstance(profile, str) else profile
        self.seed = seed
        self.stats = ProxyStats()
        self.connections: list[ConnectionStats] = []
        """Every connection accepted so far, in order, open or closed."""
        self._upstream = (upstream_host, upstream_port)
        self._host = host
        self._port = port
        self._initial_faults = faults
        self._max_queue_bytes = max_queue_bytes
        self._server: asyncio.Server | None = None
        self._outages: OutageClock | None = None
        self._live: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._outage_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._triggers = ByteTriggers()
        self._blackhole_new = False
        self._closed = False

    @property
    def record(self) -> EmulationRecord:
        """What emulated this proxy's runs, for the benchmark's results."""
        return EmulationRecord.for_proxy(self.profile, self.seed)

    @property
    def host(self) -> str:
        """The address clients connect to."""
        return self._host

    @property
    def port(self) -> int:
        """The port clients connect to (once started)."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def live_connections(self) -> int:
        """Connections not closed yet."""
        return len(self._live)

    async def start(self) -> None:
        """Listen, and install the outage clock and the initial faults; their time offsets count from now."""
        loop = asyncio.get_running_loop()
        profile = self.profile
        if profile.outage_every_s is not None:
            self._outages = OutageClock(profile.outage_every_s, profile.outage_s, origin=loop.time())
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        if self._outages is not None and profile.outage_mode == "reset":
            self._outage_task = self._spawn(self._reset_at_outages(self._outages))
        if self._initial_faults is not None:
            self.schedule(self._initial_faults)

    async def aclose(self) -> None:
        """Stop listening, abort every connection, and wait until all sockets are closed."""
        if self._closed:
            return
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self._live):
            connection.close_now()
        if self._outage_task is not None:
            self._outage_task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def start_in_thread(self, *, timeout: float = 10.0) -> ProxyThread:
        """Run this proxy on a new thread with its own event loop, for synchronous clients; stop it with ``stop()``."""
        return ProxyThread(self).start(timeout=timeout)

    def cut(self, mode: FaultMode | str, *, hold_new: bool = True) -> int:
        """Cut every live connection now.

        Args:
            mode: ``"rst"``, ``"blackhole"`` or ``"half_close"`` (see ``FaultMode``).
            hold_new: For ``"blackhole"``: connections accepted until ``restore()`` are blackholed too.

        Returns:
            The number of connections cut.
        """
        fault_mode = FaultMode(mode)
        if fault_mode is FaultMode.BLACKHOLE and hold_new:
            self._blackhole_new = True
        cut = {
            FaultMode.RST: Connection.reset,
            FaultMode.BLACKHOLE: Connection.blackhole,
            FaultMode.HALF_CLOSE: Connection.half_close,
        }[fault_mode]
        return sum(cut(connection) for connection in list(self._live))

    def restore(self) -> None:
        """End a blackhole: new connections flow again; the blackholed ones, dead for good, are reset."""
        self._blackhole_new = False
        for connection in list(self._live):
            if connection.state is ConnectionState.BLACKHOLED:
                connection.reset(injected=False)

    def cut_after_bytes(
        self, direction: Direction | str, n: int, mode: FaultMode | str, *, hold_new: bool = True
    ) -> None:
        """Cut every live connection right after ``n`` more bytes have been forwarded in ``direction``.

        The bytes are counted over all connections from the moment of the call; the piece that holds the ``n``-th
        byte is split there, so the receiver gets exactly ``n`` bytes before the cut. ``n=0`` cuts at once.
        """
        trigger = AtBytes(Direction(direction), n)
        self.schedule(FaultSchedule((Fault(trigger, FaultMode(mode), hold_new=hold_new),)))

    def schedule(self, faults: FaultSchedule) -> None:
        """Install faults; time and byte offsets count from now."""
        loop = asyncio.get_running_loop()
        reached: set[Direction] = set()
        for fault in faults.faults:
            if isinstance(fault.trigger, AtTime):
                self._timers.append(loop.call_later(fault.trigger.offset_s, self._fire, fault))
            else:
                direction = fault.trigger.direction
                self._triggers.arm(direction, self.stats.direction(direction).bytes + fault.trigger.offset, fault)
                reached.add(direction)
        for direction in reached:
            self.forwarded(direction, 0)

    def byte_budget(self, direction: Direction) -> int | None:
        """Part of ``LinkControl``: bytes that may be forwarded before the next byte trigger."""
        return self._triggers.budget(direction, self.stats.direction(direction).bytes)

    def forwarded(self, direction: Direction, count: int) -> None:
        """Part of ``LinkControl``: fire the byte triggers the totals (already updated) have reached."""
        for fault in self._triggers.reached(direction, self.stats.direction(direction).bytes):
            self._fire(fault)

    def _fire(self, fault: Fault) -> None:
        if self._closed:
            return
        self.cut(fault.mode, hold_new=fault.hold_new)
        if fault.restore_after_s is not None:
            self._timers.append(asyncio.get_running_loop().call_later(fault.restore_after_s, self.restore))

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            writer.transport.abort()
            return
        connection = Connection(
            len(self.connections),
            (reader, writer),
            self._upstream,
            self.profile,
            self.seed,
            self._outages,
            self.stats,
            self,
            self._max_queue_bytes,
            blackholed=self._blackhole_new,
        )
        self.stats.connections_opened += 1
        self.connections.append(connection.stats)
        self._live.add(connection)
        self._spawn(self._serve(connection))

    async def _serve(self, connection: Connection) -> None:
        try:
            await connection.run()
        finally:
            self._live.discard(connection)
            self.stats.connections_closed += 1

    async def _reset_at_outages(self, outages: OutageClock) -> None:
        loop = asyncio.get_running_loop()
        start = outages.next_outage(loop.time())
        while True:
            await asyncio.sleep(start - loop.time())
            for connection in list(self._live):
                connection.reset()
            start = outages.next_outage(start)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
