"""``AsyncSession``: a conversation with a Responses API server that survives drops, fallbacks and restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx2 as httpx

from tether.client.connector import Connector, TransportMode
from tether.client.errors import APIError, PendingTurnError, ResponseFailedError
from tether.client.events import ClientStats, Emitter, EventCallback, RequestCallback, TransportKind
from tether.client.journal import MEMORY, Journal, JournalItem, TurnRecord, TurnStatus
from tether.client.results import Delta, TurnResult
from tether.client.retry import RetryPolicy
from tether.client.stream import TurnStream
from tether.client.tracker import ResponseTracker
from tether.client.transport import ConnectionPolicy
from tether.client.transport import websocket_url as derive_websocket_url
from tether.client.transport_http import HTTPTransport
from tether.client.transport_ws import WebSocketTransport
from tether.client.turn import INHERITS_MARKER, TurnRunner, TurnSpec
from tether.protocol.errors import ProtocolError
from tether.protocol.request import normalise_input
from tether.types import Item, JSONObject

Input = str | Item | Sequence[Item]


class AsyncSession:
    """One conversation: sends only new items with ``previous_response_id``, journals every item locally.

    Use it as ``async with AsyncSession(...) as session``. Turns run one at a time.

    Args:
        base_url: the API base, e.g. ``http://127.0.0.1:8000/v1`` (or ``https://api.openai.com/v1``).
        model: the model; may be omitted when the journal already has this session.
        api_key: sent as ``Authorization: Bearer``.
        journal: a SQLite file path, an open :class:`Journal` (shared, left open), or ``None`` for memory only.
        session_id: the conversation's name in the journal; the same name continues it after a restart.
        store: ``store`` of every turn (``False``: the server keeps state only in the WebSocket connection).
        instructions: default ``instructions`` of every turn (the server never carries them over).
        tools: default ``tools`` of every turn.
        params: other create parameters (``reasoning``, ``max_output_tokens``, ...).
        extensions: use tether's extensions (idempotency field, resume); ``False`` for any Responses API server.
        transport: ``"auto"`` (WebSocket, HTTP fallback), ``"websocket"`` or ``"http"``.
        websocket_url: where WebSocket mode lives, if not derived from ``base_url``.
        headers: extra headers on every request and the WebSocket upgrade.
        retry: backoff and its bounds.
        connection: timeouts and fallback rules.
        on_event: called with every :data:`~tether.client.events.ConnectionEvent`.
        on_request: called with every request sent (:class:`~tether.client.events.SentRequest`).
        seed: seeds the retry jitter, for reproducible tests.
        http_client: an ``httpx2.AsyncClient`` for the HTTP transport (left open).

    Raises:
        ValueError: for an unknown ``transport`` or a ``base_url`` that is not http(s).
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        journal: str | os.PathLike[str] | Journal | None = None,
        session_id: str = "default",
        store: bool | None = None,
        instructions: str | None = None,
        tools: Sequence[JSONObject] | None = None,
        params: Mapping[str, Any] | None = None,
        extensions: bool = True,
        transport: TransportMode = "auto",
        websocket_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        connection: ConnectionPolicy | None = None,
        on_event: EventCallback | None = None,
        on_request: RequestCallback | None = None,
        seed: int | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if transport not in ("auto", "websocket", "http"):
            raise ValueError(f"transport must be 'auto', 'websocket' or 'http', not {transport!r}")
        self.session_id = session_id
        self.extensions = extensions
        self.stats = ClientStats()
        self._overrides: JSONObject = {
            "model": model,
            "store": store,
            "instructions": instructions,
            "tools": list(tools) if tools is not None else None,
            "params": dict(params) if params is not None else None,
        }
        self._config: JSONObject = {}
        self._journal_source = journal
        self._journal: Journal | None = journal if isinstance(journal, Journal) else None
        all_headers = {**(headers or {})}
        if api_key is not None:
            all_headers["authorization"] = f"Bearer {api_key}"
        policy = connection or ConnectionPolicy()
        self._emitter = Emitter(on_event, on_request)
        self._ws = WebSocketTransport(
            websocket_url or derive_websocket_url(base_url), all_headers, policy, self._emitter, self.stats
        )
        self._http = HTTPTransport(base_url, all_headers, policy, self._emitter, self.stats, http_client)
        self._connector = Connector(transport, self._ws, self._http, policy, self._emitter, self.stats)
        self._retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._runner: TurnRunner | None = None
        self._lock = asyncio.Lock()
        self._last_response_id: str | None = None
        self._last_request: JSONObject | None = None  # the request of the last completed turn (in this process)
        self._turns = 0
        self._pending: TurnRecord | None = None
        self._opened = False

    # -- life ----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open the journal and load the session: its configuration, head and any pending turn.

        Raises:
            ValueError: if no model is given and the journal does not know this session.
        """
        if self._opened:
            return
        if self._journal is None:
            source = self._journal_source
            self._journal = await Journal.open(MEMORY if source is None or isinstance(source, Journal) else source)
        try:
            await self._load(self._journal)
        except BaseException:
            await self.aclose()
            raise
        self._opened = True

    async def _load(self, journal: Journal) -> None:
        record = await journal.load_session(self.session_id)
        stored = record.config if record is not None else {}
        config = {name: value if value is not None else stored.get(name) for name, value in self._overrides.items()}
        if config["store"] is None:
            config["store"] = True
        if not config["model"]:
            raise ValueError(f"no model given, and the journal has no session {self.session_id!r}")
        self._config = config
        await journal.save_session(self.session_id, config)
        self._last_response_id = record.last_response_id if record is not None else None
        self._turns = await journal.last_turn_number(self.session_id)
        self._pending = await journal.pending_turn(self.session_id)
        self._runner = TurnRunner(
            session_id=self.session_id,
            journal=journal,
            connector=self._connector,
            emitter=self._emitter,
            stats=self.stats,
            retry=self._retry,
            rng=self._rng,
            extensions=self.extensions,
            on_response=self._noted,
        )

    async def aclose(self) -> None:
        """Close the connections, and the journal if the session opened it."""
        try:
            await self._ws.aclose()
            await self._http.aclose()
        finally:
            if self._journal is not None and not isinstance(self._journal_source, Journal):
                journal, self._journal = self._journal, None
                await journal.close()
            self._opened = False

    # -- state ---------------------------------------------------------------------------------------------

    @property
    def last_response_id(self) -> str | None:
        """The response the next turn continues from."""
        return self._last_response_id

    @property
    def pending(self) -> TurnRecord | None:
        """A turn that did not finish (a crash, an abandoned stream, exhausted retries), or ``None``."""
        return self._pending

    @property
    def transport(self) -> TransportKind:
        """The transport turns currently use."""
        return self._connector.using

    async def context(self) -> list[Item]:
        """The whole conversation from the journal (what a heal re-sends)."""
        return await self._journal_or_raise().context(self.session_id)

    async def history(self) -> list[JournalItem]:
        """Every journaled item of the session, with turn numbers and roles."""
        return await self._journal_or_raise().items(self.session_id)

    # -- turns ---------------------------------------------------------------------------------------------

    async def send(
        self,
        items: Input,
        *,
        tools: Sequence[JSONObject] | None = None,
        instructions: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> TurnResult:
        """Run one turn and return its result (see :meth:`stream` for arguments and errors)."""
        return await self.stream(items, tools=tools, instructions=instructions, params=params).collect()

    def stream(
        self,
        items: Input,
        *,
        tools: Sequence[JSONObject] | None = None,
        instructions: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> TurnStream:
        """Start a turn with new input items; iterate the returned stream for its deltas.

        Args:
            items: a user message as text, one item, or a list of items (e.g. ``function_call_output``).
            tools: this turn's tools instead of the session's.
            instructions: this turn's instructions instead of the session's.
            params: create parameters added to the session's.

        Returns:
            A :class:`TurnStream`; nothing is sent before it is iterated.

        Raises:
            ValueError: at once, if an item is malformed.
            PendingTurnError: (while iterating) if an earlier turn is pending.
            APIError: the server refused the turn (e.g. 400); the turn is marked failed.
            ResponseFailedError: the response ended with ``response.failed``; the turn is marked failed.
            RetryExhaustedError: the server stayed unreachable; the turn stays pending.
            WebSocketRefusedError: with ``transport="websocket"``, the upgrade was refused.
        """
        inputs = _normalise(items)
        overrides: JSONObject = {"tools": tools, "instructions": instructions, "params": params}

        def start(stream: TurnStream) -> AsyncGenerator[Delta, None]:
            return self._new_turn(stream, inputs, overrides)

        return TurnStream(start)

    async def recover(self) -> TurnResult | None:
        """Finish the pending turn, if any: resumed or replayed by its idempotency key, never generated twice
        (with tether's extensions). Returns ``None`` when nothing is pending."""
        stream = self.recover_stream()
        return None if stream is None else await stream.collect()

    def recover_stream(self) -> TurnStream | None:
        """Like :meth:`recover`, streaming the pending turn's deltas from its start."""
        pending = self._pending
        if pending is None:
            return None

        def start(stream: TurnStream) -> AsyncGenerator[Delta, None]:
            return self._resumed_turn(stream, pending)

        return TurnStream(start)

    async def discard_pending(self) -> None:
        """Give up the pending turn: its items leave the context and the next turn continues from the last
        finished one."""
        async with self._lock:
            if self._pending is not None:
                await self._journal_or_raise().end_turn(self.session_id, self._pending.turn, "discarded")
                self._pending = None

    async def _new_turn(
        self, stream: TurnStream, inputs: list[Item], overrides: JSONObject
    ) -> AsyncGenerator[Delta, None]:
        async with self._lock:
            self._check_open()
            if self._pending is not None:
                raise PendingTurnError(
                    f"turn {self._pending.turn} of session {self.session_id!r} did not finish: "
                    "call recover() or discard_pending() first"
                )
            record = TurnRecord(self._turns + 1, uuid.uuid4().hex, "pending", self._request(overrides), inputs)
            await self._journal_or_raise().begin_turn(self.session_id, record)
            self._turns, self._pending = record.turn, record
            async for delta in self._drive(stream, record, ResponseTracker()):
                yield delta

    async def _resumed_turn(self, stream: TurnStream, record: TurnRecord) -> AsyncGenerator[Delta, None]:
        async with self._lock:
            self._check_open()
            if self._pending is None or self._pending.turn != record.turn:
                raise PendingTurnError("the pending turn changed: it was already recovered or discarded")
            record = self._pending  # with the response id noted since, if any
            tracker = ResponseTracker(record.response_id, record.resume_token) if self.extensions else ResponseTracker()
            async for delta in self._drive(stream, record, tracker):
                yield delta

    async def _drive(
        self, stream: TurnStream, record: TurnRecord, tracker: ResponseTracker
    ) -> AsyncGenerator[Delta, None]:
        journal = self._journal_or_raise()
        assert self._runner is not None
        spec = TurnSpec(record.turn, record.idempotency_key, record.request, record.inputs)
        try:
            async for delta in self._runner.run(spec, tracker):
                yield delta
        except APIError as error:
            await journal.end_turn(self.session_id, record.turn, "failed", str(error))
            self._pending = None
            raise
        response = tracker.response or {}
        response_id = tracker.response_id or str(response.get("id"))
        if tracker.terminal_type == "response.failed":
            await journal.end_turn(self.session_id, record.turn, "failed", str(response.get("error")))
            self._pending = None
            raise ResponseFailedError(response)
        status: TurnStatus = "incomplete" if tracker.terminal_type == "response.incomplete" else "completed"
        output = list(response.get("output") or [])
        await journal.complete_turn(self.session_id, record.turn, response_id, status, output)
        self._last_response_id, self._pending = response_id, None
        self._last_request = spec.request
        self.stats.turns += 1
        stream.set_result(TurnResult(response_id, status, output, response, spec.healed))

    async def _noted(self, spec: TurnSpec, response_id: str, resume_token: str | None) -> None:
        await self._journal_or_raise().note_response(self.session_id, spec.number, response_id, resume_token)
        if self._pending is not None and self._pending.turn == spec.number:
            self._pending = dataclasses.replace(self._pending, response_id=response_id, resume_token=resume_token)

    def _request(self, overrides: JSONObject) -> JSONObject:
        config = self._config
        request: JSONObject = {
            "model": config["model"],
            "store": config["store"],
            "previous_response_id": self._last_response_id,
            "instructions": overrides["instructions"] or config.get("instructions"),
            "tools": overrides["tools"] if overrides["tools"] is not None else config.get("tools"),
        }
        request.update(config.get("params") or {})
        request.update(overrides["params"] or {})
        last = self._last_request
        if self.extensions and last is not None and request["previous_response_id"] is not None:
            # Parameters equal to the parent's are inherited (tether:inherit_params) when the turn is sent as a
            # delta; a heal that re-sends the whole context sends them again.
            same = [key for key in INHERITABLE if request.get(key) is not None and request.get(key) == last.get(key)]
            if same:
                request[INHERITS_MARKER] = same
        return request

    def _check_open(self) -> None:
        if not self._opened:
            raise RuntimeError("the session is not open: use 'async with AsyncSession(...)' or await open()")

    def _journal_or_raise(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the session is not open")
        return self._journal


INHERITABLE = ("instructions", "tools")


def _normalise(items: Input) -> list[Item]:
    value: Any = [items] if isinstance(items, Mapping) else items if isinstance(items, str) else list(items)
    try:
        return normalise_input(value)
    except ProtocolError as error:
        raise ValueError(error.message) from None
