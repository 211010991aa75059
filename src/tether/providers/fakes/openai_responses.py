"""A fake OpenAI Responses upstream: a real server on 127.0.0.1, stateful like the real one, for tests.

It speaks ``POST /v1/responses`` (JSON, or SSE with ``stream: true``) and WebSocket mode on ``/v1/responses``. It
keeps its own responses (ids ``resp_up_…``): ``store=true`` ones for any connection, and on each socket its most
recent response (the connection-local cache that ``store=false`` chains need). ``previous_response_id`` takes its
ids only; an unknown, forgotten or foreign one is ``previous_response_not_found``, and a ``function_call_output``
without its ``function_call`` in the context is refused, as OpenAI does.

A step's reasoning comes out as a ``reasoning`` item of its own (id ``rs_up_…``, one summary part per paragraph),
with ``encrypted_content`` only when ``include`` asks for ``reasoning.encrypted_content``. As OpenAI does, a
reasoning item sent back in ``input`` needs an ``encrypted_content`` the fake issued, or (without one) the id of a
reasoning item of a stored response: anything else is refused. A stateless fake shows its reasoning as raw
``content`` (``reasoning_text``) too, as vLLM and SGLang do, and takes reasoning items back as they come.

The model plays a script in the scripted model's format (:func:`tether.providers.scripted.load_scripts`): the step
is the number of model turns since the last user message of the context it materialises, so a workload gives the
same transcript here as through tether's scripted model. Every request body (or WebSocket frame) it receives is
recorded with its headers, and knobs make it forget responses, fail requests, drop streams and cap socket ages.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, cast

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tether.netutil import ThreadedServer, loopback_server
from tether.protocol.errors import ProtocolError, previous_response_not_found
from tether.protocol.events import ResponseObject, StreamEvent, is_terminal
from tether.protocol.items import estimate_tokens
from tether.protocol.model_events import (
    Finish,
    ReasoningEnd,
    ReasoningStart,
    ReasoningSummaryDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tether.protocol.sse import encode_event
from tether.protocol.stream import ResponseStream
from tether.providers.fakes.responses_socket import FakeSocket
from tether.providers.scripted import Script, ScriptStep, parse_scripts
from tether.types import Item, JSONObject

__all__ = ["FakeResponsesUpstream", "RecordedCreate"]

_MODEL_ITEMS = frozenset({"function_call", "reasoning"})
_FINAL_STEP = ScriptStep(text="Done.")
_ENCRYPTED_REASONING = "reasoning.encrypted_content"
_Delta = ReasoningStart | ReasoningSummaryDelta | ReasoningEnd | TextDelta | ToolCallDelta


@dataclass(frozen=True, slots=True)
class RecordedCreate:
    """One create request (or other WebSocket frame) the fake received.

    Attributes:
        transport: ``"http"`` (a ``POST``) or ``"websocket"`` (a ``response.create`` frame).
        connection: which WebSocket connection carried it (1 for the first accepted), ``None`` over HTTP.
        headers: the HTTP request's (or the WebSocket upgrade's) headers, names in lower case.
        body: the JSON body or frame.
    """

    transport: Literal["http", "websocket"]
    connection: int | None
    headers: dict[str, str]
    body: JSONObject

    @property
    def previous_response_id(self) -> str | None:
        value = self.body.get("previous_response_id")
        return value if isinstance(value, str) else None

    @property
    def input(self) -> list[Item]:
        value = self.body.get("input")
        return value if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class _Answer:
    response_id: str
    events: list[StreamEvent]
    context: list[Item]  # the response's context: its input context and its output


@dataclass(slots=True)
class Play:
    """One response being played: the deltas of its step, fed one at a time (a WebSocket stream may stop early)."""

    response_id: str
    stream: ResponseStream
    context: list[Item]  # the input context
    history: list[Item]  # what of it the upstream held already (its cached tokens)
    deltas: list[_Delta]
    budget: int | None = None  # characters left before max_output_tokens
    truncated: bool = False

    def start(self) -> list[StreamEvent]:
        return self.stream.start()

    def feed(self, delta: _Delta) -> list[StreamEvent]:
        """The events of one delta (none once the output budget is spent)."""
        if self.truncated:
            return []
        size = len(delta.arguments if isinstance(delta, ToolCallDelta) else getattr(delta, "text", ""))
        if self.budget is not None and size > self.budget:
            self.truncated = True
            return []
        self.budget = None if self.budget is None else self.budget - size
        return self.stream.feed(delta)

    def finish(self, steered: bool = False) -> list[StreamEvent]:
        input_tokens = estimate_tokens(orjson.dumps(self.context))
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=estimate_tokens(orjson.dumps(self.stream.output)),
            cached_tokens=min(input_tokens, estimate_tokens(orjson.dumps(self.history)) if self.history else 0),
        )
        reason: Literal["stop", "max_output_tokens", "steered"] = (
            "steered" if steered else "max_output_tokens" if self.truncated else "stop"
        )
        return self.stream.finish(Finish(usage, reason))

    def answer(self, events: list[StreamEvent]) -> _Answer:
        return _Answer(self.response_id, events, [*self.context, *self.stream.output])


class FakeResponsesUpstream:
    """A fake Responses upstream in a background thread; use it as a context manager.

    Args:
        script: the steps the model plays (``ScriptStep``\\ s or the dicts of a scripts file); without one, it
            echoes the last user message.
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` are refused with 401
            (``invalid_api_key``, as the real API answers a wrong key).
        more_api_keys: other keys accepted beside ``api_key`` (several agents, each with its own key).
        chunk_size: characters per streamed delta.
        max_connection_age_s: when set, a socket this old gets ``websocket_connection_limit_reached`` and is closed.
        stateful: ``False`` keeps no response at all, as vLLM's or SGLang's ``/v1/responses`` without a store:
            every ``previous_response_id`` is ``previous_response_not_found``.
        event_delay_s: a pause after each delta of a WebSocket stream, so a ``response.steer`` can reach a response
            still streaming (see :mod:`tether.providers.fakes.responses_socket`).
        steering: ``"supported"`` (a GPT-6 family model), ``"unsupported"`` (every steer is
            ``response.steer.failed`` with ``steering_not_supported``) or ``"unknown_event"`` (an upstream that does
            not know the event: an ``error`` answers it, ``invalid_event_type``).
        fail_successors: steering accepted for a response is ``response.steer.failed``
            (``successor_creation_failed``, with its id and input) instead of a successor.
        withhold_successors: steering accepted for a response ends it (``steered``), and then the socket says
            nothing more of it: no successor and no answer (an upstream that never starts the successor).
    """

    def __init__(
        self,
        script: Sequence[ScriptStep] | Sequence[Mapping[str, Any]] | None = None,
        *,
        api_key: str | None = None,
        more_api_keys: Sequence[str] = (),
        chunk_size: int = 8,
        max_connection_age_s: float | None = None,
        stateful: bool = True,
        event_delay_s: float = 0.0,
        steering: Literal["supported", "unsupported", "unknown_event"] = "supported",
        fail_successors: bool = False,
        withhold_successors: bool = False,
    ) -> None:
        self.event_delay_s = event_delay_s
        self.steering = steering
        self.fail_successors = fail_successors
        self.withhold_successors = withhold_successors
        self.script: Script | None = None if script is None else _as_script(script)
        self.api_key = api_key
        self.more_api_keys = tuple(more_api_keys)
        self.chunk_size = max(1, chunk_size)
        self.max_connection_age_s = max_connection_age_s
        self.stateful = stateful
        self._lock = threading.Lock()
        self._socket_closed = threading.Condition(self._lock)
        self._requests: list[RecordedCreate] = []
        self._stored: dict[str, list[Item]] = {}
        self._forgotten: set[str] = set()
        self._issued: set[str] = set()
        self._sealed: dict[str, str] = {}  # encrypted_content issued → the reasoning item's id
        self._failures: deque[_Failure] = deque()
        self._drops: deque[int] = deque()
        self._connections = 0
        self._open_connections = 0
        self._clients: set[tuple[str, int]] = set()
        self._port = 0
        self._server: ThreadedServer | None = None

    # -- what tests read -----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root to configure as a provider's ``base_url`` (``…/v1``)."""
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v1/responses"

    @property
    def requests(self) -> list[RecordedCreate]:
        """Every create request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def steers(self) -> list[RecordedCreate]:
        """Every ``response.steer`` frame received so far, oldest first."""
        return [recorded for recorded in self.requests if recorded.body.get("type") == "response.steer"]

    @property
    def stored_ids(self) -> list[str]:
        """The ids of the responses it keeps (``store=true``), in the order they were made."""
        with self._lock:
            return list(self._stored)

    def context_of(self, response_id: str) -> list[Item] | None:
        """The whole context (input and output) of a stored response, as the fake keeps it."""
        with self._lock:
            context = self._stored.get(response_id)
            return None if context is None else list(context)

    @property
    def connections(self) -> int:
        """WebSocket connections accepted so far."""
        with self._lock:
            return self._connections

    @property
    def open_connections(self) -> int:
        """WebSocket connections accepted and not closed yet (by either side)."""
        with self._lock:
            return self._open_connections

    def wait_all_closed(self, timeout_s: float) -> bool:
        """Block until no WebSocket connection is open (``False`` if one still is after ``timeout_s``)."""
        with self._socket_closed:
            return self._socket_closed.wait_for(lambda: self._open_connections == 0, timeout_s)

    @property
    def http_connections(self) -> int:
        """TCP connections that carried HTTP requests so far (told apart by the client's address and port)."""
        with self._lock:
            return len(self._clients)

    # -- knobs ---------------------------------------------------------------------------------------------

    def forget(self, response_id: str) -> None:
        """Lose one response, everywhere: continuing it is ``previous_response_not_found`` from now on."""
        with self._lock:
            self._forgotten.add(response_id)
            self._stored.pop(response_id, None)

    def forget_all(self) -> None:
        """Lose every response issued so far (stored and connection-local)."""
        with self._lock:
            self._forgotten |= self._issued
            self._stored.clear()

    def fail_next(
        self, count: int = 1, status: int = 503, message: str = "The fake upstream is unavailable.", code: str = ""
    ) -> None:
        """Answer the next ``count`` requests with this error (an HTTP status, or an ``error`` event on a socket)."""
        failure = _Failure(status, code or ("rate_limit_exceeded" if status == 429 else "server_error"), message)
        with self._lock:
            self._failures.extend([failure] * count)

    def drop_after(self, events: int, count: int = 1) -> None:
        """Break the next ``count`` answers after ``events`` events: close the socket (1011), or cut the SSE stream."""
        with self._lock:
            self._drops.extend([events] * count)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        routes = [
            Route("/v1/responses", self._http, methods=["POST"]),
            WebSocketRoute("/v1/responses", self._websocket),
        ]
        server = loopback_server(Starlette(routes=routes), name="fake-openai-responses", ws="websockets-sansio")
        self._port = server.port
        self._server = server.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.stop()

    # -- HTTP ----------------------------------------------------------------------------------------------

    async def _http(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        self._record("http", None, headers, body if isinstance(body, dict) else {})
        if request.client is not None:
            with self._lock:
                self._clients.add((request.client.host, request.client.port))
        if not self._authorized(headers):
            return _http_error(ProtocolError(401, "invalid_api_key", "Incorrect API key provided."))
        failure = self._next(self._failures)
        if failure is not None:
            return _http_error(ProtocolError(failure.status, failure.code, failure.message))
        if not isinstance(body, dict):
            return _http_error(ProtocolError(400, "invalid_json", "The body must be a JSON object."))
        try:
            answer = self._answer(body, None)
        except ProtocolError as error:
            return _http_error(error)
        drop = self._next(self._drops)
        if drop is None:
            self._keep(body, answer)
        final = answer.events[-1]
        if not body.get("stream") and is_terminal(final):  # an answer always ends with its terminal event
            return JSONResponse(final["response"])
        frames = [encode_event(event) for event in answer.events]
        return StreamingResponse(iter(frames[:drop]), media_type="text/event-stream")

    # -- WebSocket -----------------------------------------------------------------------------------------

    async def _websocket(self, websocket: WebSocket) -> None:
        headers = {k.lower(): v for k, v in websocket.headers.items()}
        if not self._authorized(headers):
            await websocket.send_denial_response(_http_error(ProtocolError(401, "invalid_api_key", "Bad API key.")))
            return
        await websocket.accept()
        with self._lock:
            self._connections += 1
            self._open_connections += 1
            number = self._connections
        try:
            await FakeSocket(self, websocket, number, headers).run()
        finally:
            with self._lock:
                self._open_connections -= 1
                self._socket_closed.notify_all()

    # -- the model -----------------------------------------------------------------------------------------

    def _answer(self, body: JSONObject, local: _Answer | None) -> _Answer:
        """Resolve the request's context and play the script's step for it, whole.

        Raises:
            ProtocolError: ``previous_response_not_found``, or a ``function_call_output`` without its call.
        """
        play = self._play(body, local)
        events = play.start()
        for delta in play.deltas:
            events += play.feed(delta)
        events += play.finish()
        return play.answer(events)

    def _play(self, body: JSONObject, local: _Answer | None) -> Play:
        """Resolve the request's context and the deltas of the script's step for it, to be streamed by the caller.

        Raises:
            ProtocolError: ``previous_response_not_found``, or a ``function_call_output`` without its call.
        """
        history = self._history(body.get("previous_response_id"), local)
        raw_input = body.get("input", [])
        new = [{"type": "message", "role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
        context = [*history, *[item for item in new if isinstance(item, dict)]]
        for item in new:
            if isinstance(item, dict) and item.get("type") == "reasoning":
                self._check_reasoning(item)
        calls = {item.get("call_id") for item in context if item.get("type") == "function_call"}
        for item in context:
            if item.get("type") == "function_call_output" and item.get("call_id") not in calls:
                message = f"No tool call found for function call output with call_id {item.get('call_id')}."
                raise ProtocolError(400, "invalid_request_error", message, param="input")
        response_id = f"resp_up_{secrets.token_hex(12)}"
        limit = body.get("max_output_tokens")
        deltas = self._deltas(context, _ENCRYPTED_REASONING in (body.get("include") or ()))
        return Play(
            response_id,
            ResponseStream(_response_object(response_id, body)),
            context,
            history,
            deltas,
            budget=limit * 4 if isinstance(limit, int) else None,  # about four characters per token
        )

    def _history(self, previous: object, local: _Answer | None) -> list[Item]:
        """The context a continuation starts from: this socket's latest response, else a stored one."""
        if previous is None:
            return []
        with self._lock:
            if self.stateful and isinstance(previous, str) and previous not in self._forgotten:
                if local is not None and local.response_id == previous:
                    return local.context
                if previous in self._stored:
                    return self._stored[previous]
        raise previous_response_not_found(str(previous))

    def _check_reasoning(self, item: Item) -> None:
        """Refuse a reasoning item the fake cannot read back, as OpenAI does."""
        item_id, sealed = item.get("id"), item.get("encrypted_content")
        if sealed is not None:
            with self._lock:
                known = isinstance(sealed, str) and self._sealed.get(sealed) == item_id
            if not known:
                message = f"The encrypted content for item {item_id} could not be verified."
                raise ProtocolError(400, "invalid_encrypted_content", message, param="input")
            return
        with self._lock:
            stored = any(
                kept.get("id") == item_id and kept.get("type") == "reasoning"
                for context in self._stored.values()
                for kept in context
            )
        if self.stateful and not stored:
            message = (
                f"Item with id '{item_id}' not found. Items are not persisted when `store` is set to false. "
                "Try again with `store` set to true, or remove this item from your input."
            )
            raise ProtocolError(404, "invalid_request_error", message, param="input")

    def _deltas(self, context: list[Item], encrypted: bool) -> list[_Delta]:
        steps_done, user_text = _position(context)
        if self.script is None:
            step = ScriptStep(text=user_text or "(no user message)")
        else:
            step = self.script[steps_done] if steps_done < len(self.script) else _FINAL_STEP
        deltas: list[_Delta] = []
        if step.reasoning:
            item_id = f"rs_up_{secrets.token_hex(12)}"
            deltas.append(ReasoningStart(item_id))
            for index, paragraph in enumerate(step.reasoning.split("\n\n")):
                deltas += [ReasoningSummaryDelta(piece, index) for piece in self._chunks(paragraph) or [""]]
            end: JSONObject = {}
            if not self.stateful:
                end["content"] = [{"type": "reasoning_text", "text": step.reasoning}]
            if encrypted:
                sealed = f"gAAAAB{secrets.token_urlsafe(48)}"
                with self._lock:
                    self._sealed[sealed] = item_id
                end["encrypted_content"] = sealed
            deltas.append(ReasoningEnd(end))
        phase: Literal["commentary"] | None = "commentary" if step.tool_calls and step.text else None
        deltas += [TextDelta(piece, phase=phase) for piece in self._chunks(step.text or "")]
        for call in step.tool_calls:
            call_id = f"call_up_{secrets.token_hex(12)}"
            deltas += [ToolCallDelta(call_id, call.name, piece) for piece in self._chunks(call.arguments) or [""]]
        return deltas

    def _chunks(self, text: str) -> list[str]:
        return [text[i : i + self.chunk_size] for i in range(0, len(text), self.chunk_size)]

    # -- state ---------------------------------------------------------------------------------------------

    def _keep(self, body: JSONObject, answer: _Answer) -> None:
        with self._lock:
            self._issued.add(answer.response_id)
            if body.get("store", True) is not False:
                self._stored[answer.response_id] = answer.context

    def _record(self, transport: Literal["http", "websocket"], number: int | None, headers: dict[str, str],
                body: JSONObject) -> None:  # fmt: skip
        with self._lock:
            self._requests.append(RecordedCreate(transport, number, headers, body))

    def _next(self, queue: deque[Any]) -> Any:
        with self._lock:
            return queue.popleft() if queue else None

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        if self.api_key is None:
            return True
        return headers.get("authorization") in {f"Bearer {key}" for key in (self.api_key, *self.more_api_keys)}


def _response_object(response_id: str, body: JSONObject) -> ResponseObject:
    response: JSONObject = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "completed_at": None,
        "status": "in_progress",
        "background": False,
        "model": body.get("model"),
        "output": [],
        "previous_response_id": body.get("previous_response_id"),
        "instructions": body.get("instructions"),
        "tools": body.get("tools", []),
        "tool_choice": body.get("tool_choice", "auto"),
        "store": body.get("store", True),
        "error": None,
        "incomplete_details": None,
        "usage": None,
    }
    return cast(ResponseObject, response)  # every key it names, plus the parameters the real API echoes


def _position(context: list[Item]) -> tuple[int, str | None]:
    """Model turns (runs of model items) since the last user message, and that message's text."""
    turns, in_turn = 0, False
    for item in reversed(context):
        kind = item.get("type", "message")
        role = item.get("role")
        if kind == "message" and role == "user":
            return turns, _text(item.get("content"))
        if kind in _MODEL_ITEMS or (kind == "message" and role == "assistant"):
            turns, in_turn = turns + (0 if in_turn else 1), True
        else:
            in_turn = False
    return turns, None


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _http_error(error: ProtocolError) -> Response:
    return JSONResponse(error.http_body(), status_code=error.status)


def _as_script(script: Sequence[ScriptStep] | Sequence[Mapping[str, Any]]) -> Script:
    if all(isinstance(step, ScriptStep) for step in script):
        return tuple(step for step in script if isinstance(step, ScriptStep))
    return parse_scripts({"scripts": {"script": [dict(step) for step in script if isinstance(step, Mapping)]}})[
        "script"
    ]
