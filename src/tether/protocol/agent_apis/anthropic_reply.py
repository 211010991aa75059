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

from tether.protocol.agent_apis.anthropic_body import (
    PING,
    STOP_REASONS,
    STREAM_ERROR_TYPES,
    StopReason,
    message_head,
    signature,
    summary_text,
    usage_of,
)
from tether.protocol.agent_apis.anthropic_request import MessagesReply
from tether.protocol.agent_apis.common import (
    ResponsesUsage,
    StopScanner,
    arguments_object,
    incomplete_reason,
    tool_use_id,
)
from tether.protocol.agent_apis.reply_stream import ReplyStream
from tether.types import Item, JSONObject

__all__ = ["MessagesStreamEncoder"]

BlockKind = Literal["text", "tool_use", "thinking"]


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


class MessagesStreamEncoder(ReplyStream):
    """Responses events in, Messages stream events out (sans-I/O; encode each with :func:`encode_messages_event`).

    Feed every event of one response exactly once, in order (across a resume too: keep the same encoder).
    After the terminal event :attr:`finished` is true and later events are ignored. A stop sequence of the request
    ends the text where it starts: nothing more of the answer is sent, and ``stop_reason`` is ``stop_sequence``.

    Args:
        reply: from the request's translation (model name, thinking, the prompt estimate).
    """

    def __init__(self, reply: MessagesReply) -> None:
        super().__init__()
        self.reply = reply
        self._message: JSONObject = message_head(None, reply.model, [])
        self._blocks: dict[tuple[int, int], _Block] = {}
        self._closed: set[tuple[int, int]] = set()
        self._next_index = 0
        self._calls_tool = False

    @property
    def message(self) -> JSONObject:
        """The Messages body accumulated so far (complete once :attr:`finished`), as the non-streamed answer."""
        return self._message

    def _translate(self, kind: Any, event: JSONObject, output_index: Any) -> list[JSONObject]:
        out: list[JSONObject] = []
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

    def _start(self, response: Any) -> list[JSONObject]:
        response_id = response.get("id") if isinstance(response, dict) else None
        self._message = message_head(response_id, self.reply.model, [])
        usage = {**usage_of(ResponsesUsage()), "input_tokens": self.reply.input_tokens}
        start = {**self._message, "content": [], "stop_reason": None, "usage": usage}
        return [{"type": "message_start", "message": start}, dict(PING)]

    def _finish(self, response: JSONObject) -> list[JSONObject]:
        out: list[JSONObject] = []
        for key in list(self._blocks):
            out += self._stop(key)
        self.finished = True
        stop_reason: StopReason = "tool_use" if self._calls_tool else "end_turn"
        reason = incomplete_reason(response)
        if reason is not None:
            stop_reason = STOP_REASONS.get(reason, "end_turn")
        if self._stop_hit is not None:
            stop_reason = "stop_sequence"
        usage = usage_of(ResponsesUsage.of(response.get("usage")))
        self._message.update(stop_reason=stop_reason, stop_sequence=self._stop_hit, usage=usage)
        stop = {"stop_reason": stop_reason, "stop_sequence": self._stop_hit}
        delta = {"type": "message_delta", "delta": stop, "usage": usage}
        return [*out, delta, {"type": "message_stop"}]

    def _error(self, code: str, message: str) -> list[JSONObject]:
        self.finished = True
        kind = STREAM_ERROR_TYPES.get(code, "api_error")
        return [{"type": "error", "error": {"type": kind, "message": message}}]

    # -- blocks --------------------------------------------------------------------------------------------

    def _item_added(self, output_index: int, item: Item) -> list[JSONObject]:
        kind = item.get("type")
        if kind == "function_call":
            block = self._block((output_index, -1), "tool_use")
            block.call_id, block.name = tool_use_id(str(item.get("call_id") or "call")), str(item.get("name") or "")
            self._calls_tool = True
            return self._open(block)
        if kind == "reasoning" and self.reply.thinking:
            self._block((output_index, -1), "thinking")
        return []

    def _item_done(self, output_index: int, item: Item) -> list[JSONObject]:
        kind = item.get("type")
        out: list[JSONObject] = []
        if kind == "function_call":
            out += self._catch_up((output_index, -1), item.get("arguments"))
        elif kind == "reasoning" and (output_index, -1) in self._blocks:
            block = self._blocks[(output_index, -1)]
            if not block.started and summary_text(item):
                out += self._thinking(output_index, 0, summary_text(item))
            if block.started:
                signed = {"type": "signature_delta", "signature": signature(item)}
                out.append(self._delta_event(block, signed))
                self._content(block)["signature"] = signed["signature"]
        elif kind == "message":
            for content_index, part in enumerate(item.get("content") or ()):
                if isinstance(part, dict):
                    out += self._text_done(output_index, content_index, part.get("text", part.get("refusal")))
        for key in [key for key in self._blocks if key[0] == output_index]:
            out += self._stop(key)
        return out

    def _text(self, output_index: int, content_index: int, delta: Any) -> list[JSONObject]:
        return self._delta((output_index, content_index), delta, create="text")

    def _text_done(self, output_index: int, content_index: int, text: Any) -> list[JSONObject]:
        return self._catch_up((output_index, content_index), text, create="text")

    def _thinking(self, output_index: int, summary_index: int, delta: Any) -> list[JSONObject]:
        block = self._blocks.get((output_index, -1))
        if block is None or not isinstance(delta, str) or not delta:
            return []
        if summary_index != block.summary_index:
            block.summary_index = summary_index
            if block.streamed:
                delta = "\n\n" + delta
        return self._delta((output_index, -1), delta)

    def _delta(self, key: tuple[int, int], delta: Any, create: BlockKind | None = None) -> list[JSONObject]:
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

    def _text_out(self, key: tuple[int, int], block: _Block, delta: str, *, final: bool = False) -> list[JSONObject]:
        """Send text as far as the stop sequences allow; a hit ends the block and the answer."""
        if block.scanner is None:
            block.scanner = StopScanner(self.reply.stop_sequences)
        text = block.scanner.flush() if final else block.scanner.feed(delta)
        out: list[JSONObject] = []
        if text:
            out += self._open(block)
            out.append(self._delta_event(block, {"type": "text_delta", "text": text}))
            self._content(block)["text"] += text
        if block.scanner.hit is not None and not final:
            self._stop_hit = block.scanner.hit
            out += self._stop(key)
        return out

    def _catch_up(self, key: tuple[int, int], whole: Any, create: BlockKind | None = None) -> list[JSONObject]:
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

    def _open(self, block: _Block) -> list[JSONObject]:
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

    def _stop(self, key: tuple[int, int]) -> list[JSONObject]:
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
    def _delta_event(block: _Block, delta: JSONObject) -> JSONObject:
        return {"type": "content_block_delta", "index": block.index, "delta": delta}
