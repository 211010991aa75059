"""HTTP routes: JSON and SSE encodings of the engine's turns and reads."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from tether.protocol.errors import ProtocolError, invalid, sse_error_shape
from tether.protocol.events import ErrorEvent, StreamEvent, TerminalEvent, is_terminal
from tether.protocol.request import (
    CreateRequest,
    Transport,
    check_input_items,
    decode_json_object,
    header_idempotency_key,
    parse_create,
    too_many_json_values,
    unsupported_content_encoding,
)
from tether.protocol.retry import retry_headers
from tether.protocol.sse import encode_done, encode_event
from tether.protocol.stream import with_stream_id
from tether.protocol.vocabulary import RESUME_TOKEN
from tether.server.origin import turn_origin
from tether.server.state import ServerState, server_state
from tether.types import JSONObject

READY_TIMEOUT_S = 3.0


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def error_response(error: ProtocolError) -> Response:
    headers = {**error.headers, **retry_headers(error.status, error.code)}
    return JSONBody(error.http_body(), status_code=error.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (checked while reading, not after), and with 415
    when it is compressed: bodies are read as sent, and a decoded size could not be bounded before decoding."""
    compressed = unsupported_content_encoding(
        request.headers.get("content-encoding"),
        headers={"connection": "close"},  # the body is not read
    )
    if compressed is not None:
        raise compressed
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        # The client went away mid-upload: nobody will read an answer, and it is not a server fault.
        raise ProtocolError(
            400, "client_disconnected", "The client disconnected before sending its whole body."
        ) from None
    return b"".join(chunks)


def _too_large(limit: int) -> ProtocolError:
    # The rest of the body is not read: the connection closes after the answer (see server/http_timeouts.py).
    return ProtocolError(
        413,
        "request_too_large",
        f"The request body exceeds the limit of {limit} bytes.",
        headers={"connection": "close"},
    )


async def decode_create(raw: bytes, state: ServerState, *, default_model: str | None = None) -> CreateRequest:
    """The create request in ``raw`` (see :func:`~tether.protocol.request.parse_create`), parsed off the event loop
    when it is large, and never decoded here when it holds more JSON values than the limit."""
    settings = state.settings
    excess = await state.value_counter.excess(raw, settings.max_json_values)
    if excess is not None:
        raise too_many_json_values(excess.values, settings.max_json_values)

    def parse() -> CreateRequest:
        body = decode_json_object(raw)
        check_input_items(body, settings.max_input_items)
        if default_model is not None:
            body.setdefault("model", default_model)
        return parse_create(body, Transport.HTTP)

    return await state.off_loop.read(len(raw), parse)


async def create_response(request: Request) -> Response:
    state = server_state(request)
    identity = state.auth.identify(request.headers)
    raw = await read_body(request, state.settings.max_body_bytes)
    create = await decode_create(raw, state)
    if create.idempotency_key is None:  # a blank header is no key: every blank one would answer with one response
        create.idempotency_key = header_idempotency_key(request.headers.get("idempotency-key", ""))
    origin = turn_origin("sse" if create.stream else "http", len(raw), identity, request.headers)
    live = await state.engine.create(create, tenant=identity.tenant, origin=origin)
    if create.background and not create.stream:  # answered at once; the generation goes on by itself
        return JSONBody(await state.engine.started(live))
    events = state.engine.follow(live)
    if create.stream:
        return _event_stream(events)
    return await _collect(events)


def _event_stream(events: AsyncIterator[StreamEvent]) -> StreamingResponse:
    return StreamingResponse(
        _sse(events), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


async def _collect(events: AsyncIterator[StreamEvent]) -> Response:
    terminal: TerminalEvent | None = None
    error: ErrorEvent | None = None
    async for event in events:
        if is_terminal(event):
            terminal = event
        elif event["type"] == "error":
            error = event
    if error is not None:
        body = {key: value for key, value in error["error"].items() if key != "headers"}
        status = error["status"]
        headers = {**(error["error"].get("headers") or {}), **retry_headers(status, error["error"]["code"])}
        return JSONBody({"error": body}, status_code=status, headers=headers)
    if terminal is None:  # the generation was cancelled (shutdown) before it could finish
        raise ProtocolError(503, "server_shutting_down", "The server stopped before the response finished.")
    return JSONBody(terminal["response"])


async def _sse(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            event = with_stream_id(event, None)  # a response made on a WebSocket lane, resumed over HTTP
            yield encode_event(sse_error_shape(event) if event["type"] == "error" else event)
    except ProtocolError as error:  # a resumed live response ended before the asked-for sequence number
        yield encode_event(sse_error_shape(error.ws_event()))
    yield encode_done()


async def get_response(request: Request) -> Response:
    state = server_state(request)
    tenant = state.auth.tenant(request.headers)
    response_id = request.path_params["response_id"]
    if _flag(request, "stream"):
        after = _int_param(request, "starting_after", minimum=-1)
        token = request.query_params.get(RESUME_TOKEN)
        live = await state.engine.attach(tenant, response_id, after=after, resume_token=token)
        return _event_stream(state.engine.follow(live, -1 if after is None else after))
    return JSONBody(await state.engine.get_response(tenant, response_id))


async def cancel_response(request: Request) -> Response:
    state = server_state(request)
    tenant = state.auth.tenant(request.headers)
    return JSONBody(await state.engine.cancel(tenant, request.path_params["response_id"]))


async def delete_response(request: Request) -> Response:
    state = server_state(request)
    identity = state.auth.identify(request.headers)
    deleted = await state.engine.delete_response(identity.tenant, request.path_params["response_id"])
    if state.audit is not None:
        state.audit.deleted(identity, request.path_params["response_id"])
    return JSONBody(deleted)


async def list_input_items(request: Request) -> Response:
    state = server_state(request)
    tenant = state.auth.tenant(request.headers)
    limit = _int_param(request, "limit")
    page = await state.engine.list_input_items(
        tenant,
        request.path_params["response_id"],
        after=request.query_params.get("after"),
        limit=20 if limit is None else limit,
        order=request.query_params.get("order", "desc"),
    )
    return JSONBody(page)


async def compact(request: Request) -> Response:
    state = server_state(request)
    tenant = state.auth.tenant(request.headers)
    raw = await read_body(request, state.settings.max_body_bytes)
    create = await decode_create(raw, state)
    return JSONBody(await state.engine.compact(create, tenant=tenant))


async def input_tokens(request: Request) -> Response:
    state = server_state(request)
    tenant = state.auth.tenant(request.headers)
    raw = await read_body(request, state.settings.max_body_bytes)
    create = await decode_create(raw, state, default_model="tether-count")
    count = await state.engine.count_input_tokens(create, tenant=tenant)
    return JSONBody({"object": "response.input_tokens", "input_tokens": count})


async def websocket_upgrade_required(request: Request) -> Response:
    return error_response(
        ProtocolError(
            426,
            "websocket_upgrade_required",
            "GET /v1/responses opens WebSocket mode: send an 'Upgrade: websocket' request, "
            "or POST to create a response.",
        )
    )


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONBody({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: 200 while the store answers, 503 while it does not (a load balancer stops sending turns here)."""
    state = server_state(request)
    try:
        await asyncio.wait_for(state.engine.store.ping(), READY_TIMEOUT_S)
    except Exception as error:  # any failure to reach the store is "not ready", never a 500
        body = {"status": "unavailable", "store": "unreachable", "error": type(error).__name__}
        return JSONBody(body, status_code=503)
    return JSONBody({"status": "ready", "store": "reachable"})


async def list_models(request: Request) -> Response:
    state = server_state(request)
    state.auth.tenant(request.headers)
    names = sorted(state.engine.router.model_names())
    data: list[JSONObject] = [{"id": name, "object": "model", "created": 0, "owned_by": "tether"} for name in names]
    return JSONBody({"object": "list", "data": data})


_JSON_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() in ("1", "true", "yes")


def _int_param(request: Request, name: str, minimum: int | None = None) -> int | None:
    """A query parameter that is an integer as JSON writes one (int() also reads '1_0', '+3', ' 3', other scripts'
    digits), and at least ``minimum``, with the answer the same field gets in a WebSocket event."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _JSON_INTEGER.fullmatch(raw):
        raise invalid("invalid_type", f"'{name}' must be an integer.", name)
    value = int(raw)
    if minimum is not None and value < minimum:
        message = f"Invalid value for '{name}': Input should be greater than or equal to {minimum}."
        raise invalid("invalid_value", message, name)
    return value
