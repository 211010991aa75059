"""An OpenAI Responses upstream in WebSocket mode: one upstream socket per active lane, rotated before its age cap.

A socket carries one response at a time, so a lane (a client connection's ``stream_id``, FIFO in the engine) keeps
its own socket, and the upstream's connection-local cache (its most recent response) follows the lane: that is what
lets ``store=false`` chains continue with deltas. Turns that come over HTTP (no lane) borrow an idle socket from a
small shared pool, preferring the one that holds their parent. A socket older than ``max_age_s`` is closed before a
turn would start on it; sockets idle for ``idle_timeout_s`` are closed whenever the pool is next used.

A socket is authenticated once, by its upgrade request, so a socket opened with one agent's forwarded credential must
never carry another's turn: :class:`PoolsByCredential` keeps one pool per credential, keyed by its SHA-256.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from tether.protocol.vocabulary import ANSWER_END_EVENTS
from tether.providers.redaction import sanitise
from tether.providers.responses_events import decode_event, reported_error
from tether.providers.responses_steering import SocketSteering, SteerSender
from tether.providers.upstream_errors import UpstreamConnectionError
from tether.types import JSONObject

_log = structlog.get_logger("tether.providers")

Clock = Callable[[], float]


def websocket_url(base_url: str) -> str:
    """``{base_url}/responses`` with ``http``→``ws`` and ``https``→``wss``, as the OpenAI SDK derives it."""
    url = base_url.rstrip("/") + "/responses"
    for plain, secure in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(plain):
            return secure + url[len(plain) :]
    return url


@dataclass(eq=False, slots=True)
class UpstreamSocket:
    """One upstream WebSocket and what its connection-local cache holds.

    Attributes:
        connection: the socket.
        opened_at: when it was opened (pool clock).
        last_used: when its last turn ended.
        holds: the upstream response its connection-local cache holds (the most recent one), if known.
        busy: a turn is using it.
        in_response: a request was sent and its last event not read yet; such a socket cannot carry another turn.
        steering: the steers it carries (:mod:`tether.providers.responses_steering`).
    """

    connection: ClientConnection
    opened_at: float
    last_used: float
    holds: str | None = None
    busy: bool = False
    in_response: bool = False
    steering: SocketSteering = field(default_factory=SocketSteering)
    successor: JSONObject | None = None  # a successor's response.created, read after the steered response ended

    @property
    def open(self) -> bool:
        return self.connection.state is State.OPEN


class SocketPool:
    """The upstream sockets of one provider.

    Sockets leave the pool synchronously (so no two turns ever share one) and are closed in the background, so a
    rotation or an eviction never delays a turn by a closing handshake.

    Args:
        url: the upstream's WebSocket URL.
        headers: the upgrade request's headers (with ``Authorization``).
        secrets: values never to show in a message.
        max_age_s: a socket this old is replaced before a turn starts on it.
        open_timeout_s: the opening handshake's limit.
        idle_timeout_s: a socket unused this long is closed.
        max_shared: idle sockets kept for turns without a lane.
        max_lanes: lane sockets kept; the least recently used idle ones go first.
        clock: monotonic seconds (tests move it).
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        secrets: tuple[str, ...],
        *,
        max_age_s: float,
        open_timeout_s: float = 10.0,
        idle_timeout_s: float = 300.0,
        max_shared: int = 4,
        max_lanes: int = 1024,
        max_message_bytes: int = 64 * 1024 * 1024,
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = url
        self._headers = headers
        self._secrets = secrets
        self.max_age_s = max_age_s
        self.open_timeout_s = open_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_shared = max_shared
        self.max_lanes = max_lanes
        self.max_message_bytes = max_message_bytes
        self.clock = clock
        self.lanes: dict[str, UpstreamSocket] = {}
        self.shared: list[UpstreamSocket] = []
        self.lent: list[UpstreamSocket] = []
        """Sockets handed out by :meth:`acquire` and not released yet (closed too by :meth:`aclose`)."""
        self.closed = False
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def borrowed(self) -> int:
        """How many sockets are out (see :attr:`lent`)."""
        return len(self.lent)

    async def acquire(self, lane_key: str | None, prefer: str | None = None) -> UpstreamSocket:
        """A socket for one turn: the lane's own, or an idle shared one (the one holding ``prefer`` first).

        Raises:
            UpstreamReportedError: the upstream refused the upgrade (e.g. 401, 429).
            UpstreamConnectionError: the upstream could not be reached, or the pool is closed.
        """
        if self.closed:
            raise UpstreamConnectionError("the provider is shutting down")
        socket = await self._acquire(lane_key, prefer)
        if self.closed:  # closed while this socket was opening: it goes too
            self._discard(socket, "shutdown")
            raise UpstreamConnectionError("the provider is shutting down")
        self.lent.append(socket)
        return socket

    async def _acquire(self, lane_key: str | None, prefer: str | None) -> UpstreamSocket:
        self._sweep()
        current = self.lanes.get(lane_key) if lane_key is not None else None
        if current is not None and not current.busy and self._usable(current):
            current.busy = True
            return current
        if lane_key is not None and (current is None or not current.busy):
            if current is not None:
                self._discard(self.lanes.pop(lane_key), "rotated" if current.open else "closed")
            socket = await self._open()
            self.lanes.setdefault(lane_key, socket)
            return socket
        # No lane, or (unexpectedly) the lane's socket is busy: borrow a shared one.
        self.shared.sort(key=lambda s: (prefer is None or s.holds != prefer, -s.last_used))
        while self.shared:
            socket = self.shared.pop(0)
            if self._usable(socket):
                socket.busy = True
                return socket
            self._discard(socket, "rotated" if socket.open else "closed")
        return await self._open()

    def release(self, socket: UpstreamSocket, lane_key: str | None, *, reusable: bool) -> None:
        """Give a socket back after a turn; one that is broken, or has a response still running, is closed (and
        every one, once the pool is closed)."""
        with contextlib.suppress(ValueError):  # released twice: harmless
            self.lent.remove(socket)
        socket.busy = False
        if self.closed:
            if socket.open:
                self._discard(socket, "shutdown")
            return
        socket.last_used = self.clock()
        owned = lane_key is not None and self.lanes.get(lane_key) is socket
        if not reusable or socket.in_response or not socket.open:
            if owned and lane_key is not None:
                del self.lanes[lane_key]
            self._discard(socket, "broken" if socket.open else "closed")
        elif not owned:
            self.shared.append(socket)
            while len(self.shared) > self.max_shared:
                self._discard(self.shared.pop(0), "surplus")

    async def aclose(self) -> None:
        """Close every socket, the idle ones and those lent to turns still running (those turns then fail with
        the socket closed mid-turn, a clean 502, rather than keep a socket open behind a closed pool)."""
        self.closed = True
        lane_sockets = list(self.lanes.values())  # a lane's socket stays in ``lanes`` while it is lent
        for socket in [*lane_sockets, *self.shared, *(s for s in self.lent if not any(s is o for o in lane_sockets))]:
            self._discard(socket, "shutdown")
        self.lanes.clear()
        self.shared.clear()
        await asyncio.gather(*self._closing)

    def _usable(self, socket: UpstreamSocket) -> bool:
        return socket.open and self.clock() - socket.opened_at < self.max_age_s

    def _sweep(self) -> None:
        now = self.clock()
        for last_used, key in sorted((s.last_used, key) for key, s in self.lanes.items() if not s.busy):
            if now - last_used >= self.idle_timeout_s or len(self.lanes) >= self.max_lanes:
                self._discard(self.lanes.pop(key), "idle")
        for socket in [s for s in self.shared if now - s.last_used >= self.idle_timeout_s]:
            self.shared.remove(socket)
            self._discard(socket, "idle")

    async def _open(self) -> UpstreamSocket:
        try:
            connection = await connect(
                self.url,
                additional_headers=self._headers,
                open_timeout=self.open_timeout_s,
                max_size=self.max_message_bytes,
                close_timeout=2,
                user_agent_header="tether",
            )
        except InvalidStatus as exc:
            response = exc.response
            try:
                payload: object = orjson.loads(response.body or b"")
            except orjson.JSONDecodeError:
                payload = {"error": {"message": f"the upgrade was refused (HTTP {response.status_code})"}}
            error = reported_error(payload, response.status_code)
            error.message = sanitise(error.message, self._secrets)
            retry_after = response.headers.get("retry-after")
            if retry_after:
                error.headers["retry-after"] = retry_after
            raise error from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            reason = sanitise(str(exc), self._secrets) or type(exc).__name__
            raise UpstreamConnectionError(f"could not open the WebSocket ({reason})") from None
        now = self.clock()
        _log.debug("upstream.ws.open", url=self.url)
        return UpstreamSocket(connection, opened_at=now, last_used=now, busy=True)

    def _discard(self, socket: UpstreamSocket, reason: str) -> None:
        socket.steering.abandon("The upstream connection carrying the steering input was closed.")
        _log.debug("upstream.ws.close", url=self.url, reason=reason, age_s=round(self.clock() - socket.opened_at, 1))
        task = asyncio.get_running_loop().create_task(self._close(socket.connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(connection: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await connection.close()


class PoolsByCredential:
    """One :class:`SocketPool` per forwarded credential (an agent's ``Authorization``), so no socket is ever shared
    between two credentials. Pools are keyed by the credential's SHA-256; the value itself lives only in its pool's
    upgrade headers. Past ``max_pools``, the least recently used pool with no socket out is closed.

    Args:
        make: a pool whose upgrade requests carry these extra headers.
        max_pools: pools kept at once.
    """

    def __init__(self, make: Callable[[dict[str, str]], SocketPool], max_pools: int = 64) -> None:
        self._make = make
        self.max_pools = max_pools
        self.pools: OrderedDict[str, SocketPool] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def pool(self, headers: dict[str, str]) -> SocketPool:
        """The pool of the credential ``headers`` carry (created on first use)."""
        key = hashlib.sha256(orjson.dumps(headers, option=orjson.OPT_SORT_KEYS)).hexdigest()
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = self._make(headers)
            self._evict(keep=key)
        self.pools.move_to_end(key)
        return pool

    def _evict(self, keep: str) -> None:
        for key in [key for key, pool in self.pools.items() if pool.borrowed == 0 and key != keep]:
            if len(self.pools) <= self.max_pools:
                return
            task = asyncio.get_running_loop().create_task(self.pools.pop(key).aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        pools = list(self.pools.values())
        self.pools.clear()
        await asyncio.gather(*(pool.aclose() for pool in pools), *self._closing)


async def exchange(
    socket: UpstreamSocket,
    frame: JSONObject | None,
    timeout_s: float,
    *,
    error_grace_s: float = 2.0,
    sender: SteerSender | None = None,
    first: JSONObject | None = None,
    answer_grace_s: float = 10.0,
) -> AsyncGenerator[JSONObject, None]:
    """Send one ``response.create`` and yield its events, up to and including the terminal one (or an ``error``).

    An ``error`` inside a running response is held back until the ``response.failed`` that follows it (for at most
    ``error_grace_s``), then yielded as the terminal event: it carries the code. A socket whose response was not
    read to its end keeps ``in_response`` set, so the pool closes it rather than hand a stale stream to another turn.

    With a ``sender``, the turn's steers go up while the response streams, and the upstream's answers to them are
    taken out of the stream (:class:`~tether.providers.responses_steering.SocketSteering`). Once the response has
    ended, the socket is read on (for at most ``answer_grace_s``) until every steer sent for it has its outcome: a
    successor's ``response.created`` (kept as ``socket.successor``; the socket then stays in the response chain),
    ``response.steer.pending`` or ``response.steer.failed``. A steer still being sent at the response's end gets as
    long to go up (an upstream that stopped reading the socket costs the steer and the socket, not the turn).
    ``frame=None`` with ``first`` (a successor's
    ``response.created``, read already) reads a successor instead of creating a response.

    Raises:
        UpstreamConnectionError: the socket broke (``mid_turn`` once the frame was sent) or the turn took longer
            than ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    socket.in_response = True
    if frame is not None:
        try:
            await socket.connection.send(orjson.dumps(frame).decode())
        except ConnectionClosed:
            raise UpstreamConnectionError("the WebSocket was closed before the request was sent") from None
    started = False
    upstream_id: str | None = None
    held_error: JSONObject | None = None
    try:
        while True:
            if first is not None:
                event, first = first, None
            else:
                try:
                    async with asyncio.timeout_at(
                        deadline if held_error is None else min(deadline, loop.time() + error_grace_s)
                    ):
                        message = await socket.connection.recv()
                except TimeoutError:
                    if held_error is not None:
                        yield held_error
                        return
                    reason = f"the turn took longer than {timeout_s:g} s"
                    raise UpstreamConnectionError(reason, mid_turn=True, timeout=True) from None
                except ConnectionClosed as exc:
                    if held_error is not None:
                        yield held_error
                        return
                    code = exc.rcvd.code if exc.rcvd is not None else 1006
                    raise UpstreamConnectionError(
                        f"the WebSocket closed mid-turn (code {code})", mid_turn=True
                    ) from None
                event = decode_event(message)
            if socket.steering.read(event):
                continue
            kind = event.get("type")
            if kind == "response.created" and not started:
                started = True
                response = event.get("response")
                upstream_id = response.get("id") if isinstance(response, dict) else None
                if sender is not None and isinstance(upstream_id, str):
                    sender.start(upstream_id)
            if kind == "error" and started:
                held_error = event
                continue
            if kind in ANSWER_END_EVENTS:
                clean = True
                if sender is not None:
                    sender.port.upstream_ended()
                    await sender.stop(answer_grace_s)
                    if sender.broken:  # the socket is in an unknown state: its steers fail and it is closed
                        socket.steering.abandon("The upstream connection carrying the steering input was given up.")
                        socket.in_response, clean = True, False
                if clean and kind != "error" and upstream_id is not None:
                    clean = await _read_steering_outcomes(socket, upstream_id, answer_grace_s)
                if socket.successor is None and clean:
                    # A steer still unanswered (the response failed) may yet start something: not reused.
                    socket.in_response = socket.steering.unresolved(upstream_id or "")
                yield held_error if held_error is not None else event
                return
            yield event
    finally:
        if sender is not None:
            sender.cancel()


async def _read_steering_outcomes(socket: UpstreamSocket, upstream_id: str, grace_s: float) -> bool:
    """After a response's end: read until every steer sent for it has its outcome (a successor, pending or failed).

    Returns:
        ``False`` when the socket said nothing within ``grace_s``, closed, or sent something else: its steers are
        given up, and the socket is not used again.
    """
    while socket.steering.unresolved(upstream_id):
        try:
            async with asyncio.timeout(grace_s):
                event = decode_event(await socket.connection.recv())
        except (TimeoutError, ConnectionClosed, UpstreamConnectionError):
            socket.steering.abandon("The upstream did not say what became of the steering input.")
            socket.in_response = True  # its stream is in an unknown state: the pool closes it
            return False
        if socket.steering.read(event):
            continue
        if event.get("type") == "response.created":
            socket.steering.commit(upstream_id)
            socket.successor = event
            return True
        # Anything else belongs to no response of tether's: the socket cannot be trusted with another turn.
        socket.steering.abandon("The upstream sent an unexpected event after the steered response.")
        socket.in_response = True
        return False
    return True
