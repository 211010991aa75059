"""Sans-I/O builder of a response's event stream.

:class:`ResponseStream` takes the model's deltas (:mod:`tether.protocol.model_events`) and returns the Responses API
events they mean, numbered with a strictly increasing ``sequence_number``, with ``item_id``/``output_index``/
``content_index`` on every delta, and the ``stream_id`` of a named lane on every event. It never awaits and never
touches a socket: every transport encodes what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

from tether.protocol import ids
from tether.protocol.errors import ProtocolError
from tether.protocol.events import (
    ContentPartAdded,
    ContentPartDone,
    ErrorEvent,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    FunctionCallItem,
    ItemStatus,
    OutgoingEvent,
    OutputItem,
    OutputItemAdded,
    OutputItemDone,
    OutputMessage,
    OutputTextDelta,
    OutputTextDone,
    OutputTextPart,
    ReasoningItem,
    ReasoningSummaryPartAdded,
    ReasoningSummaryPartDone,
    ReasoningSummaryTextDelta,
    ReasoningSummaryTextDone,
    ResponseCompleted,
    ResponseCreated,
    ResponseError,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    ResponseObject,
    StreamEvent,
    SummaryTextPart,
    _Numbered,
)
from tether.protocol.model_events import (
    Finish,
    ModelEvent,
    ReasoningEnd,
    ReasoningStart,
    ReasoningSummaryDelta,
    TextDelta,
    ToolCallDelta,
)
from tether.protocol.vocabulary import ERROR_CODE
from tether.types import Item

NumberedEvent = TypeVar("NumberedEvent", bound=_Numbered)

# The codes a response object's ``error.code`` may take (clients validate it as a closed set).
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)


def response_error(code: str, message: str) -> ResponseError:
    """A failed response's ``error``: a code outside the API's closed set becomes ``server_error`` (strict clients
    such as the ``openai`` SDK reject any other), and the code itself is kept as ``tether:code``."""
    if code in RESPONSE_ERROR_CODES:
        return {"code": code, "message": message}
    return {"code": "server_error", "message": message, ERROR_CODE: code}


def response_error_code(error: Mapping[str, object]) -> object:
    """The precise code of a failed response's ``error`` (``tether:code`` where tether set one, else ``code``)."""
    return error.get(ERROR_CODE, error.get("code"))


@dataclass(slots=True)
class _OpenItem:
    item: OutputItem
    output_index: int
    chunks: list[str] = field(default_factory=list)
    # A reasoning item's summary: the parts closed, and whether a part is open (and under which upstream index).
    parts: list[SummaryTextPart] = field(default_factory=list)
    part_open: bool = False
    upstream_index: int = 0


class ResponseStream:
    """Turns model events into numbered Responses events and accumulates the response's output.

    Args:
        response: the response object as it starts (``status: in_progress``, empty output).
        stream_id: the lane name, echoed on every event when not ``None``.
    """

    def __init__(self, response: ResponseObject, stream_id: str | None = None) -> None:
        self.response = response
        self.stream_id = stream_id
        self._output: list[OutputItem] = []
        self._sequence = 0
        self._open: _OpenItem | None = None

    @property
    def output(self) -> list[Item]:
        """The response's output so far, as the JSON items the context and the store keep (the same objects)."""
        return cast(list[Item], self._output)

    @property
    def next_sequence_number(self) -> int:
        return self._sequence

    def start(self) -> list[StreamEvent]:
        """``response.created`` and ``response.in_progress``. A response that starts ``queued`` (background mode)
        is created queued and moves to ``in_progress`` with the second event."""
        snapshot = self._snapshot()
        created = self._numbered(
            ResponseCreated(type="response.created", sequence_number=self._next(), response=snapshot)
        )
        if self.response["status"] == "queued":
            self.response["status"] = "in_progress"
            snapshot = self._snapshot()
        started = self._numbered(
            ResponseInProgress(type="response.in_progress", sequence_number=self._next(), response=snapshot)
        )
        return [created, started]

    def feed(self, event: ModelEvent) -> list[StreamEvent]:
        if isinstance(event, TextDelta):
            return self._text(event)
        if isinstance(event, ToolCallDelta):
            return self._tool_call(event)
        if isinstance(event, ReasoningSummaryDelta):
            return self._reasoning(event)
        if isinstance(event, ReasoningStart):
            events = self._close_item()
            self._open_reasoning(event.item_id, events)
            return events
        if isinstance(event, ReasoningEnd):
            return self._reasoning_end(event)
        return self.finish(event)

    def finish(self, finish: Finish) -> list[StreamEvent]:
        incomplete = finish.reason != "stop"
        events = self._close_item(status="incomplete" if incomplete else "completed")
        now = int(time.time())
        response = self.response
        response["status"] = "incomplete" if incomplete else "completed"
        response["output"] = self.output
        response["usage"] = finish.usage.to_json()
        response["completed_at"] = None if incomplete else now
        response["incomplete_details"] = {"reason": finish.reason} if incomplete else None
        if incomplete:
            events.append(
                self._numbered(
                    ResponseIncomplete(
                        type="response.incomplete", sequence_number=self._next(), response=self._snapshot()
                    )
                )
            )
        else:
            events.append(
                self._numbered(
                    ResponseCompleted(
                        type="response.completed", sequence_number=self._next(), response=self._snapshot()
                    )
                )
            )
        return events

    def fail(self, error: ProtocolError) -> list[StreamEvent]:
        """Close the stream with an ``error`` event followed by ``response.failed`` carrying the error."""
        events = self._close_item(status="incomplete")
        events.append(self._numbered_error(error.ws_event(sequence_number=self._next())))
        self.response["status"] = "failed"
        self.response["output"] = self.output
        self.response["error"] = response_error(error.code, error.message)
        events.append(
            self._numbered(
                ResponseFailed(type="response.failed", sequence_number=self._next(), response=self._snapshot())
            )
        )
        return events

    def cancel(self) -> list[StreamEvent]:
        """Close the stream of a cancelled response (background mode).

        The API has no ``response.cancelled`` event: the stream ends with ``response.failed`` whose response says
        ``status: "cancelled"`` (and has no ``error``), so every reader that waits for a terminal event sees one.
        The output produced so far is kept, an unfinished item closed as ``incomplete``.
        """
        events = self._close_item(status="incomplete")
        self.response["status"] = "cancelled"
        self.response["output"] = self.output
        events.append(
            self._numbered(
                ResponseFailed(type="response.failed", sequence_number=self._next(), response=self._snapshot())
            )
        )
        return events

    def fail_instead(self, pending: list[StreamEvent], error: ProtocolError) -> list[StreamEvent]:
        """The events to send instead of ``pending`` (a finish not sent yet) when the response cannot be kept.

        The item events of ``pending`` stay; its terminal event becomes ``error`` + ``response.failed``, numbered
        from where the terminal was, so the stream still counts up without a gap.
        """
        terminal_types = ("response.completed", "response.incomplete")
        kept = [event for event in pending if event["type"] not in terminal_types]
        terminals = [event for event in pending if event["type"] in terminal_types]
        if terminals:
            self._sequence = terminals[0]["sequence_number"]
        self.response["completed_at"] = None
        self.response["incomplete_details"] = None
        return kept + self.fail(error)

    # -- items ---------------------------------------------------------------------------------------------

    def _text(self, delta: TextDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        current = self._open
        if current is None or current.item["type"] != "message":
            events += self._close_item()
            message = OutputMessage(
                id=ids.message_id(), type="message", status="in_progress", role="assistant", content=[]
            )
            if delta.phase is not None:
                message["phase"] = delta.phase
            current = self._open_item(message, events)
            events.append(
                self._numbered(
                    ContentPartAdded(
                        type="response.content_part.added",
                        sequence_number=self._next(),
                        item_id=message["id"],
                        output_index=current.output_index,
                        content_index=0,
                        part=_text_part(""),
                    )
                )
            )
        current.chunks.append(delta.text)
        events.append(
            self._numbered(
                OutputTextDelta(
                    type="response.output_text.delta",
                    sequence_number=self._next(),
                    item_id=current.item["id"],
                    output_index=current.output_index,
                    content_index=0,
                    delta=delta.text,
                    logprobs=[],
                )
            )
        )
        return events

    def _tool_call(self, delta: ToolCallDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        current = self._open
        open_call = current.item if current is not None and current.item["type"] == "function_call" else None
        if current is None or open_call is None or open_call["call_id"] != delta.call_id:
            events += self._close_item()
            call = FunctionCallItem(
                id=ids.function_call_id(),
                type="function_call",
                status="in_progress",
                call_id=delta.call_id,
                name=delta.name,
                arguments="",
            )
            current = self._open_item(call, events)
        if delta.arguments:
            current.chunks.append(delta.arguments)
            events.append(
                self._numbered(
                    FunctionCallArgumentsDelta(
                        type="response.function_call_arguments.delta",
                        sequence_number=self._next(),
                        item_id=current.item["id"],
                        output_index=current.output_index,
                        delta=delta.arguments,
                    )
                )
            )
        return events

    def _reasoning(self, delta: ReasoningSummaryDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        current = self._reasoning_item(events)
        if not current.part_open or delta.summary_index > current.upstream_index:
            events += self._close_summary_part(current)
            current.part_open, current.upstream_index = True, delta.summary_index
            events.append(
                self._numbered(
                    ReasoningSummaryPartAdded(
                        type="response.reasoning_summary_part.added",
                        sequence_number=self._next(),
                        item_id=current.item["id"],
                        output_index=current.output_index,
                        summary_index=len(current.parts),
                        part=SummaryTextPart(type="summary_text", text=""),
                    )
                )
            )
        if delta.text:
            current.chunks.append(delta.text)
            events.append(
                self._numbered(
                    ReasoningSummaryTextDelta(
                        type="response.reasoning_summary_text.delta",
                        sequence_number=self._next(),
                        item_id=current.item["id"],
                        output_index=current.output_index,
                        summary_index=len(current.parts),
                        delta=delta.text,
                    )
                )
            )
        return events

    def _reasoning_end(self, end: ReasoningEnd) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        current = self._reasoning_item(events)
        extra = {key: value for key, value in end.fields.items() if key not in ("id", "type", "summary")}
        cast(dict[str, object], current.item).update(extra)
        return events + self._close_item()

    def _reasoning_item(self, events: list[StreamEvent]) -> _OpenItem:
        """The open reasoning item, or a new one under tether's id (closing whatever else was open)."""
        current = self._open
        if current is not None and current.item["type"] == "reasoning":
            return current
        events += self._close_item()
        return self._open_reasoning(ids.reasoning_id(), events)

    def _open_reasoning(self, item_id: str, events: list[StreamEvent]) -> _OpenItem:
        return self._open_item(ReasoningItem(id=item_id, type="reasoning", summary=[]), events)

    def _close_summary_part(self, current: _OpenItem) -> list[StreamEvent]:
        if not current.part_open:
            return []
        text, index = "".join(current.chunks), len(current.parts)
        part = SummaryTextPart(type="summary_text", text=text)
        current.parts.append(part)
        current.chunks, current.part_open = [], False
        item_id, output_index = current.item["id"], current.output_index
        return [
            self._numbered(
                ReasoningSummaryTextDone(
                    type="response.reasoning_summary_text.done",
                    sequence_number=self._next(),
                    item_id=item_id,
                    output_index=output_index,
                    summary_index=index,
                    text=text,
                )
            ),
            self._numbered(
                ReasoningSummaryPartDone(
                    type="response.reasoning_summary_part.done",
                    sequence_number=self._next(),
                    item_id=item_id,
                    output_index=output_index,
                    summary_index=index,
                    part=part.copy(),
                )
            ),
        ]

    def _open_item(self, item: OutputItem, events: list[StreamEvent]) -> _OpenItem:
        opened = _OpenItem(item=item, output_index=len(self._output))
        self._output.append(item)
        self._open = opened
        events.append(
            self._numbered(
                OutputItemAdded(
                    type="response.output_item.added",
                    sequence_number=self._next(),
                    output_index=opened.output_index,
                    item=item.copy(),
                )
            )
        )
        return opened

    def _close_item(self, status: ItemStatus = "completed") -> list[StreamEvent]:
        current = self._open
        if current is None:
            return []
        self._open = None
        item, index, text = current.item, current.output_index, "".join(current.chunks)
        item_id = item["id"]
        events: list[StreamEvent] = []
        if item["type"] == "message":
            part = _text_part(text)
            events.append(
                self._numbered(
                    OutputTextDone(
                        type="response.output_text.done",
                        sequence_number=self._next(),
                        item_id=item_id,
                        output_index=index,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                )
            )
            events.append(
                self._numbered(
                    ContentPartDone(
                        type="response.content_part.done",
                        sequence_number=self._next(),
                        item_id=item_id,
                        output_index=index,
                        content_index=0,
                        part=part,
                    )
                )
            )
            item["content"] = [part]
            item["status"] = status
        elif item["type"] == "function_call":
            item["arguments"] = text
            item["status"] = status
            events.append(
                self._numbered(
                    FunctionCallArgumentsDone(
                        type="response.function_call_arguments.done",
                        sequence_number=self._next(),
                        item_id=item_id,
                        output_index=index,
                        name=item["name"],
                        arguments=text,
                    )
                )
            )
        else:
            events += self._close_summary_part(current)
            item["summary"] = current.parts
        events.append(
            self._numbered(
                OutputItemDone(
                    type="response.output_item.done", sequence_number=self._next(), output_index=index, item=item.copy()
                )
            )
        )
        return events

    # -- plumbing ------------------------------------------------------------------------------------------

    def _snapshot(self) -> ResponseObject:
        snapshot = self.response.copy()
        snapshot["output"] = list(self.output) if snapshot["status"] not in ("queued", "in_progress") else []
        return snapshot

    def _next(self) -> int:
        sequence_number = self._sequence
        self._sequence += 1
        return sequence_number

    def _numbered_error(self, event: ErrorEvent) -> ErrorEvent:
        if self.stream_id is not None:
            event["stream_id"] = self.stream_id
        return event

    def _numbered(self, event: NumberedEvent) -> NumberedEvent:
        if self.stream_id is not None:
            event["stream_id"] = self.stream_id
        return event


def _text_part(text: str) -> OutputTextPart:
    return OutputTextPart(type="output_text", text=text, annotations=[], logprobs=[])


def with_stream_id(event: OutgoingEvent, stream_id: str | None) -> OutgoingEvent:
    """The event as seen on lane ``stream_id`` (replays and resumes may be read on another lane than they ran on)."""
    if event.get("stream_id") == stream_id:
        return event
    relabeled = event.copy()
    if stream_id is None:
        relabeled.pop("stream_id", None)
    else:
        relabeled["stream_id"] = stream_id
    return relabeled
