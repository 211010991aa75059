"""Exactly-once delivery of one response's events, across drops, resumes and replays (sans-I/O).

The tracker remembers the highest ``sequence_number`` handed to the caller. Whatever a transport yields next — a
resume after that number, an idempotent replay from 0, or the same events again — only events above it become
deltas. A ``response.created`` with another id means the server generated the turn anew (possible only without
tether's idempotency): the tracker then starts over and says so with a :class:`TurnReset`.
"""

from __future__ import annotations

from tether.client.errors import APIError, api_error_from_ws
from tether.client.results import Delta, ReasoningDelta, TextDelta, TurnReset, function_call
from tether.protocol.interrupted import GENERATION_INTERRUPTED
from tether.protocol.stream import response_error_code
from tether.protocol.vocabulary import RESPONSE_TERMINAL_EVENTS, RESUME_TOKEN
from tether.types import JSONObject

_REASONING_DELTAS = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})


def is_request_error(event: JSONObject) -> bool:
    """An ``error`` that refuses a request, as opposed to one inside a numbered response stream."""
    return event.get("type") == "error" and not isinstance(event.get("sequence_number"), int)


class ResponseTracker:
    """The delivery state of one turn's response.

    Attributes:
        response_id: the response, once ``response.created`` was seen.
        resume_token: its ``tether:resume_token``, if the server sent one.
        delivered: the highest sequence number handed to the caller (-1 before any).
        response: the final response object once a terminal event arrived.
        stream_error: an ``error`` event seen inside the stream of this attempt (SSE sends one before
            ``response.failed``; other servers may end the stream with it).
    """

    def __init__(self, response_id: str | None = None, resume_token: str | None = None) -> None:
        self.response_id = response_id
        self.resume_token = resume_token
        self.delivered = -1
        self.response: JSONObject | None = None
        self.terminal_type: str | None = None
        self.stream_error: APIError | None = None

    @property
    def done(self) -> bool:
        return self.response is not None

    @property
    def interrupted(self) -> bool:
        """Whether the response ended in ``generation_interrupted``: its node stopped; the turn must run again."""
        if self.terminal_type != "response.failed" or self.response is None:
            return False
        error = self.response.get("error") or {}
        return response_error_code(error) == GENERATION_INTERRUPTED

    def restart(self) -> None:
        """Expect the turn again as a new response (after ``generation_interrupted``): its ``response.created``
        will carry another id, and the caller is told with a :class:`TurnReset`."""
        self.response = None
        self.terminal_type = None
        self.stream_error = None

    def begin_attempt(self) -> None:
        """Forget the previous attempt's in-stream error."""
        self.stream_error = None

    def feed(self, event: JSONObject) -> list[Delta]:
        """Take the next event from a transport and return what the caller has not seen yet.

        Raises:
            APIError: for a request-scoped ``error`` (the request was refused; nothing was generated).
        """
        if is_request_error(event):
            raise api_error_from_ws(event)
        kind = event.get("type")
        deltas: list[Delta] = []
        if kind == "response.created":
            deltas += self._created(event.get("response") or {})
        sequence = event.get("sequence_number")
        if isinstance(sequence, int):
            if sequence <= self.delivered:
                return deltas
            self.delivered = sequence
        if kind == "error":
            self.stream_error = api_error_from_ws(event)
        elif kind == "response.output_text.delta":
            deltas.append(
                TextDelta(event.get("delta", ""), event.get("item_id", ""), event.get("output_index", 0), _seq(event))
            )
        elif kind in _REASONING_DELTAS:
            deltas.append(
                ReasoningDelta(
                    event.get("delta", ""), event.get("item_id", ""), event.get("output_index", 0), _seq(event)
                )
            )
        elif kind == "response.output_item.done":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                deltas.append(function_call(item))
        elif kind in RESPONSE_TERMINAL_EVENTS:
            self.response = event.get("response") or {}
            self.terminal_type = kind
        return deltas

    def _created(self, response: JSONObject) -> list[Delta]:
        response_id = response.get("id")
        if not isinstance(response_id, str):
            return []
        token = response.get(RESUME_TOKEN)
        if self.response_id is None or response_id == self.response_id:
            self.response_id = response_id
            self.resume_token = token if isinstance(token, str) else self.resume_token
            return []
        self.response_id = response_id
        self.resume_token = token if isinstance(token, str) else None
        self.delivered = -1
        return [TurnReset(response_id, "the turn was generated again as a new response")]


def _seq(event: JSONObject) -> int:
    sequence = event.get("sequence_number")
    return sequence if isinstance(sequence, int) else -1
