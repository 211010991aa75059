"""Which transport a turn uses: WebSocket mode first, HTTP SSE when it is refused or keeps dropping, and WebSocket
again once ``websocket_retry_after_s`` have passed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeAlias

from tether.client.errors import ConnectionLostError, ServerUnreachableError, WebSocketRefusedError
from tether.client.events import BackToWebSocket, ClientStats, Emitter, FallbackToHTTP, TransportKind
from tether.client.transport import ConnectionPolicy, Transport

TransportMode: TypeAlias = Literal["auto", "websocket", "http"]


class Connector:
    """Chooses and opens the transport of each attempt.

    Args:
        mode: ``"auto"`` (WebSocket, falling back to HTTP), ``"websocket"`` or ``"http"`` only.
        websocket: the WebSocket transport (unused with ``"http"``).
        http: the HTTP transport (unused with ``"websocket"``).
        policy: the fallback rules.
        emitter: where ``FallbackToHTTP``/``BackToWebSocket`` go.
        stats: ``fallbacks`` is counted here.
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        mode: TransportMode,
        websocket: Transport,
        http: Transport,
        policy: ConnectionPolicy,
        emitter: Emitter,
        stats: ClientStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.using = TransportKind.HTTP if mode == "http" else TransportKind.WEBSOCKET
        self.chosen = self.using
        self._transports = {TransportKind.WEBSOCKET: websocket, TransportKind.HTTP: http}
        self._policy = policy
        self._emitter = emitter
        self._stats = stats
        self._clock = clock
        self._fell_back_at: float | None = None
        self._probing = False
        self._drops = 0

    async def open(self) -> Transport:
        """The transport for the next attempt, connected.

        Raises:
            WebSocketRefusedError: the handshake was refused and the mode is ``"websocket"``.
            ConnectionLostError, ServerUnreachableError, APIError: the chosen transport could not connect.
        """
        while True:
            transport = self._choose()
            try:
                await transport.connect()
            except WebSocketRefusedError as error:
                if self.mode != "auto":
                    if error.status is None:
                        # No HTTP refusal, only silence (a dead route, an outage): with no HTTP to fall back to,
                        # this is an unreachable server, retried within the retry policy like any other.
                        raise ServerUnreachableError(error.reason) from error
                    raise
                self._give_up_websocket(error.reason)
                continue
            except ConnectionLostError:
                if self._probing:
                    self._give_up_websocket("")
                    continue
                raise
            if self._probing:
                self._probing = False
                self.using = TransportKind.WEBSOCKET
                self._fell_back_at = None
                self._drops = 0
                self._emitter.event(BackToWebSocket())
            return transport

    def dropped(self, error: ConnectionLostError) -> None:
        """A connection of the chosen transport failed; WebSocket mode that keeps failing gives way to HTTP."""
        if (
            self.mode != "auto"
            or self.chosen is not TransportKind.WEBSOCKET
            or isinstance(error, ServerUnreachableError)
        ):
            return
        self._drops += 1
        if self._drops >= self._policy.websocket_drop_limit:
            self._give_up_websocket(f"the WebSocket connection dropped {self._drops} times: {error.reason}")

    def succeeded(self) -> None:
        """A turn finished: the drop count starts over."""
        self._drops = 0

    def _choose(self) -> Transport:
        retry_after = self._policy.websocket_retry_after_s
        if (
            self.using is TransportKind.HTTP
            and self._fell_back_at is not None
            and self._clock() - self._fell_back_at >= retry_after
        ):
            self._probing = True
            self.chosen = TransportKind.WEBSOCKET
        else:
            self.chosen = self.using
        return self._transports[self.chosen]

    def _give_up_websocket(self, reason: str) -> None:
        self._fell_back_at = self._clock()
        self._drops = 0
        self.using = TransportKind.HTTP
        if self._probing:  # still unusable: stay on HTTP quietly, try again after another interval
            self._probing = False
            return
        self._stats.fallbacks += 1
        self._emitter.event(FallbackToHTTP(reason))
