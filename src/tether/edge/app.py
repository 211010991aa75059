"""The edge's loopback front-ends: the APIs agents speak, each request relayed over the link as a delta and each
answer re-expanded into the agent's own stream. Other paths (``GET /v1/models``, ...) pass through to the gateway."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import orjson
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tether.edge import expand
from tether.edge.chains import ChainBook
from tether.edge.journal import EdgeJournal
from tether.edge.link import KEEPALIVE, GatewayLink, LinkOptions, LinkUnavailableError, Turn
from tether.protocol.edge_wire import API, Piece
from tether.protocol.json_depth import too_deep
from tether.protocol.request import too_deep_json, unsupported_content_encoding
from tether.protocol.steer import STEER_EVENT, read_steer, steer_failed

_log = structlog.get_logger("tether.edge")

_NOT_FORWARDED = frozenset(
    {
        "host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding", "upgrade",
        "te", "trailer", "proxy-authorization", "proxy-connection",
    }
)  # fmt: skip
_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key"})
_NOT_RETURNED = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"})


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """What the edge app needs.

    Args:
        link: how to reach the gateway.
        gateway_http: the gateway's base URL (``http(s)://host[:port]``) for passed-through paths.
        journal: the journal file (``None`` keeps nothing across restarts).
        max_chains: requests kept as delta bases.
        max_body_bytes: the largest agent request accepted.
        capture: keep every request, its frames and the bytes they took, at ``GET /tether/edge/captured`` (tests
            only: it holds payloads in memory).
    """

    link: LinkOptions
    gateway_http: str
    journal: str | None = None
    max_chains: int = 256
    max_body_bytes: int = 64 * 1024 * 1024
    capture: bool = False


@dataclass(frozen=True, slots=True)
class EdgeRuntime:
    link: GatewayLink
    journal: EdgeJournal | None
    passthrough: httpx.AsyncClient
    captured: list[dict[str, Any]] | None


def _runtime(request: Request) -> EdgeRuntime:
    runtime: EdgeRuntime = request.app.state.edge
    return runtime


def forwardable(headers: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in _NOT_FORWARDED}


def create_edge_app(config: EdgeConfig) -> Starlette:
    """Build the edge's loopback app; the link and journal open in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        book = ChainBook(max_chains=config.max_chains)
        journal = await EdgeJournal.open(config.journal, book) if config.journal else None
        link = GatewayLink(
            dataclasses.replace(config.link, capture=config.capture),
            book,
            on_accepted=journal.record if journal else None,
            on_forget=journal.forget if journal else None,
        )
        await link.start()
        passthrough = httpx.AsyncClient(base_url=config.gateway_http, timeout=httpx.Timeout(300.0, connect=10.0))
        app.state.edge = EdgeRuntime(link, journal, passthrough, [] if config.capture else None)
        try:
            yield
        finally:
            await link.aclose()
            await passthrough.aclose()
            if journal is not None:
                await journal.aclose()

    def relay_for(api: API) -> Any:
        async def relay(request: Request) -> Response:
            return await _relay(request, api, config.max_body_bytes)

        return relay

    routes = [
        Route("/v1/messages", relay_for("anthropic-messages"), methods=["POST"]),
        Route("/v1/messages/count_tokens", relay_for("anthropic-messages"), methods=["POST"]),
        Route("/v1/chat/completions", relay_for("chat-completions"), methods=["POST"]),
        Route("/v1/responses", relay_for("responses"), methods=["POST"]),
        WebSocketRoute("/v1/responses", responses_websocket),
        Route("/tether/edge/status", status, methods=["GET"]),
        Route("/tether/edge/captured", captured, methods=["GET"]),
        Route("/{path:path}", passthrough, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def status(request: Request) -> Response:
    return Response(orjson.dumps(_runtime(request).link.stats.as_json()), media_type="application/json")


async def captured(request: Request) -> Response:
    kept = _runtime(request).captured
    if kept is None:
        return Response(b'{"error": "capture is off"}', status_code=404, media_type="application/json")
    entries = [
        {"api": entry["api"], "path": entry["path"], "body": entry["body"], "uploaded": entry["turn"].uploaded,
         "based": entry["turn"].delta.base is not None, "shared": entry["turn"].delta.shared,
         "frames": [frame.decode() for frame in entry["turn"].frames],
         "headers": {k: v for k, v in entry["turn"].headers.items() if k.lower() not in _CREDENTIALS}}
        for entry in kept
    ]  # fmt: skip
    return Response(orjson.dumps(entries), media_type="application/json")


async def passthrough(request: Request) -> Response:
    """Any other path, to the gateway over plain HTTP, with the gateway's key in place of the agent's."""
    runtime = _runtime(request)
    headers = {k: v for k, v in forwardable(request.headers).items() if k.lower() not in _CREDENTIALS}
    key = runtime.link.options.key
    if key:
        headers["authorization"] = f"Bearer {key}"
    try:
        upstream = await runtime.passthrough.request(
            request.method, request.url.path, params=request.query_params, headers=headers, content=await request.body()
        )
    except httpx.HTTPError as error:
        message = f"The edge could not reach the gateway ({type(error).__name__})."
        return _refusal("chat-completions", 502, "gateway_unreachable", message)
    returned = {k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_RETURNED}
    return Response(upstream.content, status_code=upstream.status_code, headers=returned)


async def responses_websocket(websocket: WebSocket) -> None:
    """WebSocket mode (Codex, the SDK's ``responses.connect()``): each ``response.create`` is relayed as a turn of
    this connection's session, in order, and its events go back as one text message each."""
    runtime: EdgeRuntime = websocket.app.state.edge
    await websocket.accept()
    session = uuid.uuid4().hex
    headers = forwardable(websocket.headers)
    try:
        while True:
            text = await websocket.receive_text()
            await _relay_websocket_turn(websocket, runtime, session, headers, text)
    except WebSocketDisconnect:
        return


async def _relay_websocket_turn(
    websocket: WebSocket, runtime: EdgeRuntime, session: str, headers: dict[str, str], text: str
) -> None:
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        await websocket.send_text(_ws_error(400, "invalid_json", "A client event must be a JSON object."))
        return
    if too_deep(body):
        await websocket.send_text(orjson.dumps(too_deep_json().ws_event()).decode())
        return
    if body.get("type") == STEER_EVENT:  # the edge relays one turn at a time: nothing of it is in flight to steer
        request = read_steer(body)
        problem = request.problem
        message = problem or "tether edge does not relay steering input: send it with the next response.create."
        failed = steer_failed(request, "invalid_input" if problem else "steering_not_supported", message, lane=None)
        await websocket.send_text(orjson.dumps(failed).decode())
        return
    turn = runtime.link.submit("responses", "/v1/responses", body, headers, len(text), session=session)
    if runtime.captured is not None:
        runtime.captured.append({"api": "responses", "path": "/v1/responses#ws", "body": body, "turn": turn})
    try:
        async for piece in runtime.link.pieces(turn):
            if "event" in piece:
                event = expand.expand_event(piece["event"], piece.get("x") or [], body)
                await websocket.send_text(orjson.dumps(event).decode())
    except LinkUnavailableError as error:
        await websocket.send_text(_ws_error(error.status, error.code, error.message))


def _ws_error(status: int, code: str, message: str) -> str:
    """A refusal as a WebSocket error event, its error type following the status (as :func:`expand.error_body`)."""
    return orjson.dumps(expand.refusal(status, code, message).ws_event()).decode()


def _refusal(api: API, status: int, code: str, message: str) -> Response:
    return Response(expand.error_body(api, status, code, message), status_code=status, media_type="application/json")


async def _relay(request: Request, api: API, limit: int) -> Response:
    compressed = unsupported_content_encoding(request.headers.get("content-encoding"))
    if compressed is not None:  # refused unread, as the gateway does; on loopback the connection goes on
        return _refusal(api, compressed.status, compressed.code, compressed.message)
    raw = await request.body()
    if len(raw) > limit:
        return _refusal(api, 413, "request_too_large", f"The request body exceeds the edge's limit of {limit} bytes.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _refusal(api, 400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _refusal(api, 400, "invalid_request", "The request body must be a JSON object.")
    if too_deep(body):  # the gateway's limit, said here: deeper than orjson writes, the delta could not be made
        deep = too_deep_json()
        return _refusal(api, deep.status, deep.code, deep.message)
    runtime = _runtime(request)
    link = runtime.link
    turn = link.submit(api, request.url.path, body, forwardable(request.headers), len(raw))
    if runtime.captured is not None:
        runtime.captured.append({"api": api, "path": request.url.path, "body": body, "turn": turn})
    pieces = link.pieces(turn).__aiter__()
    streaming = body.get("stream") is True
    try:
        piece = await anext(pieces)
        while "head" not in piece:
            if piece is KEEPALIVE and streaming:  # the agent must not time out: start its stream now
                return _stream(api, turn, pieces, None, _committed_head())
            piece = await anext(pieces)
    except LinkUnavailableError as error:
        return _refusal(api, error.status, error.code, error.message)
    except StopAsyncIteration:
        return _refusal(api, 502, "gateway_error", "The gateway ended the answer without a status.")
    head = piece["head"]
    headers = {k: v for k, v in head["headers"].items() if k.lower() not in _NOT_RETURNED}
    return _stream(api, turn, pieces, head["status"], headers)


def _committed_head() -> dict[str, str]:
    return {"content-type": "text/event-stream", "cache-control": "no-cache"}


def _stream(
    api: API, turn: Turn, pieces: AsyncIterator[Piece], status: int | None, headers: dict[str, str]
) -> StreamingResponse:
    content = _agent_bytes(api, turn, pieces, committed_early=status is None)
    return StreamingResponse(content, status_code=status or 200, headers=headers)


async def _agent_bytes(
    api: API, turn: Turn, pieces: AsyncIterator[Piece], *, committed_early: bool
) -> AsyncIterator[bytes]:
    """The agent's stream. Started before the answer's status was known (to keep the agent from timing out), a
    refusal arriving later is said as a stream error, the only way left to say it."""
    late_error = False
    started = False
    if committed_early:
        yield expand.keepalive(api, started)
    try:
        async for piece in pieces:
            if piece is KEEPALIVE:
                yield expand.keepalive(api, started)
            elif "head" in piece:
                late_error = piece["head"]["status"] >= 400  # a head inside the stream came after it started
            elif piece.get("end"):
                if piece.get("error"):
                    yield expand.stream_error(api, "gateway_error", str(piece["error"]))
                return
            else:
                data = expand.piece_bytes(piece, turn.request)
                started = started or bool(data)
                yield expand.stream_error(api, "upstream_error", data.decode(errors="replace")) if late_error else data
    except LinkUnavailableError as error:
        yield expand.stream_error(api, error.code, error.message)
