"""Strict readers of the agents' stream formats, for tests: they refuse anything the documented schema does not allow.

:class:`MessagesStreamChecker` reads an Anthropic Messages SSE stream as bytes (in any chunking) and checks it
against the documented event flow::

    message_start, then (content_block_start, content_block_delta*, content_block_stop)* with indexes 0, 1, 2 ...
    and one block open at a time, then message_delta (stop_reason), then message_stop; ping anywhere after
    message_start; or an error event, which ends the stream.

Each event's SSE ``event:`` name must equal its ``type``, each delta must suit its block (``text_delta`` for
``text``, ``input_json_delta`` for ``tool_use`` whose pieces join into a JSON object, ``thinking_delta`` and
``signature_delta`` for ``thinking``), and nothing may follow ``message_stop``. :class:`ChatStreamChecker` does
the same for Chat Completions chunks (``data:`` only, ``chat.completion.chunk`` objects, tool-call deltas by
index, one ``finish_reason``, the usage chunk, ``data: [DONE]`` last). Both return the message they accumulated,
so a test can compare it with the non-streamed answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tether.protocol.sse import SSEDecoder
from tether.types import JSONObject

__all__ = ["ChatStreamChecker", "MessagesStreamChecker", "WireError"]

_STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"})
_BLOCK_DELTAS = {
    "text": frozenset({"text_delta", "citations_delta"}),
    "tool_use": frozenset({"input_json_delta"}),
    "thinking": frozenset({"thinking_delta", "signature_delta"}),
    "redacted_thinking": frozenset(),
}
_MESSAGE_KEYS = frozenset({"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"})
_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


class WireError(AssertionError):
    """The stream breaks its API's documented format."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise WireError(message)


def _obj(value: Any, message: str) -> JSONObject:
    _require(isinstance(value, dict), message)
    result: JSONObject = value
    return result


@dataclass(slots=True)
class _Open:
    index: int
    block: JSONObject
    pieces: list[str] = field(default_factory=list)


class MessagesStreamChecker:
    """Feed it the bytes of a Messages SSE stream; :meth:`close` checks the end and returns the message."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self.events: list[JSONObject] = []
        self.message: JSONObject | None = None
        self.error: JSONObject | None = None
        self._open: _Open | None = None
        self._stopped = False
        self._delta_seen = False

    def feed(self, data: bytes) -> None:
        """Read a chunk of the stream.

        Raises:
            WireError: at the first event that breaks the format.
        """
        for event in self._decoder.decode(data):
            _require(event.data != "[DONE]", "the Messages API sends no [DONE]")
            payload = orjson.loads(event.data)
            _require(isinstance(payload, dict), "every data line is a JSON object")
            _require(event.event == payload.get("type"), f"event name {event.event!r} != type {payload.get('type')!r}")
            self.events.append(payload)
            self._event(payload)

    def close(self) -> JSONObject:
        """Check the stream ended properly and return the accumulated message (or the error event).

        Raises:
            WireError: the stream ended early.
        """
        self._decoder.flush()
        if self.error is not None:
            return self.error
        _require(self._stopped, "the stream ended before message_stop")
        assert self.message is not None
        return self.message

    def _event(self, event: JSONObject) -> None:
        kind = event["type"]
        _require(not self._stopped and self.error is None, f"{kind} after the end of the stream")
        if kind == "error":
            error = _obj(event.get("error"), "error.error is an object")
            _require(isinstance(error.get("type"), str), "error.type is a string")
            _require(isinstance(error.get("message"), str), "error.message is a string")
            self.error = event
            return
        if self.message is None:
            _require(kind == "message_start", f"the first event is message_start, not {kind}")
            message = _obj(event.get("message"), "message_start.message is an object")
            _require(set(message) >= _MESSAGE_KEYS, "message_start has a full message")
            _require(message["type"] == "message" and message["role"] == "assistant", "an assistant message")
            _require(message["content"] == [] and message["stop_reason"] is None, "message_start starts empty")
            _usage(message["usage"], "message_start")
            self.message = {**message, "content": []}
            return
        if kind == "ping":
            return
        _require(kind != "message_start", "message_start twice")
        _require(not self._delta_seen or kind == "message_stop", f"{kind} after message_delta")
        if kind == "content_block_start":
            self._block_start(event)
        elif kind == "content_block_delta":
            self._block_delta(event)
        elif kind == "content_block_stop":
            _require(self._open is not None and event.get("index") == self._open.index, "stop of the open block")
            self._close_block()
        elif kind == "message_delta":
            _require(self._open is None, "message_delta with a block still open")
            delta = _obj(event.get("delta"), "message_delta.delta is an object")
            _require(delta.get("stop_reason") in _STOP_REASONS, "a known stop_reason")
            _require("stop_sequence" in delta, "message_delta.delta.stop_sequence is present")
            _usage(event.get("usage"), "message_delta")
            assert self.message is not None
            self.message.update(stop_reason=delta["stop_reason"], stop_sequence=delta["stop_sequence"])
            self.message["usage"] = {**self.message["usage"], **event["usage"]}
            self._delta_seen = True
        elif kind == "message_stop":
            _require(self._delta_seen, "message_stop without message_delta")
            self._stopped = True
        else:
            raise WireError(f"unknown event type {kind!r}")

    def _block_start(self, event: JSONObject) -> None:
        assert self.message is not None
        _require(self._open is None, "a block starts while another is open")
        _require(event.get("index") == len(self.message["content"]), "block indexes count up from 0")
        block = _obj(event.get("content_block"), "content_block is an object")
        _require(block.get("type") in _BLOCK_DELTAS, "a known content block type")
        if block["type"] == "text":
            _require(block.get("text") == "", "a text block starts empty")
        elif block["type"] == "tool_use":
            _require(isinstance(block.get("id"), str) and bool(block["id"]), "tool_use.id")
            _require(all(c.isalnum() or c in "_-" for c in block["id"]), "tool_use.id matches [A-Za-z0-9_-]+")
            _require(isinstance(block.get("name"), str) and bool(block["name"]), "tool_use.name")
            _require(block.get("input") == {}, "a streamed tool_use starts with input {}")
        elif block["type"] == "thinking":
            _require(block.get("thinking") == "", "a thinking block starts empty")
        self._open = _Open(event["index"], dict(block))

    def _block_delta(self, event: JSONObject) -> None:
        _require(self._open is not None and event.get("index") == self._open.index, "a delta for the open block")
        assert self._open is not None
        delta = _obj(event.get("delta"), "content_block_delta.delta is an object")
        block = self._open.block
        _require(delta.get("type") in _BLOCK_DELTAS[block["type"]], "a delta that fits")
        kind = delta["type"]
        if kind == "text_delta":
            _require(isinstance(delta.get("text"), str), "text_delta.text")
            block["text"] += delta["text"]
        elif kind == "input_json_delta":
            _require(isinstance(delta.get("partial_json"), str), "input_json_delta.partial_json")
            self._open.pieces.append(delta["partial_json"])
        elif kind == "thinking_delta":
            _require(isinstance(delta.get("thinking"), str), "thinking_delta.thinking")
            block["thinking"] += delta["thinking"]
        elif kind == "signature_delta":
            _require(isinstance(delta.get("signature"), str), "signature_delta.signature")
            block["signature"] = delta["signature"]

    def _close_block(self) -> None:
        assert self._open is not None
        assert self.message is not None
        block = self._open.block
        if block["type"] == "tool_use":
            raw = "".join(self._open.pieces)
            value = orjson.loads(raw) if raw else {}
            _require(isinstance(value, dict), "a tool_use input is a JSON object")
            block["input"] = value
        if block["type"] == "thinking":
            _require(isinstance(block.get("signature"), str), "a thinking block gets a signature_delta")
        self.message["content"].append(block)
        self._open = None


def _usage(usage: Any, where: str) -> None:
    usage = _obj(usage, f"{where}.usage is an object")
    _require(isinstance(usage.get("output_tokens"), int), f"{where}.usage.output_tokens is an integer")
    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        _require(usage.get(key) is None or isinstance(usage[key], int), f"{where}.usage.{key} is an integer")


class ChatStreamChecker:
    """Feed it the bytes of a Chat Completions SSE stream; :meth:`close` checks the end and returns the completion.

    Args:
        include_usage: whether the request set ``stream_options.include_usage``.
    """

    def __init__(self, *, include_usage: bool = False) -> None:
        self.include_usage = include_usage
        self._decoder = SSEDecoder()
        self.chunks: list[JSONObject] = []
        self.error: JSONObject | None = None
        self._done = False
        self._finish_reason: str | None = None
        self._usage: JSONObject | None = None
        self._text: list[str] = []
        self._calls: dict[int, JSONObject] = {}
        self._envelope: tuple[Any, ...] | None = None

    def feed(self, data: bytes) -> None:
        """Read a chunk of the stream.

        Raises:
            WireError: at the first frame that breaks the format.
        """
        for event in self._decoder.decode(data):
            _require(not self._done, "nothing follows [DONE]")
            _require(event.event is None, "Chat Completions frames have no event: line")
            if event.data == "[DONE]":
                self._done = True
                continue
            chunk = orjson.loads(event.data)
            _require(isinstance(chunk, dict), "every data line is a JSON object")
            if "error" in chunk:
                self.error = chunk
                continue
            _require(self.error is None, "a chunk after an error")
            self.chunks.append(chunk)
            self._chunk(chunk)

    def close(self) -> JSONObject:
        """Check the stream ended properly and return the accumulated completion (or the error chunk).

        Raises:
            WireError: the stream ended early.
        """
        self._decoder.flush()
        if self.error is not None:
            return self.error
        _require(self._done, "the stream ended before data: [DONE]")
        _require(self._finish_reason is not None, "no chunk carried a finish_reason")
        _require((self._usage is not None) == self.include_usage, "a usage chunk exactly when include_usage")
        calls = [self._calls[index] for index in sorted(self._calls)]
        message: JSONObject = {"role": "assistant", "content": "".join(self._text) or None}
        if calls:
            message["tool_calls"] = calls
        return {"message": message, "finish_reason": self._finish_reason, "usage": self._usage}

    def _chunk(self, chunk: JSONObject) -> None:
        _require(chunk.get("object") == "chat.completion.chunk", "object is chat.completion.chunk")
        envelope = (chunk.get("id"), chunk.get("created"), chunk.get("model"))
        _require(isinstance(envelope[0], str) and isinstance(envelope[1], int), "chunk id and created")
        _require(self._envelope in (None, envelope), "every chunk has the same id, created and model")
        self._envelope = envelope
        _require(self._usage is None, "the usage chunk is the last")
        if self.include_usage:
            _require("usage" in chunk, "with include_usage every chunk has a usage key")
        choices = chunk.get("choices")
        _require(isinstance(choices, list), "choices is an array")
        if not choices:
            _require(self.include_usage and isinstance(chunk.get("usage"), dict), "only the usage chunk is empty")
            _require(self._finish_reason is not None, "the usage chunk follows the finish_reason")
            self._usage = chunk["usage"]
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                _require(isinstance(self._usage.get(key), int), f"usage.{key} is an integer")
            return
        _require(len(choices) == 1 and choices[0].get("index") == 0, "one choice, index 0")
        _require(self._finish_reason is None, "nothing after the finish_reason but the usage chunk")
        choice = choices[0]
        delta = _obj(choice.get("delta"), "choice.delta is an object")
        if isinstance(delta.get("content"), str):
            self._text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            self._call(call)
        reason = choice.get("finish_reason")
        if reason is not None:
            _require(reason in _FINISH_REASONS, f"finish_reason {reason!r} is known")
            self._finish_reason = reason
            for call in self._calls.values():
                arguments = call["function"]["arguments"]
                _require(isinstance(orjson.loads(arguments or "{}"), dict), "tool call arguments are a JSON object")

    def _call(self, call: Any) -> None:
        _require(isinstance(call, dict) and isinstance(call.get("index"), int), "tool_calls[].index")
        index = call["index"]
        function = call.get("function") or {}
        if index not in self._calls:
            _require(index == len(self._calls), "tool call indexes count up from 0")
            _require(isinstance(call.get("id"), str) and call.get("type") == "function", "a new call has id and type")
            _require(isinstance(function.get("name"), str) and bool(function["name"]), "a new call has a name")
            self._calls[index] = {"id": call["id"], "type": "function", "function": {"name": function["name"]}}
            self._calls[index]["function"]["arguments"] = ""
        else:
            _require("id" not in call and "name" not in function, "only the first delta of a call names it")
        if isinstance(function.get("arguments"), str):
            self._calls[index]["function"]["arguments"] += function["arguments"]
