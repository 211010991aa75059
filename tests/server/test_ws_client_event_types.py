"""A client event whose ``type`` is not a string gets an error event; the socket and its other lanes go on."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect

from .wire import ServerFactory, collect, ends_turn, expect_ws_error, send_create, send_json


@pytest.mark.parametrize("event_type", [[], {}, [1, 2], {"a": 1}, 1.5, True, 7])
async def test_a_non_string_type_is_an_error_event_and_other_lanes_finish(
    make_server: ServerFactory, event_type: Any
) -> None:
    server = make_server(scripted={"tokens_per_second": 400.0})
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input=" ".join(["word"] * 200), store=False, stream_id="busy")
        first = await collect(ws, lambda events: bool(events))
        assert first[0]["type"] == "response.created"
        await send_json(ws, {"type": event_type, "stream_id": "other"})
        events = await collect(ws, lambda seen: sum(ends_turn(e) for e in seen) >= 2, within_s=30)
    errors = [e for e in events if e["type"] == "error" and "sequence_number" not in e]
    assert len(errors) == 1
    expect_ws_error(errors[0], "invalid_event_type", 400)
    assert errors[0]["stream_id"] == "other"
    assert [e["type"] for e in events if e.get("stream_id") == "busy"][-1] == "response.completed"
