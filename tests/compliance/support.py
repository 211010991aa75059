"""What the compliance tests share: the scripts the server loads, the tool they call, and event readers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Final

from openai.resources.responses.responses import AsyncResponsesConnection, ResponsesConnection
from openai.types.responses import FunctionToolParam, ResponsesServerEvent

API_KEY: Final = "test-key"
TENANT: Final = "compliance"
# A hung server must fail the test, not stall the suite (a pytest-timeout alarm may land in another task).
TURN_TIMEOUT_S: Final = 15.0
TERMINAL_TYPES: Final = frozenset({"response.completed", "response.failed", "response.incomplete"})

LOOKUP_TOOL: Final[FunctionToolParam] = {
    "type": "function",
    "name": "lookup",
    "description": "Look up one fact by its step number.",
    "parameters": {
        "type": "object",
        "properties": {"step": {"type": "integer"}},
        "required": ["step"],
        "additionalProperties": False,
    },
    "strict": True,
}

HTTP_LOOP_TEXT: Final = "HTTP loop done: three lookups answered."
WS_LOOP_TEXT: Final = "WebSocket loop done: three lookups answered."
CROSS_TRANSPORT_TEXT: Final = "Continued over HTTP from a WebSocket response."
TOOL_ROUNDS: Final = 3


def _tool_loop(final_text: str) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = [
        {"tool_calls": [{"name": "lookup", "arguments": {"step": step}}]} for step in range(1, TOOL_ROUNDS + 1)
    ]
    return [*rounds, {"text": final_text}]


# Loaded by the server at start-up (TETHER_SCRIPTED__SCRIPTS_FILE); the model "script:<name>" plays one.
SCRIPTS: Final[dict[str, list[dict[str, Any]]]] = {
    "http_tool_loop": _tool_loop(HTTP_LOOP_TEXT),
    "ws_tool_loop": _tool_loop(WS_LOOP_TEXT),
    "cross_transport": [
        {"tool_calls": [{"name": "lookup", "arguments": {"step": 1}}]},
        {"text": CROSS_TRANSPORT_TEXT},
    ],
}


def event_field(event: object, name: str) -> Any:
    """A field of an event as it came on the wire, ``None`` when absent (WebSocket events are built unvalidated)."""
    return getattr(event, name, None)


def ends_turn(event: ResponsesServerEvent) -> bool:
    """Whether nothing more arrives for this request: a terminal event, or an error raised before the response began.

    An error inside a running response carries a ``sequence_number`` and is followed by ``response.failed``.
    """
    if event.type in TERMINAL_TYPES:
        return True
    return event.type == "error" and event_field(event, "sequence_number") is None


def _decoded(raw: bytes) -> dict[str, Any]:
    payload = json.loads(raw)  # every WebSocket message must be one JSON object: no "[DONE]" sentinel
    assert isinstance(payload, dict), raw
    return payload


async def receive_turn(connection: AsyncResponsesConnection) -> list[ResponsesServerEvent]:
    """Read one request's events off a socket, checking each message is a JSON object."""
    events: list[ResponsesServerEvent] = []
    async with asyncio.timeout(TURN_TIMEOUT_S):
        while True:
            raw = await connection.recv_bytes()
            _decoded(raw)
            event = connection.parse_event(raw)
            events.append(event)
            if ends_turn(event):
                return events


def receive_turn_sync(connection: ResponsesConnection) -> list[ResponsesServerEvent]:
    """The blocking twin of :func:`receive_turn`."""
    events: list[ResponsesServerEvent] = []
    while True:
        raw = connection.recv_bytes()
        _decoded(raw)
        event = connection.parse_event(raw)
        events.append(event)
        if ends_turn(event):
            return events


def assert_numbered_from_zero(events: Sequence[object]) -> None:
    """The events of one response (SSE or WebSocket) carry sequence numbers 0, 1, 2, ... in order."""
    numbers = [event_field(event, "sequence_number") for event in events]
    assert numbers == list(range(len(events))), numbers
