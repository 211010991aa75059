"""Reading an OpenAI Responses upstream (sans-I/O): its ``response.*`` events in, model events out.

The same reader serves HTTP/SSE and WebSocket mode, whose events are identical. The upstream response id and the
ids of messages and calls stay here: tether numbers those items and issues its own response ids. Reasoning items
keep the upstream's id, their summary parts and what their end carries (``encrypted_content``), since a client
sends them back for the upstream to read. An upstream that sends an item whole (only ``output_item.done``, or a
``.done`` longer than its deltas) still yields all of its content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tether.protocol.model_events import (
    Finish,
    ModelEvent,
    ReasoningEnd,
    ReasoningStart,
    ReasoningSummaryDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tether.providers.upstream_errors import UpstreamConnectionError, UpstreamReportedError
from tether.types import JSONObject

_PHASES: Mapping[str, Literal["commentary", "final_answer"]] = {
    "commentary": "commentary",
    "final_answer": "final_answer",
}
_TEXT_PARTS = frozenset({"output_text", "refusal"})


def decode_event(data: str | bytes) -> JSONObject:
    """One upstream event (an SSE ``data`` or a WebSocket message) as a JSON object.

    Raises:
        UpstreamConnectionError: (``mid_turn``) it is not one.
    """
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamConnectionError("the upstream sent an event that is not JSON", mid_turn=True) from None
    if not isinstance(event, dict):
        raise UpstreamConnectionError("the upstream sent an event that is not a JSON object", mid_turn=True)
    return event


def reported_error(payload: object, status: int | None = None) -> UpstreamReportedError:
    """The error in an HTTP error body, a WebSocket ``error`` event (nested) or an SSE ``error`` event (flat)."""
    outer: dict[str, Any] = payload if isinstance(payload, dict) else {}
    inner = outer.get("error")
    fields: dict[str, Any] = inner if isinstance(inner, dict) else outer
    if status is None and isinstance(outer.get("status"), int):
        status = outer["status"]
    code = fields.get("code") if isinstance(fields.get("code"), str) else None
    message = fields.get("message") if isinstance(fields.get("message"), str) else None
    headers = fields.get("headers")
    kept = {
        str(k).lower(): str(v)
        for k, v in (headers.items() if isinstance(headers, dict) else ())
        if str(k).lower() in ("retry-after", "retry-after-ms")
    }
    return UpstreamReportedError(status, code, message or str(code or "unknown error"), kept)


@dataclass(slots=True)
class _Item:
    kind: str
    call_id: str = ""
    name: str = ""
    phase: Literal["commentary", "final_answer"] | None = None
    streamed: str = ""
    parts: dict[int, str] = field(default_factory=dict)  # a reasoning item's summary parts streamed so far


class ResponsesEventReader:
    """Translates one upstream response's events into model events.

    Attributes:
        upstream_id: the upstream's id of the response, once an event has carried it.
        finished: whether a terminal event (completed or incomplete) has been read.
    """

    def __init__(self) -> None:
        self.upstream_id: str | None = None
        self.finished = False
        self._items: dict[str, _Item] = {}
        self._keys_by_index: dict[int, str] = {}

    def feed(self, event: JSONObject) -> list[ModelEvent]:
        """Read one event.

        Returns:
            The model events it means (often none), ending with ``Finish`` for a terminal event.

        Raises:
            UpstreamReportedError: for ``error`` and ``response.failed``.
        """
        kind = event.get("type")
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.upstream_id = response["id"]
        if kind == "error":
            raise reported_error(event)
        if kind == "response.failed":
            error = response.get("error") if isinstance(response, dict) else None
            raise reported_error({"error": error if isinstance(error, dict) else {"message": "the response failed"}})
        if kind in ("response.completed", "response.incomplete"):
            return [self._finish(response if isinstance(response, dict) else {})]
        if kind == "response.output_item.added":
            return self._added(event)
        if kind == "response.output_item.done":
            return self._done(event)
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return self._text(event, str(event.get("delta") or ""))
        if kind in ("response.output_text.done", "response.refusal.done"):
            return self._text(event, str(event.get("text") or event.get("refusal") or ""), whole=True)
        if kind == "response.function_call_arguments.delta":
            return self._arguments(event, str(event.get("delta") or ""))
        if kind == "response.function_call_arguments.done":
            return self._arguments(event, str(event.get("arguments") or ""), whole=True)
        if kind == "response.reasoning_summary_part.added":
            return self._summary(event, "")
        if kind == "response.reasoning_summary_text.delta":
            return self._summary(event, str(event.get("delta") or ""))
        if kind == "response.reasoning_summary_text.done":
            return self._summary(event, str(event.get("text") or ""), whole=True)
        if kind == "response.reasoning_summary_part.done":
            part = event.get("part")
            return self._summary(event, str(part.get("text") or "") if isinstance(part, dict) else "", whole=True)
        return []

    # -- items ---------------------------------------------------------------------------------------------

    def _added(self, event: JSONObject) -> list[ModelEvent]:
        raw = event.get("item")
        item = raw if isinstance(raw, dict) else {}
        key = self._key(event, item)
        kind = str(item.get("type") or "")
        if kind == "function_call":
            call = _Item(kind, call_id=str(item.get("call_id") or ""), name=str(item.get("name") or ""))
            self._items[key] = call
            # Opening the call now keeps parallel calls in the upstream's order, arguments or not.
            return self._grow(call, str(item.get("arguments") or ""), whole=True, always=True)
        self._items[key] = _Item(kind, phase=_PHASES.get(str(item.get("phase"))))
        item_id = item.get("id")
        if kind == "reasoning" and isinstance(item_id, str) and item_id:
            return [ReasoningStart(item_id)]
        return []

    def _done(self, event: JSONObject) -> list[ModelEvent]:
        raw = event.get("item")
        item = raw if isinstance(raw, dict) else {}
        key = self._key(event, item)
        known = self._items.get(key)
        kind = str(item.get("type") or "")
        added: list[ModelEvent] = []
        if known is None:
            added = self._added(event)
            known = self._items[key]
            if kind == "function_call":
                return added
        if kind == "function_call":
            return self._grow(known, str(item.get("arguments") or ""), whole=True)
        if kind == "message":
            content = item.get("content")
            parts = content if isinstance(content, list) else []
            text = "".join(
                str(p.get("text") or p.get("refusal") or "")
                for p in parts
                if isinstance(p, dict) and p.get("type") in _TEXT_PARTS
            )
            return self._grow(known, text, whole=True)
        if kind == "reasoning":
            summary = item.get("summary")
            parts = [p for p in summary if isinstance(p, dict)] if isinstance(summary, list) else []
            for index, part in enumerate(parts):
                added += self._grow_part(known, index, str(part.get("text") or ""), whole=True)
            return [*added, ReasoningEnd(item)]
        return []

    def _text(self, event: JSONObject, text: str, *, whole: bool = False) -> list[ModelEvent]:
        return self._grow(self._item_for(event, "message"), text, whole=whole)

    def _arguments(self, event: JSONObject, text: str, *, whole: bool = False) -> list[ModelEvent]:
        item = self._items.get(self._key(event, {}))
        if item is None or item.kind != "function_call":
            return []  # arguments of a call never announced: there is no call_id to give them
        return self._grow(item, text, whole=whole)

    def _summary(self, event: JSONObject, text: str, *, whole: bool = False) -> list[ModelEvent]:
        index = event.get("summary_index")
        return self._grow_part(self._item_for(event, "reasoning"), index if isinstance(index, int) else 0, text, whole)

    def _grow_part(self, item: _Item, index: int, text: str, whole: bool) -> list[ModelEvent]:
        """The delta that brings summary part ``index`` to ``text`` (``whole``) or adds ``text`` to it; the first
        event of a part opens it, even empty."""
        streamed = item.parts.get(index)
        if whole and streamed is not None:
            if not text.startswith(streamed):
                return []  # a final text that disagrees with the deltas sent already
            text = text[len(streamed) :]
        if streamed is not None and not text:
            return []
        item.parts[index] = (streamed or "") + text
        return [ReasoningSummaryDelta(text, summary_index=index)]

    def _grow(self, item: _Item, text: str, *, whole: bool, always: bool = False) -> list[ModelEvent]:
        """The delta that brings ``item`` to ``text`` (``whole``) or adds ``text`` to it."""
        if whole:
            if not text.startswith(item.streamed):
                return []  # an upstream's final text that disagrees with its deltas: the deltas were sent already
            text = text[len(item.streamed) :]
        if not text and not always:
            return []
        item.streamed += text
        if item.kind == "function_call":
            return [ToolCallDelta(call_id=item.call_id, name=item.name, arguments=text)]
        return [TextDelta(text, phase=item.phase)]

    def _item_for(self, event: JSONObject, kind: str) -> _Item:
        key = self._key(event, {})
        item = self._items.get(key)
        if item is None or item.kind != kind:
            item = self._items[key] = _Item(kind)
        return item

    def _key(self, event: JSONObject, item: JSONObject) -> str:
        index = event.get("output_index")
        item_id = item.get("id") or event.get("item_id")
        if isinstance(item_id, str) and item_id:
            if isinstance(index, int):
                self._keys_by_index[index] = item_id
            return item_id
        if isinstance(index, int):
            return self._keys_by_index.get(index, f"#{index}")
        return "#?"

    # -- the end -------------------------------------------------------------------------------------------

    def _finish(self, response: JSONObject) -> Finish:
        self.finished = True
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        usage = usage_from(response.get("usage"))
        if response.get("status") != "incomplete" and reason is None:
            return Finish(usage)
        if reason in ("content_filter", "steered"):
            return Finish(usage, reason)
        return Finish(usage, "max_output_tokens")


def usage_from(raw: object) -> Usage:
    """tether's usage from a Responses ``usage`` object (zeros for what is missing)."""
    usage = raw if isinstance(raw, dict) else {}
    input_details = usage.get("input_tokens_details")
    output_details = usage.get("output_tokens_details")
    return Usage(
        input_tokens=_count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        cached_tokens=_count(input_details.get("cached_tokens") if isinstance(input_details, dict) else 0),
        reasoning_tokens=_count(output_details.get("reasoning_tokens") if isinstance(output_details, dict) else 0),
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
