"""Raw-wire helpers for the server tests: exact frames in both directions, every receive bounded by a timeout."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import orjson
from websockets.asyncio.client import ClientConnection

from tether.protocol.delta import MISSING, diff, value_hash
from tether.server.runner import GatewayAddress, RunningServer
from tether.types import JSONObject

ServerFactory = Callable[..., RunningServer]

RECEIVE_TIMEOUT_S = 10.0
MODEL = "gpt-test"
TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})
# Every key Open Responses requires on a response object (protocol.md §8.1).
RESPONSE_KEYS = frozenset(
    {
        "id",
        "object",
        "created_at",
        "completed_at",
        "status",
        "incomplete_details",
        "model",
        "previous_response_id",
        "instructions",
        "output",
        "error",
        "tools",
        "tool_choice",
        "truncation",
        "parallel_tool_calls",
        "text",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "top_logprobs",
        "temperature",
        "reasoning",
        "usage",
        "max_output_tokens",
        "max_tool_calls",
        "store",
        "background",
        "service_tier",
        "metadata",
        "safety_identifier",
        "prompt_cache_key",
    }
)
ERROR_KEYS = frozenset({"message", "type", "param", "code"})
WEATHER_TOOL: JSONObject = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def user(text: str) -> JSONObject:
    return {"type": "message", "role": "user", "content": text}


def create_event(**fields: Any) -> JSONObject:
    """A ``response.create`` client event; ``model`` defaults to a heuristic scripted model."""
    return {"type": "response.create", "model": MODEL, **fields}


# -- WebSocket ----------------------------------------------------------------------------------------------------


async def send_json(ws: ClientConnection, payload: Any) -> None:
    await ws.send(json.dumps(payload))


async def send_create(ws: ClientConnection, **fields: Any) -> None:
    await send_json(ws, create_event(**fields))


async def receive(ws: ClientConnection, within_s: float = RECEIVE_TIMEOUT_S) -> JSONObject:
    """The next server event; the server only ever sends JSON objects in text frames."""
    async with asyncio.timeout(within_s):
        message = await ws.recv()
    assert isinstance(message, str), f"binary frame from the server: {message!r}"
    event = json.loads(message)
    assert isinstance(event, dict), f"not a JSON object: {message}"
    return event


def ends_turn(event: JSONObject) -> bool:
    """A terminal response event, or a request-scoped error (one not part of a response's numbered stream)."""
    return event["type"] in TERMINAL_EVENTS or (event["type"] == "error" and "sequence_number" not in event)


async def receive_turn(ws: ClientConnection, within_s: float = RECEIVE_TIMEOUT_S) -> list[JSONObject]:
    """Events up to and including the one that ends the current turn (see :func:`ends_turn`)."""
    events: list[JSONObject] = []
    async with asyncio.timeout(within_s):
        while not events or not ends_turn(events[-1]):
            events.append(await receive(ws, within_s))
    return events


async def collect(
    ws: ClientConnection, done: Callable[[list[JSONObject]], bool], within_s: float = RECEIVE_TIMEOUT_S
) -> list[JSONObject]:
    """Receive events until ``done(events)`` holds."""
    events: list[JSONObject] = []
    async with asyncio.timeout(within_s):
        while not done(events):
            events.append(await receive(ws, within_s))
    return events


def count_ends(n: int) -> Callable[[list[JSONObject]], bool]:
    """A ``done`` predicate for :func:`collect`: ``n`` turns have ended."""
    return lambda events: sum(ends_turn(event) for event in events) >= n


async def turn(ws: ClientConnection, **fields: Any) -> list[JSONObject]:
    await send_create(ws, **fields)
    return await receive_turn(ws)


async def completed_turn(ws: ClientConnection, **fields: Any) -> JSONObject:
    """Run a turn that must complete; return its final response object."""
    return completed(await turn(ws, **fields))


async def error_turn(ws: ClientConnection, **fields: Any) -> JSONObject:
    """Run a turn that must be refused; return the error event."""
    events = await turn(ws, **fields)
    assert len(events) == 1, events
    return expect_ws_error(events[0])


def completed(events: list[JSONObject]) -> JSONObject:
    last = events[-1]
    assert last["type"] == "response.completed", last
    response: JSONObject = last["response"]
    assert response["status"] == "completed"
    return response


def expect_ws_error(event: JSONObject, code: str | None = None, status: int | None = None) -> JSONObject:
    """Check the WebSocket error shape (protocol.md §6.1) and return the event."""
    assert event["type"] == "error", event
    assert isinstance(event["status"], int)
    assert set(event["error"]) >= ERROR_KEYS, event
    if code is not None:
        assert event["error"]["code"] == code, event
    if status is not None:
        assert event["status"] == status, event
    return event


def output_text(response: JSONObject) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def function_calls(response: JSONObject) -> list[JSONObject]:
    return [item for item in response["output"] if item["type"] == "function_call"]


# -- HTTP ---------------------------------------------------------------------------------------------------------


def http_client(server: GatewayAddress, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, timeout=RECEIVE_TIMEOUT_S, headers=headers)


def expect_http_error(response: httpx.Response, status: int, code: str | None = None) -> JSONObject:
    """Check the HTTP error envelope (protocol.md §6.3) and return its inner error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: JSONObject = body["error"]
    assert set(error) >= ERROR_KEYS, error
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


@dataclass(frozen=True, slots=True)
class SSEFrame:
    event: str | None
    data: str


def parse_sse(raw: bytes) -> list[SSEFrame]:
    """Split an SSE body into frames, strictly: ``event:``/``data:`` lines only, every frame ends with a blank line."""
    text = raw.decode()
    assert text.endswith("\n\n"), text[-200:]
    frames: list[SSEFrame] = []
    for block in text[:-2].split("\n\n"):
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            field, sep, value = line.partition(": ")
            assert sep, f"malformed SSE line {line!r}"
            if field == "event":
                event = value
            else:
                assert field == "data", f"unexpected SSE field {field!r}"
                data.append(value)
        assert len(data) == 1, block
        frames.append(SSEFrame(event, data[0]))
    return frames


def sse_events(raw: bytes) -> list[JSONObject]:
    """The JSON events of an SSE body, checking ``event:`` equals each ``type`` and the stream ends with [DONE]."""
    frames = parse_sse(raw)
    assert frames[-1] == SSEFrame(None, "[DONE]"), frames[-1]
    events: list[JSONObject] = []
    for frame in frames[:-1]:
        event = json.loads(frame.data)
        assert isinstance(event, dict)
        assert frame.event == event["type"], frame
        events.append(event)
    return events


# -- raw WebSocket over TCP (for what the websockets client would hide) -------------------------------------------

OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


@dataclass(frozen=True, slots=True)
class RawFrame:
    opcode: int
    payload: bytes


async def raw_upgrade(
    server: RunningServer, extra_headers: str = "", sock: socket.socket | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP connection (or use ``sock``, connected) and perform the WebSocket opening handshake by hand (no
    extensions)."""
    if sock is None:
        reader, writer = await asyncio.open_connection(server.host, server.port)
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /v1/responses HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        ).encode()
    )
    await writer.drain()
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> RawFrame:
    """Read one unmasked server frame (raises ``asyncio.IncompleteReadError`` at EOF)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    assert not second & 0x80, "server frames must not be masked"
    return RawFrame(first & 0x0F, await reader.readexactly(length))


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked as RFC 6455 requires of clients."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


# -- The edge link (a raw edge: frames as ``tether edge`` sends them, or as a hostile one could) -----------------


def edge_link_url(server: GatewayAddress) -> str:
    return f"ws://{server.host}:{server.port}/v1/tether/edge"


def edge_turn_frame(
    turn: str, request: str | JSONObject, base: JSONObject | None = None, headers: dict[str, str] | None = None
) -> str:
    """A turn frame for a Responses request: whole (``["v", request]``, the JSON text itself when ``request`` is a
    string), or a delta against ``base`` when given; with ``headers``, whole (as the first frame after a frame the
    gateway refused unread must bring them)."""
    if isinstance(request, str):
        try:
            digest = value_hash(orjson.loads(request))
        except orjson.JSONEncodeError:  # deeper than orjson writes: a hash no edge could have made
            digest = "0" * 32
        patch = f'["v",{request}]'
    else:
        digest, patch = value_hash(request), json.dumps(diff(MISSING if base is None else base, request))
    head: JSONObject = {"type": "tether:edge.turn", "turn": turn, "api": "responses", "path": "/v1/responses",
                        "id": digest, "base": None if base is None else value_hash(base)}  # fmt: skip
    if headers is not None:
        head["headers"] = ["v", headers]
    return json.dumps(head)[:-1] + f', "patch": {patch}}}'


async def expect_edge_turn_answered(ws: ClientConnection, turn: str) -> None:
    """The link answers ``turn``: its head, with a status of 200, and every piece up to its end."""
    frame = await receive(ws)
    assert frame["type"] == "tether:edge.out", frame
    assert frame["turn"] == turn
    assert frame["head"]["status"] == 200, frame
    while not frame.get("end"):
        frame = await receive(ws)
        assert frame["type"] == "tether:edge.out", frame
        assert frame["turn"] == turn, frame


def expect_edge_turn_error(frame: JSONObject, turn: str, code: str, status: int) -> JSONObject:
    """An error frame ending one turn of the link (the WebSocket error shape, naming the turn)."""
    expect_ws_error(frame, code, status)
    assert frame.get("turn") == turn, frame
    return frame
