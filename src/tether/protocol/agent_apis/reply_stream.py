"""The lifecycle every agent-API stream encoder shares, whatever events it writes.

An encoder takes one response's Responses events in order and returns its API's events. Whatever the API, the
first event opens the answer, ``error`` and ``response.failed`` end it with the API's error, a completed or
incomplete response finishes it, and after a stop sequence the rest of the answer is not the agent's. Only what a
content event means differs: subclasses say that in :meth:`ReplyStream._translate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from tether.protocol.agent_apis.common import failed_error, stream_error
from tether.types import JSONObject


class ReplyStream(ABC):
    """Responses events in, an agent API's events out (sans-I/O).

    Feed every event of one response exactly once, in order (across a resume too: keep the same encoder). After
    the terminal event :attr:`finished` is true and later events are ignored.
    """

    def __init__(self) -> None:
        self.finished = False
        self._started = False
        self._stop_hit: str | None = None  # the stop sequence the text ended at, if one did

    def feed(self, event: JSONObject) -> list[JSONObject]:
        """The API's events one Responses event means (often none)."""
        if self.finished:
            return []
        kind = event.get("type")
        if kind == "error":
            return self._error(*stream_error(event))
        out = [] if self._started else self._begin(event.get("response"))
        if kind in ("response.completed", "response.incomplete"):
            return out + self._finish(event.get("response") or {})
        if kind == "response.failed":
            return out + self._error(*failed_error(event.get("response")))
        if self._stop_hit is not None:
            return out  # the answer ended at a stop sequence; the rest is not the agent's
        return out + self._translate(kind, event, event.get("output_index", 0))

    def _begin(self, response: Any) -> list[JSONObject]:
        self._started = True
        return self._start(response)

    @abstractmethod
    def _start(self, response: Any) -> list[JSONObject]:
        """The events that open the answer (``response`` is the first event's response object, if it has one)."""

    @abstractmethod
    def _translate(self, kind: Any, event: JSONObject, output_index: Any) -> list[JSONObject]:
        """The events one content event (text, tool call, reasoning, item boundaries) means."""

    @abstractmethod
    def _finish(self, response: JSONObject) -> list[JSONObject]:
        """The events that end a completed or incomplete answer; sets :attr:`finished`."""

    @abstractmethod
    def _error(self, code: str, message: str) -> list[JSONObject]:
        """The API's error for a failed answer; sets :attr:`finished`."""
