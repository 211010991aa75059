"""What every fake upstream shares: a real HTTP server in a thread, the request recorder, failure knobs, the script.

The fake model plays a script in the scripted model's format (:func:`tether.providers.scripted.load_scripts`): the
step it plays is the number of assistant turns since the last user message of the conversation it receives, so
the same workload gives the same transcript through every upstream (and through the built-in scripted model).
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tether.netutil import ThreadedServer, loopback_server
from tether.protocol.items import estimate_tokens
from tether.providers.scripted import Script, ScriptStep, parse_scripts
from tether.types import JSONObject

ScriptLike = Sequence[ScriptStep] | Sequence[Mapping[str, Any]]

FINAL_TEXT = "Done."


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request a fake received.

    Attributes:
        method: the HTTP method.
        path: the URL path.
        headers: the headers, names in lower case.
        body: the JSON body (``{}`` if it was not a JSON object).
        raw: the body's exact bytes, as they arrived (compare ``orjson.loads(raw)`` with what an agent sent).
        query: the URL's query string (``""`` when none).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: JSONObject
    raw: bytes = b""
    query: str = ""


@dataclass(frozen=True, slots=True)
class FakeCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class FakeTurn:
    """What the fake model says in one answer; ``truncated`` when ``max_tokens`` cut it.

    ``answer_id`` is unique to the answer, as a real upstream's message or completion id is: clients key on it
    (Claude Code merges the content blocks of one message id into one assistant message). It is derived from the
    answer's number and the request, so twin fakes given the same requests answer byte for byte alike.
    """

    reasoning: str = ""
    text: str = ""
    calls: tuple[FakeCall, ...] = ()
    truncated: bool = False
    answer_id: str = ""

    @property
    def output_tokens(self) -> int:
        return estimate_tokens(self.reasoning + self.text + "".join(call.arguments for call in self.calls))


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    message: str
    retry_after: float | None


@dataclass(slots=True)
class PrefixCache:
    """A stand-in for an upstream's prompt cache: remembers prefixes of a request's blocks by content hash."""

    _seen: set[str] = field(default_factory=set)

    def lookup(self, blocks: Sequence[object], write_at: Iterable[int] | None = None) -> tuple[int, int, int]:
        """Tokens of the request that were read from the cache, written to it, and neither.

        Args:
            blocks: the request as JSON values, in prompt order.
            write_at: the block counts at whose end the cache is written (``None``: at every block, as automatic
                prefix caching does). Nothing is read past the last of them.

        Returns:
            ``(read, written, uncached)`` token counts; they add up to the request's tokens.
        """
        ends: list[int] = []
        digests: list[str] = []
        hasher = hashlib.blake2b(digest_size=16)
        tokens = 0
        for block in blocks:
            encoded = orjson.dumps(block, option=orjson.OPT_SORT_KEYS)
            hasher.update(encoded)
            tokens += estimate_tokens(encoded)
            ends.append(tokens)
            digests.append(hasher.copy().hexdigest())
        writes = sorted(set(range(1, len(blocks) + 1) if write_at is None else write_at))
        limit = writes[-1] if writes else 0
        hit = max((n for n in range(1, limit + 1) if digests[n - 1] in self._seen), default=0)
        read = ends[hit - 1] if hit else 0
        written = max(0, (ends[limit - 1] if limit else 0) - read)
        self._seen.update(digests[n - 1] for n in writes)
        return read, written, tokens - read - written


class FakeUpstream(abc.ABC):
    """A fake upstream server on 127.0.0.1, run in a background thread; use it as a context manager.

    Args:
        script: the steps the fake model plays (``ScriptStep``\\ s or the dicts of a scripts file); without one, it
            answers with the text of the last user message.
        api_key: when set, requests without this key are refused with 401, as a real upstream would.
        chunk_size: characters per streamed text or argument delta.

    Knobs set after construction: ``scripts`` (a script per request ``model``, for a workload of several tasks; a
    model not in it plays ``script``), ``latency_s`` (a wait before each answer) and ``tokens_per_second`` (a
    streamed answer's pace over its output tokens, spread evenly over its frames, as the scripted model paces it;
    0 streams at once).
    """

    kind: ClassVar[str] = "fake"
    path: ClassVar[str] = "/"

    def __init__(self, script: ScriptLike | None = None, *, api_key: str | None = None, chunk_size: int = 8) -> None:
        self.script: Script | None = None if script is None else as_script(script)
        self.api_key = api_key
        self.chunk_size = chunk_size
        self.scripts: dict[str, Script] = {}
        self.latency_s = 0.0
        self.tokens_per_second = 0.0
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._cuts = 0
        self._answers = 0
        self._clients: set[tuple[str, int]] = set()
        self._port = 0
        self._server: ThreadedServer | None = None

    # -- knobs ---------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to configure as the provider's ``base_url``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def http_connections(self) -> int:
        """TCP connections that carried requests so far (told apart by the client's address and port)."""
        with self._lock:
            return len(self._clients)

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        message: str = "The fake upstream is unavailable.",
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``count`` requests with an error in this upstream's format (after recording them)."""
        with self._lock:
            self._failures.extend(_Failure(status, message, retry_after) for _ in range(count))

    def cut_next(self, count: int = 1) -> None:
        """Stop the next ``count`` streams after their first event, without finishing them."""
        with self._lock:
            self._cuts += count

    # -- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        app = Starlette(routes=[Route(self.path, self._handle, methods=["POST"]), *self.extra_routes()])
        server = loopback_server(app, name=f"fake-{self.kind}")
        self._port = server.port
        self._server = server.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.stop()

    # -- serving -------------------------------------------------------------------------------------------

    async def record(self, request: Request) -> tuple[RecordedRequest, Any]:
        """Record a request (every route's handler calls this first); returns the record and the decoded body
        (``None`` when it is not JSON)."""
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        recorded = RecordedRequest(
            request.method,
            request.url.path,
            headers,
            body if isinstance(body, dict) else {},
            raw=raw,
            query=request.url.query,
        )
        with self._lock:
            self._requests.append(recorded)
            if request.client is not None:
                self._clients.add((request.client.host, request.client.port))
        return recorded, body

    async def _handle(self, request: Request) -> Response:
        recorded, body = await self.record(request)
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.api_key is not None and not self.authorized(recorded.headers, self.api_key):
            return self.error_response(401, "Invalid API key.")
        if failure is not None:
            extra = {} if failure.retry_after is None else {"retry-after": f"{failure.retry_after:g}"}
            return self.error_response(failure.status, failure.message, extra)
        if not isinstance(body, dict):
            return self.error_response(400, "The body must be a JSON object.")
        problem = self.check(body)
        if problem is not None:
            return self.error_response(400, problem)
        with self._lock:
            self._answers += 1
            answer = self._answers
            cut = self._cuts > 0
            self._cuts -= 1 if cut else 0
        turn = self.turn(body, answer)
        if not body.get("stream"):
            return Response(orjson.dumps(self.complete(body, turn)), media_type="application/json")
        return StreamingResponse(self._frames(body, turn, cut), media_type="text/event-stream")

    async def _frames(self, body: JSONObject, turn: FakeTurn, cut: bool) -> AsyncIterator[bytes]:
        frames = list(self.stream(body, turn))
        pause = frame_pause_s(turn, len(frames), self.tokens_per_second)
        for number, frame in enumerate(frames):
            if cut and number == 1:
                return
            if pause and number:
                await asyncio.sleep(pause)
            yield frame

    def turn(self, body: JSONObject, answer: int) -> FakeTurn:
        """What the model says to this request: the script's step for the conversation's position.

        A ``max_tokens`` (about four characters a token) too small for the text cuts it and drops the calls.
        """
        steps_done, user_text = self.position(body)
        script = self.scripts.get(str(body.get("model")), self.script)
        if script is None:
            step = ScriptStep(text=user_text or "(no user message)")
        else:
            step = script[steps_done] if steps_done < len(script) else ScriptStep(text=FINAL_TEXT)
        calls = tuple(
            FakeCall(self.call_id(answer, index), call.name, call.arguments)
            for index, call in enumerate(step.tool_calls)
        )
        answer_id = hashlib.blake2b(orjson.dumps([answer, body], option=orjson.OPT_SORT_KEYS), digest_size=12)
        text = step.text or ""
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and len(text) > limit * 4:
            return FakeTurn(step.reasoning or "", text[: limit * 4], truncated=True, answer_id=answer_id.hexdigest())
        return FakeTurn(step.reasoning or "", text, calls, answer_id=answer_id.hexdigest())

    def chunks(self, text: str) -> list[str]:
        size = max(1, self.chunk_size)
        return [text[i : i + size] for i in range(0, len(text), size)]

    # -- what each wire format defines ----------------------------------------------------------------------

    def extra_routes(self) -> list[Route]:
        """Routes besides :attr:`path` (e.g. a token-counting or model-list endpoint); none by default."""
        return []

    @abc.abstractmethod
    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        """Whether the request carries the key where this API expects it."""

    @abc.abstractmethod
    def check(self, body: JSONObject) -> str | None:
        """A reason to refuse the body with 400, as the real API would, or ``None``."""

    @abc.abstractmethod
    def position(self, body: JSONObject) -> tuple[int, str | None]:
        """Assistant turns since the last user message, and that message's text."""

    @abc.abstractmethod
    def call_id(self, answer: int, index: int) -> str:
        """A deterministic id for the ``index``-th call of the ``answer``-th answer."""

    @abc.abstractmethod
    def stream(self, body: JSONObject, turn: FakeTurn) -> Iterable[bytes]:
        """The SSE frames of a streamed answer."""

    @abc.abstractmethod
    def complete(self, body: JSONObject, turn: FakeTurn) -> JSONObject:
        """The JSON body of a non-streamed answer."""

    @abc.abstractmethod
    def error_response(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        """An error answer in this API's shape."""


def frame_pause_s(turn: FakeTurn, frames: int, tokens_per_second: float) -> float:
    """The wait before each frame after the first that paces ``turn`` at ``tokens_per_second`` (0: no wait)."""
    if tokens_per_second <= 0 or frames <= 0:
        return 0.0
    return turn.output_tokens / tokens_per_second / frames


def as_script(script: ScriptLike) -> Script:
    """Steps from ``ScriptStep``\\ s or from the dicts of a scripts file."""
    if all(isinstance(step, ScriptStep) for step in script):
        return tuple(step for step in script if isinstance(step, ScriptStep))
    return parse_scripts({"scripts": {"script": list(script)}})["script"]


def sse(data: object, event: str | None = None) -> bytes:
    """One SSE frame."""
    head = b"" if event is None else b"event: " + event.encode() + b"\n"
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return head + b"data: " + payload + b"\n\n"
