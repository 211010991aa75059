"""The edge's one persistent link to the gateway: a WebSocket (permessage-deflate) that reconnects with backoff,
resumes every turn in flight after the last piece it saw, heals a gateway that lost a chain with one whole
request, and holds new turns while it is down (bounded by ``hold_s``).

A turn the gateway lost (it restarted, or the node the link reached died) is sent again under the same key: the
gateway answers it from the turn's stored log (the same generation, its pieces numbered alike, so what already
arrived is skipped) or generates it anew. A turn whose generation was interrupted (``generation_interrupted``: its
node died) is sent again under a new key, generated exactly once more. Either way the agent receives every piece
exactly once: a new generation replaces one the agent has seen nothing of (with ``hold_answers``, nothing of an
answer reaches the agent before its end), and is never joined to one it has seen part of (that turn ends with an
error in the agent's API)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson
import structlog
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tether.client.retry import Backoff, RetryPolicy
from tether.edge.chains import ChainBook, Delta, Sent
from tether.edge.link_http import HTTPCarrier
from tether.protocol import edge_wire as wire
from tether.protocol.delta import MISSING, diff
from tether.protocol.edge_wire import API, Piece

_log = structlog.get_logger("tether.edge")

CLOSE_MESSAGE_TOO_BIG: Final = 1009

KEEPALIVE: Final[Piece] = {"keepalive": True}
"""Yielded by :meth:`GatewayLink.pieces` when nothing arrived for a keep-alive interval."""


class LinkState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    HTTP = "http"
    """Up over the HTTP fallback (the WebSocket was refused)."""
    CLOSED = "closed"


class LinkUnavailableError(Exception):
    """A turn could not be answered: the link stayed down past the offline hold, or the gateway lost the turn."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(slots=True)
class EdgeStats:
    """What ``tether edge status`` reports."""

    state: LinkState = LinkState.CONNECTING
    connects: int = 0
    drops: int = 0
    resumes: int = 0
    heals: int = 0
    fallbacks: int = 0
    lost_turns: int = 0
    """Turns sent again because the gateway had no log of them (it restarted; the link reached another node)."""
    interrupted: int = 0
    """Turns whose generation was interrupted (its node died), sent again under a new key."""
    turns: int = 0
    request_bytes: int = 0
    """The agents' request bodies, as they sent them to the edge."""
    uplink_bytes: int = 0
    """What the edge sent the gateway for them (frames before compression)."""
    downlink_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "connects": self.connects,
            "drops": self.drops,
            "resumes": self.resumes,
            "heals": self.heals,
            "fallbacks": self.fallbacks,
            "lost_turns": self.lost_turns,
            "interrupted": self.interrupted,
            "turns": self.turns,
            "request_bytes": self.request_bytes,
            "uplink_bytes": self.uplink_bytes,
            "downlink_bytes": self.downlink_bytes,
            "bytes_saved": max(0, self.request_bytes - self.uplink_bytes),
        }


@dataclass(slots=True)
class Turn:
    """One agent request on its way through the link."""

    key: str
    api: API
    path: str
    request: dict[str, Any]
    headers: dict[str, str]
    delta: Delta
    session: str | None = None
    """The agent's WebSocket-mode connection this turn came on (Responses only)."""
    last_seq: int = -1
    accepted: bool = False
    delivered: bool = False
    """The agent has been sent part of the answer (beyond its status): the turn can no longer start over."""
    created: float = 0.0
    """When the agent sent it (the link's clock): the offline hold counts from here or the drop, the later."""
    finished: bool = False
    """Its end (or a failure) reached the agent's queue: nothing more is asked for it."""
    hold: bool = False
    """Keep the answer's pieces (all but its head) until its end, so an interrupted one can be replaced unseen."""
    held: list[Piece] = field(default_factory=list)
    generation: str | None = None
    """The generation answering it, as the gateway's head named it (a response id)."""
    resend: bool = False
    """The gateway lost the turn's log: send the turn again rather than a resume."""
    uploaded: int = 0
    """The bytes of the frames sent for this turn (before compression)."""
    frames: list[bytes] = field(default_factory=list)
    """Those frames without the agent's headers, kept only when the link captures (tests)."""
    queue: asyncio.Queue[Piece | LinkUnavailableError] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """How the link connects and how long things wait.

    Args:
        url: the gateway's edge endpoint (``ws://`` or ``wss://``).
        key: the gateway's API key (sent as ``Authorization: Bearer``).
        hold_s: how long a turn waits while the link is down before the agent gets an error.
        keepalive_s: how often the agent's waiting stream gets a keep-alive.
        ping_s: the WebSocket ping interval (a dead link is noticed within about twice this).
        connect_timeout_s: to open the WebSocket.
        retry: the reconnect backoff.
        max_frame_bytes: the largest downlink frame accepted.
        capture: keep each turn's frames (without headers) on the turn, for tests.
        http_url: the gateway's ``/v1/tether/edge`` over HTTP, for the fallback (``None``: no fallback).
        transport: ``"auto"`` (WebSocket, HTTP while it is refused), ``"websocket"`` or ``"http"`` only.
        websocket_retry_after_s: after falling back, how long before the WebSocket is tried again.
        hold_answers: keep each answer until its end before the agent sees any of it (but its status), so a turn
            whose generation was interrupted is retried without the agent noticing, at the cost of streaming.
    """

    url: str
    key: str | None = None
    hold_s: float = 300.0
    keepalive_s: float = 10.0
    ping_s: float = 10.0
    connect_timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=1_000_000, max_elapsed_s=1e12))
    max_frame_bytes: int = 64 * 1024 * 1024
    capture: bool = False
    http_url: str | None = None
    transport: str = "auto"
    websocket_retry_after_s: float = 300.0
    hold_answers: bool = False


Accepted = Callable[[Sent], None]


class GatewayLink:
    """The link and the turns in flight on it.

    Args:
        options: where and how to connect.
        book: the chains (delta bases and known content) this link's deltas are built from.
        on_accepted: called when the gateway rebuilt a request (the journal records it).
        on_forget: called when the gateway turned out to have lost what the book says it holds.
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        options: LinkOptions,
        book: ChainBook,
        *,
        on_accepted: Accepted | None = None,
        on_forget: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.book = book
        self.stats = EdgeStats()
        self._on_accepted = on_accepted
        self._on_forget = on_forget
        self._clock = clock
        self._turns: dict[str, Turn] = {}
        self._ws: ClientConnection | None = None
        self._sent_headers: dict[str, str] | None = None
        self._largest: tuple[int, str] | None = None
        """The largest frame sent on this WebSocket: its bytes and its turn's key (a key, so that a finished turn's
        request is not kept)."""
        self._down_since: float | None = clock()
        self._runner: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._http = (
            HTTPCarrier(options.http_url, options.key, options.retry, options.connect_timeout_s, 300.0)
            if options.http_url and options.transport != "websocket"
            else None
        )
        self._over_http = options.transport == "http" and self._http is not None
        self._http_tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="tether-edge-link")

    async def aclose(self) -> None:
        self.stats.state = LinkState.CLOSED
        tasks = [*self._http_tasks.values(), *([self._runner] if self._runner is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        for turn in list(self._turns.values()):
            turn.queue.put_nowait(LinkUnavailableError(503, "edge_closed", "The edge is shutting down."))
        self._turns.clear()

    def submit(
        self,
        api: API,
        path: str,
        request: dict[str, Any],
        headers: dict[str, str],
        size: int,
        session: str | None = None,
    ) -> Turn:
        """Send one agent request (now, or when the link is back); ``session`` for a WebSocket-mode connection's."""
        turn = Turn(uuid.uuid4().hex, api, path, request, headers, self.book.delta(api, path, request), session)
        turn.created = self._clock()
        turn.hold = self.options.hold_answers
        self._turns[turn.key] = turn
        self.stats.turns += 1
        self.stats.request_bytes += size
        if self._ws is not None or self._over_http:
            self._spawn_send(turn)
        return turn

    async def pieces(self, turn: Turn) -> AsyncIterator[Piece]:
        """The answer's pieces, with :data:`KEEPALIVE` whenever ``keepalive_s`` pass in silence.

        Raises:
            LinkUnavailableError: the link stayed down past the hold, or the gateway lost a turn already under way.
        """
        try:
            while True:
                try:
                    item = await asyncio.wait_for(turn.queue.get(), self.options.keepalive_s)
                except TimeoutError:
                    down = self._down_since
                    if down is not None and self._clock() - max(down, turn.created) > self.options.hold_s:
                        raise LinkUnavailableError(
                            503, "gateway_unreachable", "The edge could not reach the gateway within its offline hold."
                        ) from None
                    yield KEEPALIVE
                    continue
                if isinstance(item, LinkUnavailableError):
                    raise item
                if "head" not in item and "end" not in item:
                    turn.delivered = True
                yield item
                if item.get("end"):
                    return
        finally:
            self._turns.pop(turn.key, None)

    async def _run(self) -> None:
        backoff = Backoff(self.options.retry, random.Random())
        while True:
            if self._over_http:
                if self.options.transport == "http":
                    self.stats.state = LinkState.HTTP
                    self._down_since = None
                    return
                await asyncio.sleep(self.options.websocket_retry_after_s)
            self.stats.state = LinkState.CONNECTING
            try:
                async with connect(
                    self.options.url,
                    additional_headers={"authorization": f"Bearer {self.options.key}"} if self.options.key else None,
                    compression="deflate",
                    max_size=self.options.max_frame_bytes,
                    open_timeout=self.options.connect_timeout_s,
                    ping_interval=self.options.ping_s,
                    ping_timeout=self.options.ping_s,
                    close_timeout=1.0,
                ) as ws:
                    await self._connected(ws)
                    backoff.reset()
                    async for message in ws:
                        self._receive(message)
            except websockets.exceptions.InvalidStatus as error:
                if self._http is not None:  # an HTTP answer to the upgrade: the WebSocket is refused on this path
                    _log.info("edge.link.http_fallback", status=error.response.status_code)
                    self._fall_back()
                    continue
                self._log_down(error, backoff)
            except websockets.exceptions.ConnectionClosedError as error:
                if error.rcvd is not None and error.rcvd.code == CLOSE_MESSAGE_TOO_BIG:
                    self._too_big()
                self._log_down(error, backoff)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
                self._log_down(error, backoff)
            self._disconnected()
            delay = backoff.next_delay()
            await asyncio.sleep(self.options.retry.max_delay_s if delay is None else delay)

    def _log_down(self, error: Exception, backoff: Backoff) -> None:
        if self._ws is not None or (self.stats.connects == 0 and backoff.attempt == 0):
            _log.info("edge.link.down", error=type(error).__name__)

    def _too_big(self) -> None:
        """The gateway closed the link on a frame above what its WebSocket reads (twice its limit) before it could
        answer it: the largest frame sent on the link was that one (every frame it read is within its limit), and its
        turn is ended, if its agent still waits. Never the largest of the turns in flight: the turn that sent it may be
        gone, and another, accepted and generating, would end with a 413. Sent again, it would close the link
        again, for ever; the agent gets a 413 instead."""
        if self._largest is None:
            return
        size, key = self._largest
        turn = self._turns.get(key)
        if turn is None or turn.finished:
            return  # its agent is gone: it is not sent again, and no other turn sent that frame
        _log.info("edge.turn.too_large", frame_bytes=size)
        message = "The request is larger than the gateway accepts (it closed the link on it: message too big)."
        self._fail(turn, 413, "request_too_large", message)

    def _fall_back(self) -> None:
        self._over_http = True
        self._ws = None
        self._down_since = None
        self.stats.fallbacks += 1
        self.stats.state = LinkState.HTTP
        for turn in list(self._turns.values()):
            self._spawn_send(turn)

    async def _connected(self, ws: ClientConnection) -> None:
        self._over_http = False
        self._ws = ws
        self._sent_headers = None
        self._largest = None
        self._down_since = None
        self.stats.connects += 1
        self.stats.state = LinkState.UP
        _log.info("edge.link.up", turns=len(self._turns))
        for turn in list(self._turns.values()):
            if turn.last_seq >= 0:
                self.stats.resumes += 1
            self._spawn_send(turn)

    def _disconnected(self) -> None:
        if self._ws is not None:
            self.stats.drops += 1
        self._ws = None
        if self._down_since is None:
            self._down_since = self._clock()
        self.stats.state = LinkState.DOWN

    def _spawn_send(self, turn: Turn) -> None:
        if self._over_http and self._http is not None:
            running = self._http_tasks.get(turn.key)
            if running is None or running.done():
                self._http_tasks[turn.key] = asyncio.create_task(self._carry(self._http, turn))
            return
        task = asyncio.create_task(self._send_turn(turn))
        task.add_done_callback(lambda done: done.exception() if not done.cancelled() else None)

    async def _carry(self, carrier: HTTPCarrier, turn: Turn) -> None:
        def sent(size: int) -> None:
            self.stats.uplink_bytes += size
            turn.uploaded += size

        try:
            await carrier.carry(lambda: self._frame(turn, None), self._receive, lambda: turn.finished, sent)
        finally:
            self._http_tasks.pop(turn.key, None)

    def _frame(self, turn: Turn, previous_headers: dict[str, str] | None) -> dict[str, Any]:
        """The frame that asks for ``turn`` now: a resume once part of it arrived, else the turn itself (with its
        headers as a delta against ``previous_headers``, the connection's last, when they differ)."""
        frame: dict[str, Any]
        if turn.last_seq >= 0 and not turn.resend:
            frame = {"type": wire.RESUME, "turn": turn.key, "after": turn.last_seq}
        else:
            delta = turn.delta
            frame = {
                "type": wire.TURN, "turn": turn.key, "api": turn.api, "path": turn.path,
                "id": delta.digest, "base": delta.base, "patch": delta.patch,
            }  # fmt: skip
            if turn.session is not None:
                frame["session"] = turn.session
            if turn.headers != previous_headers:
                frame["headers"] = diff(MISSING if previous_headers is None else previous_headers, turn.headers)
        if self.options.capture:
            turn.frames.append(orjson.dumps({k: v for k, v in frame.items() if k != "headers"}))
        return frame

    async def _send_turn(self, turn: Turn) -> None:
        async with self._send_lock:
            ws = self._ws
            if ws is None or turn.key not in self._turns or turn.finished:
                return
            frame = self._frame(turn, self._sent_headers)
            if "headers" in frame:
                self._sent_headers = turn.headers
            data = orjson.dumps(frame)
            if self._largest is None or len(data) >= self._largest[0]:
                self._largest = (len(data), turn.key)
            with contextlib.suppress(websockets.exceptions.WebSocketException, OSError):
                await ws.send(data.decode())
                self.stats.uplink_bytes += len(data)
                turn.uploaded += len(data)

    def _receive(self, message: str | bytes) -> None:
        self.stats.downlink_bytes += len(message)
        try:
            frame = orjson.loads(message)
        except orjson.JSONDecodeError:
            _log.warning("edge.link.bad_frame")
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "error":
            error = frame.get("error") or {}
            status, code, message = int(frame.get("status") or 502), str(error.get("code")), str(error.get("message"))
            if "turn" in frame:  # one request refused (over the gateway's limits): the agent's error, not retried
                refused = self._turns.get(str(frame["turn"]))
                if refused is not None:
                    self._fail(refused, status, code, message)
                return
            for waiting in list(self._turns.values()):  # the link refused, or a frame: nothing on it can proceed
                waiting.finished = True
                waiting.queue.put_nowait(LinkUnavailableError(status, code, message))
            return
        turn = self._turns.get(str(frame.get("turn")))
        if turn is None:
            return
        if kind == wire.REFUSED:
            self._refused(turn, frame)
        elif kind == wire.OUT:
            self._out(turn, frame)

    def _out(self, turn: Turn, frame: dict[str, Any]) -> None:
        seq = frame.get("seq")
        if not isinstance(seq, int):
            return
        if seq == 0 and "head" in frame:  # a log's first piece: the generation answering the turn
            turn.resend = False
            generation = frame.get("gen")
            if turn.last_seq >= 0 and generation != turn.generation and not self._start_over(turn):
                return
            turn.generation = generation if isinstance(generation, str) else None
        if seq <= turn.last_seq:
            return  # a piece already delivered (a resume overlapping what arrived)
        if seq != turn.last_seq + 1:
            self._spawn_send(turn)  # a gap: ask again from the last piece seen
            return
        turn.last_seq = seq
        if not turn.accepted:
            turn.accepted = True
            sent = self.book.accepted(turn.api, turn.path, turn.request)
            if self._on_accepted is not None:
                self._on_accepted(sent)
        piece = {key: value for key, value in frame.items() if key not in ("type", "turn", "seq", "gen")}
        if piece.get("interrupted"):
            self._interrupted(turn)
            return
        if piece.get("end"):
            turn.finished = True
        if not turn.hold or "head" in piece:
            turn.queue.put_nowait(piece)
            return
        turn.held.append(piece)
        if turn.finished:
            for held in turn.held:
                turn.queue.put_nowait(held)
            turn.held.clear()

    def _start_over(self, turn: Turn) -> bool:
        """A new generation answers a turn the agent may have seen part of: start over if it has seen nothing."""
        if turn.delivered:
            self._fail(turn, 502, "generation_replaced", "The gateway lost this answer part-way and began a new one.")
            return False
        _log.info("edge.turn.start_over", generation=turn.generation)
        turn.held.clear()
        turn.last_seq = -1
        return True

    def _interrupted(self, turn: Turn) -> None:
        """The turn's generation stopped with its node: send it again under a new key (it is generated once more),
        unless the agent has seen part of it."""
        if turn.delivered:
            self._fail(turn, 503, "generation_interrupted", "The gateway node generating this answer stopped.")
            return
        self.stats.interrupted += 1
        _log.info("edge.turn.retry", generation=turn.generation)
        old = turn.key
        turn.key = uuid.uuid4().hex
        self._turns[turn.key] = self._turns.pop(old, turn)
        carrying = self._http_tasks.pop(old, None)
        if carrying is not None:
            self._http_tasks[turn.key] = carrying
        turn.held.clear()
        turn.last_seq, turn.generation, turn.resend, turn.accepted = -1, None, False, False
        self._spawn_send(turn)

    def _fail(self, turn: Turn, status: int, code: str, message: str) -> None:
        turn.finished = True
        turn.held.clear()
        turn.queue.put_nowait(LinkUnavailableError(status, code, message))

    def _refused(self, turn: Turn, frame: dict[str, Any]) -> None:
        code = frame.get("code")
        if code in wire.HEAL_CODES:
            self.stats.heals += 1
            _log.info("edge.heal", code=code)
            self.book.forget()
            if self._on_forget is not None:
                self._on_forget()
            turn.delta = self.book.whole(turn.request)
            self._spawn_send(turn)
        elif code == wire.HEADERS_UNKNOWN:  # the gateway never applied headers we counted sent: send them whole
            self._sent_headers = None
            self._spawn_send(turn)
        elif code == wire.TURN_NOT_FOUND:
            self.stats.lost_turns += 1  # the gateway lost the turn's log (it restarted): send the turn itself again
            turn.resend = True
            self._spawn_send(turn)
        else:
            turn.finished = True
            turn.queue.put_nowait(
                LinkUnavailableError(502, str(code), str(frame.get("message") or "The gateway lost the turn."))
            )
