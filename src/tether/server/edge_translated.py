"""Anthropic Messages and Chat Completions requests from an edge, answered by tether's own engine: the request is
translated into a Responses request, and the engine's events back into the agent's answer and stream
(:mod:`tether.protocol.agent_apis`). This is the path of a model routed to an upstream of another API, the built-in
scripted model of the embedded defaults included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tether.engine.engine import Engine
from tether.protocol import agent_apis
from tether.protocol.edge_wire import API, Piece
from tether.protocol.errors import ProtocolError
from tether.protocol.events import TerminalEvent, is_terminal
from tether.protocol.interrupted import is_interrupted_error
from tether.protocol.request import Transport, parse_create
from tether.server.edge_pieces import INTERRUPTED_END, JSON_HEAD, SSE_HEAD, error_pieces, with_generation
from tether.types import JSONObject


@dataclass(frozen=True, slots=True)
class _Translation:
    responses: JSONObject
    reply: Any
    stream: bool


@dataclass(frozen=True, slots=True)
class _Codec:
    translate: Callable[[JSONObject], _Translation]
    encoder: Callable[[Any], Any]
    frame: Callable[[JSONObject], Piece]
    done: tuple[Piece, ...]
    whole: Callable[[JSONObject, Any], JSONObject]
    failure: Callable[[JSONObject], tuple[int, JSONObject]]
    error_body: Callable[[ProtocolError], JSONObject]


def _messages(body: JSONObject) -> _Translation:
    translation = agent_apis.translate_messages_request(body)
    return _Translation(translation.responses, translation.reply, translation.reply.stream)


def _chat(body: JSONObject) -> _Translation:
    translation = agent_apis.translate_chat_request(body)
    return _Translation(translation.responses, translation.reply, translation.reply.stream)


CODECS: dict[str, _Codec] = {
    "anthropic-messages": _Codec(
        translate=_messages,
        encoder=agent_apis.MessagesStreamEncoder,
        frame=lambda event: {"sse": [str(event["type"]), orjson.dumps(event).decode()]},
        done=(),
        whole=agent_apis.messages_response,
        failure=agent_apis.messages_failure,
        error_body=agent_apis.anthropic_error,
    ),
    "chat-completions": _Codec(
        translate=_chat,
        encoder=agent_apis.ChatStreamEncoder,
        frame=lambda chunk: {"sse": [None, orjson.dumps(chunk).decode()]},
        done=({"sse": [None, "[DONE]"]},),
        whole=agent_apis.chat_completion,
        failure=agent_apis.chat_failure,
        error_body=agent_apis.chat_error,
    ),
}


def _json(body: JSONObject, status: int = 200, generation: str | None = None) -> list[Piece]:
    head: Piece = (
        JSON_HEAD if status == 200 else {"head": {"status": status, "headers": {"content-type": "application/json"}}}
    )
    if generation is not None:
        head = with_generation(head, generation)
    return [head, {"body": orjson.dumps(body).decode()}, {"end": True}]


async def translated_pieces(
    engine: Engine, api: API, path: str, request: JSONObject, *, tenant: str, turn: str
) -> AsyncIterator[Piece]:
    """Answer an Anthropic Messages or Chat Completions request with the engine, in the agent's API."""
    codec = CODECS[api]
    try:
        if path.endswith("/count_tokens"):
            for piece in _json(agent_apis.count_message_tokens(request)):
                yield piece
            return
        translation = codec.translate(request)
        create = parse_create(translation.responses, Transport.HTTP)
        create.idempotency_key = f"edge:{turn}"
        live = await engine.create(create, tenant=tenant)
    except ProtocolError as error:
        for piece in error_pieces(error, codec.error_body(error)):
            yield piece
        return
    events = engine.follow(live)
    if translation.stream:
        yield with_generation(SSE_HEAD, live.response_id)
        encoder = codec.encoder(translation.reply)
        async for event in events:
            if is_interrupted_error(event):
                yield INTERRUPTED_END
                return
            for out in encoder.feed(event):
                yield codec.frame(out)
        for piece in codec.done:
            yield piece
        yield {"end": True}
        return
    terminal: TerminalEvent | None = None
    async for event in events:
        if is_terminal(event):
            terminal = event
        elif is_interrupted_error(event):
            yield INTERRUPTED_END
            return
        elif event["type"] == "error":
            inner = event["error"]
            failed = ProtocolError(event["status"], inner["code"], inner["message"])
            for piece in error_pieces(failed, codec.error_body(failed)):
                yield piece
            return
    if terminal is None:
        stopped = ProtocolError(503, "server_shutting_down", "The server stopped before the response finished.")
        for piece in error_pieces(stopped, codec.error_body(stopped)):
            yield piece
        return
    response = dict(terminal["response"])
    if response["status"] == "failed":
        status, body = codec.failure(response)
        for piece in _json(body, status, live.response_id):
            yield piece
        return
    for piece in _json(codec.whole(response, translation.reply), generation=live.response_id):
        yield piece
