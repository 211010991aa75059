"""tether's Responses answer as an Anthropic Messages answer: the JSON body, and the exact SSE stream.

:class:`MessagesStreamEncoder` takes a response's Responses events in order (from the engine, the stream log or a
resumed stream) and returns the Messages stream events they mean::

    message_start → ping → (content_block_start → content_block_delta* → content_block_stop)* → message_delta
    → message_stop

with ``text_delta`` for text, ``input_json_delta`` for a ``tool_use``'s input, ``thinking_delta`` and
``signature_delta`` for thinking (only when the request enabled thinking), and an ``error`` event when the
response failed. :func:`messages_response` builds the non-streamed body from a finished response object; the
encoder's :attr:`~MessagesStreamEncoder.message` is the same body, accumulated from the stream.

Mapping: a message item's ``output_text`` (or ``refusal``) part → a ``text`` block (empty ones are left out, as
the Messages API refuses empty text blocks when the agent sends them back); a ``function_call`` → a ``tool_use``
block whose id is the ``call_id`` (made ``[A-Za-z0-9_-]`` if needed); a ``reasoning`` item → a ``thinking``
block (summary parts joined by a blank line) whose ``signature`` is its ``encrypted_content`` or ``""``.
``stop_reason`` is ``tool_use`` when the answer calls a tool, ``max_tokens`` for a response incomplete at
``max_output_tokens``, ``refusal`` for ``content_filter``, else ``end_turn``. Usage: Anthropic's
``input_tokens`` excludes cache reads and writes, Responses' includes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tether.protocol.agent_apis.anthropic_request import MessagesReply
from tether.protocol.agent_apis.common import (
    ResponsesUsage,
    StopScanner,
    arguments_object,
    cut_at_stop,
    failed_error,
    incomplete_reason,
    public_id,
    stream_error,
    tool_use_id,
)
from tether.protocol.errors import ProtocolError
from tether.protocol.sse import encode_event
from tether.types import Event, Item, JSONObject

__all__ = [
    "MessagesStreamEncoder",
    "anthropic_error",
    "encode_messages_event",
    "messages_failure",
    "messages_response",
    "ping_frame",
]

StopReason = Literal["end_turn", "max_tokens", "tool_use", "refusal", "stop_sequence"]
BlockKind = Literal["text", "tool_use", "thinking"]

_STOP_REASONS: dict[str, StopReason] = {"max_output_tokens": "max_tokens", "content_filter": "refusal"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_STREAM_ERROR_TYPES = {"rate_limit_exceeded": "rate_limit_error", "overloaded": "overloaded_error"}
_PING: Event = {"type": "ping"}


def encode_messages_event(event: Event) -> bytes:
    """One Messages SSE frame: ``event: <type>`` and ``data: <json>`` (the API sends no ``[DONE]``)."""
    return encode_event(event)


def ping_frame() -> bytes:
    """An ``event: ping`` frame: the Messages API's own keep-alive, which clients ignore."""
    return encode_event(_PING)


def anthropic_error(error: ProtocolError) -> JSONObject:
    """A protocol error in the Messages API's error shape: ``{"type": "error", "error": {"type", "message"}}``.

    The HTTP status stays ``error.status``; the error type follows it (``invalid_request_error`` for 400,
    ``rate_limit_error`` for 429, ``api_error`` for 5xx, ...).
    """
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(error.status, "api_error"), "message": error.message}}


def messages_failure(response: JSONObject) -> tuple[int, JSONObject]:
    """The HTTP status and Messages error body for a ``failed`` Responses response object (429 for a rate limit,
    else 500 ``api_error``)."""
    code, message = failed_error(response)
    kind = _STREAM_ERROR_TYPES.get(code, "api_error")
    return (429 if kind == "rate_limit_error" else 500), {"type": "error", "error": {"type": kind, "message": message}}


def messages_response(response: JSONObject, reply: MessagesReply) -> JSONObject:
    """The non-streamed Messages body for a finished Responses response object.

    Args:
        response: the response object (``status`` ``completed`` or ``incomplete``; for a ``failed`` one answer
            :func:`messages_failure` instead).
        reply: from the request's translation.

    Returns:
        ``{"id", "type": "message", "role": "assistant", "model", "content", "stop_reason", "stop_sequence",
        "usage"}``.
    """
    content: list[JSONObject] = []
    for item in response.get("output") or ():
        if isinstance(item, dict):
            content += _item_blocks(item, reply)
    content, hit = _cut_at_stop(content, reply.stop_sequences)
    return {
        **_message_head(response.get("id"), reply.model, content),
        "stop_reason": "stop_sequence" if hit is not None else _stop_reason(response, content),
        "stop_sequence": hit,
        "usage": _usage(ResponsesUsage.of(response.get("usage"))),
    }


def _cut_at_stop(content: list[JSONObject], sequences: tuple[str, ...]) -> tuple[list[JSONObject], str | None]:
    """The blocks up to the first stop sequence in a text block (cut there), and the sequence."""
    for position, block in enumerate(content):
        if block["type"] != "text":
            continue
        text, hit = cut_at_stop(block["text"], sequences)
        if hit is not None:
            kept = content[:position]
            return ([*kept, {**block, "text": text}] if text else kept), hit
    return content, None


@dataclass(slots=True)
class _Block:
    index: int
    kind: BlockKind
    streamed: list[str] = field(default_factory=list)
    started: bool = False
    call_id: str = ""
    name: str = ""
    summary_index: int = 0
    scanner: StopScanner | None = None


class MessagesStreamEncoder:
    """Responses events in, Messages stream events out (sans-I/O; encode each with :func:`encode_messages_event`).

    Feed every event of one response exactly once, in order (across a resume too: keep the same encoder).
    After the terminal event :attr:`finished` is true and later events are ignored. A stop sequence of the request
    ends the text where it starts: nothing more of the answer is sent, and ``stop_reason`` is ``stop_sequence``.

    Args:
        reply: from the request's translation (model name, thinking, the prompt estimate).
    """

    def __init__(self, reply: MessagesReply) -> None:
        self.reply = reply
        self.finished = False
        self._started = False
        self._message: JSONObject = _message_head(None, reply.model, [])
        self._blocks: dict[tuple[int, int], _Block] = {}
        self._closed: set[tuple[int, int]] = set()
        self._next_index = 0
        self._calls_tool = False
        self._stop_hit: str | None = None

    @property
    def message(self) -> JSONObject:
        """The Messages body accumulated so far (complete once :attr:`finished`), as the non-streamed answer."""
        return self._message

    def feed(self, event: Event) -> list[Event]:
        """The Messages events one Responses event means (often none)."""
        if self.finished:
            return []
        kind = event.get("type")
        if kind == "error":
            return self._error(*stream_error(event))
        out = self._start(event.get("response")) if not self._started else []
        if kind in ("response.completed", "response.incomplete"):
            return out + self._finish(event.get("response") or {})
        if kind == "response.failed":
            return out + self._error(*failed_error(event.get("response")))
        if self._stop_hit is not None:
            return out  # the answer ended at a stop sequence; the rest is not the agent's
        output_index = event.get("output_index", 0)
        if kind == "response.output_item.added":
            out += self._item_added(output_index, event.get("item") or {})
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            out += self._text(output_index, event.get("content_index", 0), event.get("delta"))
        elif kind in ("response.output_text.done", "response.refusal.done"):
            out += self._text_done(output_index, event.get("content_index", 0), event.get("text", event.get("refusal")))
        elif kind == "response.content_part.done":
            part = event.get("part") or {}
            key = (output_index, event.get("content_index", 0))
            out += self._text_done(*key, part.get("text", part.get("refusal")))
            out += self._stop(key)
        elif kind == "response.function_call_arguments.delta":
            out += self._delta((output_index, -1), event.get("delta"))
        elif kind == "response.function_call_arguments.done":
            out += self._catch_up((output_index, -1), event.get("arguments"))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            out += self._thinking(output_index, event.get("summary_index", 0), event.get("delta"))
        elif kind == "response.output_item.done":
            out += self._item_done(output_index, event.get("item") or {})
        return out

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _start(self, response: Any) -> list[Event]:
        self._started = True
        response_id = response.get("id") if isinstance(response, dict) else None
        self._message = _message_head(response_id, self.reply.model, [])
        usage = {**_usage(ResponsesUsage()), "input_tokens": self.reply.input_tokens}
        start = {**self._message, "content": [], "stop_reason": None, "usage": usage}
        return [{"type": "message_start", "message": start}, dict(_PING)]

    def _finish(self, response: JSONObject) -> list[Event]:
        out: list[Event] = []
        for key in list(self._blocks):
            out += self._stop(key)
        self.finished = True
        stop_reason: StopReason = "tool_use" if self._calls_tool else "end_turn"
        reason = incomplete_reason(response)
        if reason is not None:
            stop_reason = _STOP_REASONS.get(reason, "end_turn")
        if self._stop_hit is not None:
            stop_reason = "stop_sequence"
        usage = _usage(ResponsesUsage.of(response.get("usage")))
        self._message.update(stop_reason=stop_reason, stop_sequence=self._stop_hit, usage=usage)
        stop = {"stop_reason": stop_reason, "stop_sequence": self._stop_hit}
        delta = {"type": "message_delta", "delta": stop, "usage": usage}
        return [*out, delta, {"type": "message_stop"}]

    def _error(self, code: str, message: str) -> list[Event]:
        self.finished = True
        kind = _STREAM_ERROR_TYPES.get(code, "api_error")
        return [{"type": "error", "error": {"type": kind, "message": message}}]

    # -- blocks --------------------------------------------------------------------------------------------

    def _item_added(self, output_index: int, item: Item) -> list[Event]:
        kind = item.get("type")
        if kind == "function_call":
            block = self._block((output_index, -1), "tool_use")
            block.call_id, block.name = tool_use_id(str(item.get("call_id") or "call")), str(item.get("name") or "")
            self._calls_tool = True
            return self._open(block)
        if kind == "reasoning" and self.reply.thinking:
            self._block((output_index, -1), "thinking")
        return []

    def _item_done(self, output_index: int, item: Item) -> list[Event]:
        kind = item.get("type")
        out: list[Event] = []
        if kind == "function_call":
            out += self._catch_up((output_index, -1), item.get("arguments"))
        elif kind == "reasoning" and (output_index, -1) in self._blocks:
            block = self._blocks[(output_index, -1)]
            if not block.started and _summary_text(item):
                out += self._thinking(output_index, 0, _summary_text(item))
            if block.started:
                signature = {"type": "signature_delta", "signature": _signature(item)}
                out.append(self._delta_event(block, signature))
                self._content(block)["signature"] = signature["signature"]
        elif kind == "message":
            for content_index, part in enumerate(item.get("content") or ()):
                if isinstance(part, dict):
                    out += self._text_done(output_index, content_index, part.get("text", part.get("refusal")))
        for key in [key for key in self._blocks if key[0] == output_index]:
            out += self._stop(key)
        return out

    def _text(self, output_index: int, content_index: int, delta: Any) -> list[Event]:
        return self._delta((output_index, content_index), delta, create="text")

    def _text_done(self, output_index: int, content_index: int, text: Any) -> list[Event]:
        return self._catch_up((output_index, content_index), text, create="text")

    def _thinking(self, output_index: int, summary_index: int, delta: Any) -> list[Event]:
        block = self._blocks.get((output_index, -1))
        if block is None or not isinstance(delta, str) or not delta:
            return []
        if summary_index != block.summary_index:
            block.summary_index = summary_index
            if block.streamed:
                delta = "\n\n" + delta
        return self._delta((output_index, -1), delta)

    def _delta(self, key: tuple[int, int], delta: Any, create: BlockKind | None = None) -> list[Event]:
        if not isinstance(delta, str) or not delta:
            return []
        block = self._blocks.get(key)
        if block is None:
            if create is None or key in self._closed:
                return []
            block = self._block(key, create)
        block.streamed.append(delta)
        if block.kind == "text":
            return self._text_out(key, block, delta)
        out = self._open(block)
        if block.kind == "tool_use":
            out.append(self._delta_event(block, {"type": "input_json_delta", "partial_json": delta}))
        else:
            out.append(self._delta_event(block, {"type": "thinking_delta", "thinking": delta}))
            self._content(block)["thinking"] += delta
        return out

    def _text_out(self, key: tuple[int, int], block: _Block, delta: str, *, final: bool = False) -> list[Event]:
        """Send text as far as the stop sequences allow; a hit ends the block and the answer."""
        if block.scanner is None:
            block.scanner = StopScanner(self.reply.stop_sequences)
        text = block.scanner.flush() if final else block.scanner.feed(delta)
        out: list[Event] = []
        if text:
            out += self._open(block)
            out.append(self._delta_event(block, {"type": "text_delta", "text": text}))
            self._content(block)["text"] += text
        if block.scanner.hit is not None and not final:
            self._stop_hit = block.scanner.hit
            out += self._stop(key)
        return out

    def _catch_up(self, key: tuple[int, int], whole: Any, create: BlockKind | None = None) -> list[Event]:
        """Send what a ``.done`` event holds beyond the deltas already sent (a stream may skip its deltas)."""
        if not isinstance(whole, str):
            return []
        block = self._blocks.get(key)
        sent = "".join(block.streamed) if block is not None else ""
        if not whole.startswith(sent) or len(whole) == len(sent):
            return []
        return self._delta(key, whole[len(sent) :], create)

    def _block(self, key: tuple[int, int], kind: BlockKind) -> _Block:
        block = _Block(index=-1, kind=kind)
        self._blocks[key] = block
        return block

    def _open(self, block: _Block) -> list[Event]:
        if block.started:
            return []
        block.started = True
        block.index = self._next_index
        self._next_index += 1
        content: JSONObject
        if block.kind == "text":
            content = {"type": "text", "text": ""}
        elif block.kind == "tool_use":
            content = {"type": "tool_use", "id": block.call_id, "name": block.name, "input": {}}
        else:
            content = {"type": "thinking", "thinking": "", "signature": ""}
        self._message["content"].append(dict(content))
        if block.kind == "thinking":
            content = {"type": "thinking", "thinking": ""}
        return [{"type": "content_block_start", "index": block.index, "content_block": content}]

    def _stop(self, key: tuple[int, int]) -> list[Event]:
        block = self._blocks.get(key)
        out = self._text_out(key, block, "", final=True) if block is not None and block.kind == "text" else []
        block = self._blocks.pop(key, None)
        self._closed.add(key)
        if block is None or not block.started:
            return out
        if block.kind == "tool_use":
            self._content(block)["input"] = arguments_object("".join(block.streamed))
        return [*out, {"type": "content_block_stop", "index": block.index}]

    def _content(self, block: _Block) -> JSONObject:
        content: JSONObject = self._message["content"][block.index]
        return content

    @staticmethod
    def _delta_event(block: _Block, delta: JSONObject) -> Event:
        return {"type": "content_block_delta", "index": block.index, "delta": delta}


# -- shared --------------------------------------------------------------------------------------------------


def _message_head(response_id: Any, model: str, content: list[JSONObject]) -> JSONObject:
    return {
        "id": public_id("msg_", response_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(ResponsesUsage()),
    }


def _usage(usage: ResponsesUsage) -> JSONObject:
    return {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }


def _stop_reason(response: JSONObject, content: list[JSONObject]) -> StopReason:
    reason = incomplete_reason(response)
    if reason is not None:
        return _STOP_REASONS.get(reason, "end_turn")
    return "tool_use" if any(block["type"] == "tool_use" for block in content) else "end_turn"


def _item_blocks(item: Item, reply: MessagesReply) -> list[JSONObject]:
    kind = item.get("type")
    if kind == "message":
        blocks = []
        for part in item.get("content") or ():
            text = part.get("text", part.get("refusal")) if isinstance(part, dict) else None
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
        return blocks
    if kind == "function_call":
        call_id = tool_use_id(str(item.get("call_id") or "call"))
        input_value = arguments_object(item.get("arguments"))
        return [{"type": "tool_use", "id": call_id, "name": str(item.get("name") or ""), "input": input_value}]
    if kind == "reasoning" and reply.thinking and _summary_text(item):
        return [{"type": "thinking", "thinking": _summary_text(item), "signature": _signature(item)}]
    return []


def _summary_text(item: Item) -> str:
    parts = [item.get("summary") or (), item.get("content") or ()]
    texts = [p["text"] for group in parts for p in group if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n\n".join(text for text in texts if text)


def _signature(item: Item) -> str:
    encrypted = item.get("encrypted_content")
    return encrypted if isinstance(encrypted, str) else ""
