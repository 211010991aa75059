"""A ``ShapingProxy`` on its own thread and event loop, for synchronous clients."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

from tether.netem.faults import FaultSchedule
from tether.netem.stats import ConnectionStats, ProxyStats
from tether.netem.types import Direction, FaultMode

if TYPE_CHECKING:
    from tether.netem.proxy import ShapingProxy

T = TypeVar("T")


class ProxyThread:
    """Handle of a proxy running on a background thread; every method may be called from any thread.

    Returned by ``ShapingProxy.start_in_thread()``; also a context manager that stops the proxy on exit.
    """

    def __init__(self, proxy: ShapingProxy) -> None:
        self.proxy = proxy
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self, *, timeout: float = 10.0) -> Self:
        """Start the thread and wait until the proxy listens.

        Raises:
            RuntimeError: If the proxy did not start within ``timeout`` seconds, or failed to (chained).
        """
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="tether-netem", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the shaping proxy did not start in time")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError("the shaping proxy failed to start") from self._error
        return self

    @property
    def host(self) -> str:
        """The address clients connect to."""
        return self.proxy.host

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return self.proxy.port

    def stats(self) -> ProxyStats:
        """A consistent copy of the proxy's counters."""
        return self.call(self.proxy.stats.snapshot)

    def connections(self) -> list[ConnectionStats]:
        """A consistent copy of every connection's counters."""
        return self.call(lambda: copy.deepcopy(self.proxy.connections))

    def cut(self, mode: FaultMode | str, *, hold_new: bool = True) -> int:
        """``ShapingProxy.cut`` on the proxy's thread."""
        return self.call(lambda: self.proxy.cut(mode, hold_new=hold_new))

    def restore(self) -> None:
        """``ShapingProxy.restore`` on the proxy's thread."""
        self.call(self.proxy.restore)

    def cut_after_bytes(
        self, direction: Direction | str, n: int, mode: FaultMode | str, *, hold_new: bool = True
    ) -> None:
        """``ShapingProxy.cut_after_bytes`` on the proxy's thread."""
        self.call(lambda: self.proxy.cut_after_bytes(direction, n, mode, hold_new=hold_new))

    def schedule(self, faults: FaultSchedule) -> None:
        """``ShapingProxy.schedule`` on the proxy's thread."""
        self.call(lambda: self.proxy.schedule(faults))

    def call(self, function: Callable[[], T], *, timeout: float = 10.0) -> T:
        """Run ``function`` on the proxy's event loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the proxy thread is not running")

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self, *, timeout: float = 30.0) -> None:
        """Close the proxy (every connection aborted) and join its thread; calling it again does nothing."""
        if self._loop is not None and self._stop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            try:
                await self.proxy.start()
            except Exception as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            await self._stop.wait()
        finally:
            await self.proxy.aclose()
