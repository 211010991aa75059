"""What the steering tests through a real tether server share: a long input that streams for seconds, and reading
the ``openai`` SDK's WebSocket connection up to the event a test waits for."""

from __future__ import annotations

from typing import Any

LONG = " ".join(f"word{n}" for n in range(60))  # echoed 2 characters a delta, 20 ms apart: about 4 s of stream
TERMINALS = ("response.completed", "response.incomplete", "response.failed")


async def events_until(connection: Any, done: Any) -> list[Any]:
    """The connection's events up to the first one ``done`` says ends the wait (included)."""
    events: list[Any] = []
    async for event in connection:
        events.append(event)
        if done(event):
            return events
    raise AssertionError(f"the connection closed after {[event.type for event in events]}")


def is_terminal(event: Any) -> bool:
    return event.type in (*TERMINALS, "error")


async def created(connection: Any, **fields: Any) -> str:
    """Send a ``response.create`` and return the id of the response it created."""
    await connection.response.create(**fields)
    events = await events_until(connection, lambda event: event.type in ("response.created", "error"))
    assert events[-1].type == "response.created", events[-1]
    response_id: str = events[-1].response.id
    return response_id
