"""Reading one WebSocket client message: the event, or the error that answers it on the lane the message names."""

from __future__ import annotations

import orjson
import pytest

from tether.protocol.client_events import read_client_event
from tether.protocol.errors import ProtocolError


def deep(levels: int) -> object:
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("event_type", ["response.create", "tether:response.resume"])
def test_a_message_nested_too_deep_is_refused_on_the_lane_it_names(event_type: str) -> None:
    """The SDK's lanes wait for one error or terminal event on their lane: an unlabelled json_too_deep left the
    lane's create unanswered."""
    text = orjson.dumps({"type": event_type, "stream_id": "lane-1", "model": "m", "input": deep(200)}).decode()
    lane, event = read_client_event(text, 10_000)
    assert isinstance(event, ProtocolError)
    assert (lane, event.code) == ("lane-1", "json_too_deep")


def test_a_message_nested_too_deep_without_a_lane_is_refused_on_the_default_lane() -> None:
    text = orjson.dumps({"type": "response.create", "model": "m", "metadata": {"a": deep(200)}}).decode()
    lane, event = read_client_event(text, 10_000)
    assert isinstance(event, ProtocolError)
    assert (lane, event.code) == (None, "json_too_deep")


def test_a_valid_create_is_read_with_its_lane() -> None:
    text = orjson.dumps({"type": "response.create", "stream_id": "lane-1", "model": "m", "input": "hi"}).decode()
    lane, event = read_client_event(text, 10_000)
    assert lane == "lane-1"
    assert not isinstance(event, ProtocolError)
