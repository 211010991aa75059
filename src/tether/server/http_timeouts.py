"""Header and body timeouts for HTTP/1.1 connections, which uvicorn 0.54 does not have.

uvicorn closes a keep-alive connection that stays idle between requests (``timeout_keep_alive``), but a client that
dribbles its headers or its body a byte at a time, or opens a connection and sends nothing, holds it forever. This
is uvicorn's h11 protocol with two deadlines, chosen from h11's view of the client's side of the connection:

* headers: a request's headers must be complete ``header_timeout_s`` after the connection opens, or after the
  next request's first bytes arrive on a kept-alive connection (an idle kept-alive connection is uvicorn's
  ``timeout_keep_alive``, ``http.idle_timeout_s``: it closes quietly, where a header deadline would answer 408);
* body: its body may pause at most ``body_timeout_s`` between two pieces, and from then on must keep an average of
  ``body_min_rate`` bytes a second since its headers. A slow link (a plane's 300 kbit/s uplink) sends a large body
  for as long as it takes; a client that dribbles a byte at a time is cut after ``body_timeout_s``.

A missed deadline gets ``408 request_timeout`` (when no response has started) and a close. A WebSocket upgrade
leaves these timers behind: the socket then has its own ping timeout.

Two more gaps of uvicorn's protocol are closed here, as each let a client hold a socket or lose its answer:

* an upgrade request the WebSocket library cannot parse (a body, a transfer coding, more headers than it reads)
  was handed over all the same, and the library refused it without a word: no answer, no timer, the socket held
  for as long as the client liked. It now gets ``400`` and a close;
* a client that half-closes its side after sending a request (``shutdown(SHUT_WR)``, as ``nc -N`` and some
  proxies do) had its connection closed at once, unanswered. The requests it sent are now answered, then the
  connection is closed;
* a response sent before the request's body was read (``413 request_too_large``, ``415``, a ``401`` decided on the
  headers: ``server/unread_body.py`` marks every such answer) left uvicorn reading and
  discarding the rest of the body, however large, on a connection it kept open. Such a response now says
  ``connection: close`` and the close *lingers* (as nginx's ``lingering_close``): the response is sent and our side
  shut for writing, then at most ``LINGER_BYTES`` more, or ``LINGER_S`` seconds, of the body are read and dropped,
  and the connection closes. Closing at once would reset the connection under a client still sending, and clients
  (httpx, the ``openai`` SDK) then see a connection error instead of the answer.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any, ClassVar, cast

import h11
import orjson
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tether.protocol.errors import ProtocolError

_log = structlog.get_logger("tether.server")


LINGER_BYTES = 1024 * 1024
LINGER_S = 1.0


class Phase(enum.Enum):
    HEADERS = "headers"
    BODY = "body"


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines; subclass it with :func:`timed_h11_protocol`."""

    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 60.0
    body_min_rate: ClassVar[float] = 1024.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._upgraded = False
        self._body_started = 0.0
        self._body_bytes = 0
        self._client_done = False
        self._lingering: asyncio.TimerHandle | None = None
        self._lingered = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:  # the rest of a body already answered: dropped, up to a bound
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self._close_now()
            return
        super().data_received(data)
        self._watch_cycle()
        self._track()
        if self._phase is Phase.BODY:
            self._body_progress(len(data))

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio reads a true value as "keep it open"
        """The client closed its side: keep ours open (True) while a request it sent in full awaits its answer."""
        if self._lingering is not None:
            self._close_now()
            return False
        self._client_done = True
        in_flight = self.cycle is not None and not self.cycle.response_complete
        return in_flight and self.conn.their_state is h11.DONE

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if one was sent
        self._watch_cycle()
        self._cancel()
        idle = self.cycle is None or self.cycle.response_complete
        if self._client_done and idle and not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Answer a malformed request (a bad chunk size, say) with uvicorn's 400 and close, as uvicorn does, except
        for a request already in flight: one answered on its headers before its body was read (a 401, a 404) has its
        cycle told that the client is gone, so the app's answer is dropped instead of failing in h11 (a 500 attempt
        and a traceback in the log), and a response already started is cut rather than followed by a second one."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if self.conn.our_state is h11.SEND_RESPONSE or self.conn.our_state is h11.IDLE:
            super().send_400_response(msg)
        elif not self.transport.is_closing():
            self.transport.close()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._upgraded = True
        self._cancel()
        super().handle_websocket_upgrade(event)
        websocket = self.transport.get_protocol()
        if isinstance(websocket, WebSocketsSansIOProtocol) and not websocket.handshake_initiated:
            refused = websocket.conn.handshake_exc
            if refused is not None and not self.transport.is_closing():
                self._refuse_upgrade(refused)

    def _watch_cycle(self) -> None:
        """Give the request's cycle a transport whose close lingers while the request's body is still unread."""
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _LingeringClose):
            cycle.transport = cast(asyncio.Transport, _LingeringClose(self.transport, self))  # a duck-typed proxy

    def close_after_unread_body(self) -> None:
        """Close, or (the client still sending a body no one will read) shut our side and linger a little."""
        if self.transport.is_closing():
            return
        if self._upgraded or self.conn.their_state is not h11.SEND_BODY or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._cancel()
        self.transport.write_eof()  # the answer, then our FIN: the client reads it whole while it is still sending
        self.flow.resume_reading()
        self._lingering = self.loop.call_later(LINGER_S, self._close_now)

    def _close_now(self) -> None:
        if self._lingering is not None:
            self._lingering.cancel()
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse_upgrade(self, refused: Exception) -> None:
        reason = f"{refused} ({refused.__cause__})" if refused.__cause__ else str(refused)
        _log.warning("http.client_mistake", problem="Invalid WebSocket upgrade request.", reason=reason)
        body = f"Failed to open a WebSocket connection: {reason}.\n".encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
        )
        self.transport.close()

    def _track(self) -> None:
        if self._upgraded or self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        phase = Phase.HEADERS if state is h11.IDLE else Phase.BODY if state is h11.SEND_BODY else None
        if phase is self._phase:
            return
        self._cancel()
        self._phase = phase
        if phase is not None:
            timeout = self.header_timeout_s if phase is Phase.HEADERS else self.body_timeout_s
            self._deadline = self.loop.call_later(timeout, self._expired, phase)
        if phase is Phase.BODY:
            self._body_started, self._body_bytes = self.loop.time(), 0

    def _body_progress(self, received: int) -> None:
        """More of the body arrived: the pause allowance starts again while the body keeps its minimum rate."""
        self._body_bytes += received
        now = self.loop.time()
        elapsed = now - self._body_started
        if elapsed > self.body_timeout_s and self._body_bytes < self.body_min_rate * elapsed:
            return
        self._cancel_timer()
        self._deadline = self.loop.call_later(self.body_timeout_s, self._expired, Phase.BODY)

    def _cancel(self) -> None:
        self._cancel_timer()
        self._phase = None

    def _cancel_timer(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: Phase) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        timeout = self.header_timeout_s if phase is Phase.HEADERS else self.body_timeout_s
        _log.warning("http.timeout", phase=phase.value, timeout_s=timeout)
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(_timeout_response(phase, timeout))
        if self.cycle is not None:
            self.cycle.keep_alive = False
        # A client cut mid-body is often still sending: closing at once would answer its next bytes with a reset,
        # which can reach it before the 408 does (and a kernel drops what it had not read yet). The close lingers,
        # as after a 413; past the headers' deadline nothing is in flight, and it closes at once.
        self.close_after_unread_body()


class _LingeringClose:
    """The transport a request's cycle writes to; its ``close`` lingers (see the module's docstring)."""

    def __init__(self, transport: asyncio.Transport, protocol: TimedH11Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_after_unread_body()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def timed_h11_protocol(
    header_timeout_s: float, body_timeout_s: float, body_min_rate: float = 1024.0
) -> type[TimedH11Protocol]:
    """A :class:`TimedH11Protocol` class with these deadlines (uvicorn builds one protocol object per connection)."""
    return type(
        "TimedH11Protocol",
        (TimedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s, "body_min_rate": body_min_rate},
    )


def _timeout_response(phase: Phase, timeout: float) -> bytes:
    error = ProtocolError(
        408, "request_timeout", f"The request's {phase.value} did not arrive within {timeout:g} seconds."
    )
    body = orjson.dumps(error.http_body())
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    return head + body
