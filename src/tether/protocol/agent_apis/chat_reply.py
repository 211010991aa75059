"""tether's Responses answer as a Chat Completions answer: the ``chat.completion`` body and its chunk stream.

:class:`ChatStreamEncoder` takes a response's Responses events in order and returns ``chat.completion.chunk``
objects: a first chunk with ``{"role": "assistant", "content": ""}``, one chunk per text (``content``) or
``refusal`` delta, tool calls as ``tool_calls`` deltas (the first for a call carries ``index``, ``id``, ``type``
and ``function.name`` with empty ``arguments``, later ones ``index`` and an ``arguments`` piece), a chunk with
an empty delta and the ``finish_reason``, and with ``stream_options.include_usage`` a last chunk with empty
``choices`` and the ``usage`` (every chunk before it carries ``"usage": null``). Frame each with
:func:`encode_chat_chunk` and end the stream with :data:`CHAT_DONE` (``data: [DONE]``).

``finish_reason``: ``tool_calls`` when the answer calls a tool, ``length`` for a response incomplete at
``max_output_tokens``, ``content_filter``, else ``stop``. Reasoning is not sent (the Chat Completions API has no
field for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from tether.protocol.agent_apis.chat_request import ChatReply
from tether.protocol.agent_apis.common import (
    ResponsesUsage,
    StopScanner,
    count,
    cut_at_stop,
    failed_error,
    incomplete_reason,
    public_id,
)
from tether.protocol.agent_apis.reply_stream import ReplyStream
from tether.protocol.errors import ErrorType, ProtocolError
from tether.protocol.sse import encode_done
from tether.types import Item, JSONObject

__all__ = ["CHAT_DONE", "ChatStreamEncoder", "chat_completion", "chat_error", "chat_failure", "encode_chat_chunk"]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]

CHAT_DONE: Final = encode_done()
"""The ``data: [DONE]`` frame that ends every Chat Completions stream."""

_FINISH_REASONS: dict[str, FinishReason] = {"max_output_tokens": "length", "content_filter": "content_filter"}


def encode_chat_chunk(chunk: JSONObject) -> bytes:
    """One Chat Completions SSE frame: ``data: <json>`` (no ``event:`` line)."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def chat_error(error: ProtocolError) -> JSONObject:
    """A protocol error in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return error.http_body()


def chat_failure(response: JSONObject) -> tuple[int, JSONObject]:
    """The HTTP status and error body for a ``failed`` Responses response object (429 for a rate limit, else 500)."""
    code, message = failed_error(response)
    status = 429 if code == "rate_limit_exceeded" else 500
    kind = ErrorType.RATE_LIMIT if status == 429 else ErrorType.SERVER
    return status, ProtocolError(status, code, message, error_type=kind).http_body()


def chat_completion(response: JSONObject, reply: ChatReply) -> JSONObject:
    """The non-streamed ``chat.completion`` body for a finished Responses response object.

    Args:
        response: the response object (``completed`` or ``incomplete``; for a ``failed`` one answer
            :func:`chat_failure`).
        reply: from the request's translation.
    """
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[JSONObject] = []
    hit: str | None = None
    for item in response.get("output") or ():
        if not isinstance(item, dict) or hit is not None:
            continue
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if hit is None and isinstance(part, dict) and isinstance(part.get("text"), str):
                    text, hit = cut_at_stop(part["text"], reply.stop)
                    texts.append(text)
                elif hit is None and isinstance(part, dict) and isinstance(part.get("refusal"), str):
                    refusals.append(part["refusal"])
        elif item.get("type") == "function_call":
            calls.append(_call(item, str(item.get("arguments") or "")))
    message = _message("".join(texts) or None, "".join(refusals) or None, calls)
    finish_reason = "stop" if hit is not None else _finish_reason(response, bool(calls))
    return {
        **_envelope(response, reply, "chat.completion"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": _usage(ResponsesUsage.of(response.get("usage"))),
    }


@dataclass(slots=True)
class _Call:
    index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class ChatStreamEncoder(ReplyStream):
    """Responses events in, ``chat.completion.chunk`` objects out (sans-I/O; frame with :func:`encode_chat_chunk`).

    Feed every event of one response exactly once, in order (across a resume too: keep the same encoder). After
    the terminal event :attr:`finished` is true, later events are ignored, and the caller sends :data:`CHAT_DONE`.
    A ``stop`` sequence of the request ends the text where it starts (``finish_reason`` ``stop``): nothing more of
    the answer is sent.

    Args:
        reply: from the request's translation.
    """

    def __init__(self, reply: ChatReply) -> None:
        super().__init__()
        self.reply = reply
        self._envelope: JSONObject = {}
        self._calls: dict[int, _Call] = {}
        self._texts: dict[tuple[int, int], list[str]] = {}
        self._scanners: dict[tuple[int, int], StopScanner] = {}
        self._said: list[str] = []
        self._refusals: list[str] = []
        self._completion: JSONObject = {}

    @property
    def completion(self) -> JSONObject:
        """The ``chat.completion`` body accumulated from the stream (complete once :attr:`finished`)."""
        return self._completion

    def _translate(self, kind: Any, event: JSONObject, output_index: Any) -> list[JSONObject]:
        out: list[JSONObject] = []
        key = (output_index, event.get("content_index", 0))
        if kind == "response.output_text.delta":
            out += self._text(key, event.get("delta"))
        elif kind in ("response.output_text.done", "response.content_part.done"):
            whole = (event.get("part") or {}).get("text") if kind.endswith("part.done") else event.get("text")
            out += self._text(key, _remainder("".join(self._texts.get(key, ())), whole))
            out += self._say(key, self._scanner(key).flush())
        elif kind == "response.refusal.delta" and isinstance(event.get("delta"), str) and event["delta"]:
            self._refusals.append(event["delta"])
            out.append(self._chunk({"refusal": event["delta"]}))
        elif kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
            out += self._call_added(output_index, event["item"])
        elif kind == "response.function_call_arguments.delta":
            out += self._arguments(output_index, event.get("delta"))
        elif kind == "response.function_call_arguments.done":
            out += self._arguments_done(output_index, event.get("arguments"))
        elif kind == "response.output_item.done" and (event.get("item") or {}).get("type") == "function_call":
            out += self._arguments_done(output_index, event["item"].get("arguments"))
        return out

    def _start(self, response: Any) -> list[JSONObject]:
        self._envelope = _envelope(response if isinstance(response, dict) else {}, self.reply, "chat.completion.chunk")
        return [self._chunk({"role": "assistant", "content": "", "refusal": None})]

    def _text(self, key: tuple[int, int], delta: Any) -> list[JSONObject]:
        if not isinstance(delta, str) or not delta:
            return []
        self._texts.setdefault(key, []).append(delta)
        scanner = self._scanner(key)
        out = self._say(key, scanner.feed(delta))
        self._stop_hit = scanner.hit
        return out

    def _scanner(self, key: tuple[int, int]) -> StopScanner:
        if key not in self._scanners:
            self._scanners[key] = StopScanner(self.reply.stop)
        return self._scanners[key]

    def _say(self, key: tuple[int, int], text: str) -> list[JSONObject]:
        if not text:
            return []
        self._said.append(text)
        return [self._chunk({"content": text})]

    def _call_added(self, output_index: int, item: Item) -> list[JSONObject]:
        call = _Call(len(self._calls), str(item.get("call_id") or ""), str(item.get("name") or ""))
        self._calls[output_index] = call
        opening = {"index": call.index, "id": call.call_id, "type": "function"}
        return [self._chunk({"tool_calls": [{**opening, "function": {"name": call.name, "arguments": ""}}]})]

    def _arguments(self, output_index: int, delta: Any) -> list[JSONObject]:
        call = self._calls.get(output_index)
        if call is None or not isinstance(delta, str) or not delta:
            return []
        call.arguments.append(delta)
        return [self._chunk({"tool_calls": [{"index": call.index, "function": {"arguments": delta}}]})]

    def _arguments_done(self, output_index: int, arguments: Any) -> list[JSONObject]:
        call = self._calls.get(output_index)
        if call is None:
            return []
        return self._arguments(output_index, _remainder("".join(call.arguments), arguments))

    def _finish(self, response: JSONObject) -> list[JSONObject]:
        self.finished = True
        held = [chunk for key, scanner in self._scanners.items() for chunk in self._say(key, scanner.flush())]
        finish_reason = "stop" if self._stop_hit is not None else _finish_reason(response, bool(self._calls))
        usage = _usage(ResponsesUsage.of(response.get("usage")))
        out = [*held, self._chunk({}, finish_reason)]
        if self.reply.include_usage:
            out.append({**self._envelope, "choices": [], "usage": usage})
        calls = [_call_of(call) for call in self._calls.values()]
        text = "".join(self._said)
        message = _message(text or None, "".join(self._refusals) or None, calls)
        self._completion = {
            **_envelope(response, self.reply, "chat.completion"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage,
        }
        return out

    def _error(self, code: str, message: str) -> list[JSONObject]:
        self.finished = True
        kind = ErrorType.RATE_LIMIT if code == "rate_limit_exceeded" else ErrorType.SERVER
        return [ProtocolError(500, code, message, error_type=kind).http_body()]

    def _chunk(self, delta: JSONObject, finish_reason: FinishReason | None = None) -> JSONObject:
        chunk: JSONObject = {
            **self._envelope,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.reply.include_usage:
            chunk["usage"] = None
        return chunk


def _remainder(sent: str, whole: Any) -> str:
    if not isinstance(whole, str) or not whole.startswith(sent):
        return ""
    return whole[len(sent) :]


def _envelope(response: JSONObject, reply: ChatReply, obj: str) -> JSONObject:
    return {
        "id": public_id("chatcmpl-", response.get("id")),
        "object": obj,
        "created": count(response.get("created_at")),
        "model": reply.model,
        "system_fingerprint": None,
    }


def _message(content: str | None, refusal: str | None, calls: list[JSONObject]) -> JSONObject:
    message: JSONObject = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
    if calls:
        message["tool_calls"] = calls
    return message


def _call(item: Item, arguments: str) -> JSONObject:
    function = {"name": str(item.get("name") or ""), "arguments": arguments}
    return {"id": str(item.get("call_id") or ""), "type": "function", "function": function}


def _call_of(call: _Call) -> JSONObject:
    return _call({"call_id": call.call_id, "name": call.name}, "".join(call.arguments))


def _finish_reason(response: JSONObject, calls: bool) -> FinishReason:
    reason = incomplete_reason(response)
    if reason is not None:
        return _FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if calls else "stop"


def _usage(usage: ResponsesUsage) -> JSONObject:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
