"""Responses API ↔ Chat Completions, sans-I/O.

:func:`chat_request` turns a turn's whole context into a ``POST /chat/completions`` body (the upstream is stateless:
it gets everything, every turn). :class:`ChatStreamDecoder` turns the upstream's ``chat.completion.chunk`` objects
into model events. The item helpers at the top are shared with the Anthropic translation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import orjson

from tether.protocol import ids
from tether.protocol.compaction import expand_compaction
from tether.protocol.errors import ProtocolError
from tether.protocol.input_items import (
    FunctionCallOutput,
    InputMessage,
    as_compaction,
    as_function_call,
    as_function_call_output,
    as_message,
)
from tether.protocol.model_events import Finish, ModelEvent, ReasoningSummaryDelta, TextDelta, ToolCallDelta, Usage
from tether.providers.base import ProviderRequest
from tether.types import Item, JSONObject

FinishReason = Literal["stop", "max_output_tokens", "content_filter"]

TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text", "summary_text"})
# Items a stateless upstream cannot use: its own reasoning is not portable, references need a store.
DROPPED_ITEM_TYPES = frozenset({"reasoning", "item_reference"})
_FINISH_REASONS: dict[str, FinishReason] = {"length": "max_output_tokens", "content_filter": "content_filter"}


# -- shared item helpers -------------------------------------------------------------------------------------


def expand_items(items: Iterable[Item]) -> Iterator[Item]:
    """The items, with tether's ``compaction`` items replaced by the items they hold (recursively).

    Raises:
        ProtocolError: an opaque compaction item made by another producer (a stateless upstream cannot read it).
    """
    for item in items:
        if item.get("type") != "compaction":
            yield item
            continue
        window = as_compaction(item)
        inner = expand_compaction(window) if window is not None else None
        if inner is None:
            raise unsupported("a compaction item that tether did not make cannot be sent to this upstream")
        yield from expand_items(inner)


def content_text(content: object) -> str:
    """The text of a string or of a list of content parts (non-text parts are skipped)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        part["text"]
        for part in content
        if isinstance(part, dict) and part.get("type") in TEXT_PART_TYPES and isinstance(part.get("text"), str)
    )


def function_tools(tools: Iterable[JSONObject], tool_choice: str | JSONObject) -> tuple[list[JSONObject], str]:
    """The function tools a request offers and the tool-choice mode that applies to them.

    ``allowed_tools`` narrows the list to the tools it names and gives its mode.

    Returns:
        ``(tools, mode)`` where mode is ``auto``, ``none``, ``required`` or ``function:<name>``.

    Raises:
        ProtocolError: a tool type other than ``function``.
    """
    functions: list[JSONObject] = []
    for tool in tools:
        if tool.get("type") != "function":
            raise unsupported(f"tools of type '{tool.get('type')}' are not supported by this upstream", "tools")
        functions.append(tool)
    if isinstance(tool_choice, str):
        return functions, tool_choice
    kind = tool_choice.get("type")
    if kind == "function":
        return functions, f"function:{tool_choice.get('name')}"
    if kind == "allowed_tools":
        allowed = {t.get("name") for t in tool_choice.get("tools", []) if isinstance(t, dict)}
        return [t for t in functions if t.get("name") in allowed], str(tool_choice.get("mode", "auto"))
    raise unsupported(f"tool_choice of type '{kind}' is not supported by this upstream", "tool_choice")


def unsupported(message: str, param: str | None = None) -> ProtocolError:
    return ProtocolError(400, "unsupported_value", message[0].upper() + message[1:] + ".", param=param)


def output_text(item: FunctionCallOutput) -> str:
    """A ``function_call_output``'s output as text."""
    output = item["output"]
    return output if isinstance(output, str) else content_text(output)


# -- request -------------------------------------------------------------------------------------------------


def chat_request(request: ProviderRequest) -> JSONObject:
    """The streaming Chat Completions body for a turn: the whole context as messages, plus the tools.

    Raises:
        ProtocolError: an item, content part or tool the Chat Completions API cannot express.
    """
    messages: list[JSONObject] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    for item in expand_items(request.context):
        _append_item(messages, item)
    body: JSONObject = {
        "model": request.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tools, mode = function_tools(request.tools, request.tool_choice)
    if tools:
        body["tools"] = [_chat_tool(tool) for tool in tools]
        body["tool_choice"] = (
            {"type": "function", "function": {"name": mode.removeprefix("function:")}}
            if mode.startswith("function:")
            else mode
        )
        if request.params.get("parallel_tool_calls") is False:
            body["parallel_tool_calls"] = False
    body.update(_sampling_params(request.params))
    return body


def _append_item(messages: list[JSONObject], item: Item) -> None:
    kind = item.get("type", "message")
    if (message := as_message(item)) is not None:
        messages.append(_message(message))
    elif (function_call := as_function_call(item)) is not None:
        call = {
            "id": function_call["call_id"],
            "type": "function",
            "function": {"name": function_call["name"], "arguments": function_call["arguments"] or "{}"},
        }
        last = messages[-1] if messages else None
        # Parallel calls, and the text the model said before them, are one assistant message.
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif (call_output := as_function_call_output(item)) is not None:
        messages.append({"role": "tool", "tool_call_id": call_output["call_id"], "content": output_text(call_output)})
        output = call_output["output"]
        # Only a list of parts can hold images (iterating a string output would walk its characters).
        images = [_part(part) for part in output if _is_image(part)] if isinstance(output, list) else []
        if images:
            # Tool messages carry text only; images a tool returned follow as a user message.
            messages.append({"role": "user", "content": images})
    elif kind not in DROPPED_ITEM_TYPES:
        raise unsupported(f"input items of type '{kind}' are not supported by this upstream", "input")


def _message(item: InputMessage) -> JSONObject:
    role = item["role"]
    content = item["content"]
    if role in ("system", "developer"):
        return {"role": "system", "content": content_text(content)}
    if role == "assistant":
        return {"role": "assistant", "content": content_text(content)}
    if not isinstance(content, list) or all(_is_text(part) for part in content):
        return {"role": "user", "content": content_text(content)}
    return {"role": "user", "content": [_part(part) for part in content]}


def _is_text(part: object) -> bool:
    return isinstance(part, dict) and part.get("type") in TEXT_PART_TYPES


def _is_image(part: object) -> bool:
    return isinstance(part, dict) and part.get("type") == "input_image"


def _part(part: JSONObject) -> JSONObject:
    kind = part.get("type")
    if kind in TEXT_PART_TYPES:
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise unsupported("input_image parts need an image_url (file_id is not supported by this upstream)")
        image: JSONObject = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        file: JSONObject = {"file_data": part["file_data"]}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise unsupported(f"content parts of type '{kind}' are not supported by this upstream", "input")


def _chat_tool(tool: JSONObject) -> JSONObject:
    function: JSONObject = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _sampling_params(params: JSONObject) -> JSONObject:
    body: JSONObject = {}
    for name in ("temperature", "top_p", "user"):
        if params.get(name) is not None:
            body[name] = params[name]
    if params.get("max_output_tokens") is not None:
        body["max_tokens"] = params["max_output_tokens"]
    reasoning = params.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") not in (None, "none"):
        body["reasoning_effort"] = reasoning["effort"]
    text_format = params.get("text", {}).get("format") if isinstance(params.get("text"), dict) else None
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        schema = {key: text_format[key] for key in ("name", "schema", "strict", "description") if key in text_format}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(text_format, dict) and text_format.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    return body


# -- stream --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    call_id: str
    name: str
    pieces: list[str] = field(default_factory=list)
    emitted: int = 0  # how many of ``pieces`` went out
    opened: bool = False
    closed: bool = False

    def drain(self) -> list[ModelEvent]:
        """The deltas not sent yet (the first one opens the call, even with no arguments so far)."""
        if not self.name:
            return []  # a call cannot open before its name is known
        pending = self.pieces[self.emitted :]
        self.emitted = len(self.pieces)
        if not self.opened:
            self.opened = True
            pending = pending or [""]
        return [ToolCallDelta(call_id=self.call_id, name=self.name, arguments=piece) for piece in pending]

    def close(self) -> list[ModelEvent]:
        if not self.name:
            raise ProtocolError(502, "upstream_error", "The upstream sent a tool call without a name.")
        events = self.drain()
        if not "".join(self.pieces).strip():
            events.append(ToolCallDelta(call_id=self.call_id, name=self.name, arguments="{}"))
        self.closed = True
        return events


class ChatStreamDecoder:
    """Chat Completions chunks in, model events out.

    Parallel tool calls arrive keyed by ``index`` and may interleave; model events are sequential per item, so
    the first open call streams live and the others are held until it is complete (its arguments parse as JSON
    and a later call has begun) or the stream ends. Text after tool calls began is held until the calls are out.

    Args:
        new_call_id: makes a call id when the upstream sends none (some servers omit it).
    """

    def __init__(self, new_call_id: Callable[[], str] = ids.call_id) -> None:
        self._new_call_id = new_call_id
        self._calls: dict[int, _Call] = {}
        self._held: list[ModelEvent] = []
        self._finish_reason: FinishReason | None = None
        self._usage = Usage(input_tokens=0, output_tokens=0)

    @property
    def finished(self) -> bool:
        """Whether a choice carried a ``finish_reason`` (a stream may end after it with usage and ``[DONE]``)."""
        return self._finish_reason is not None

    def feed(self, chunk: JSONObject) -> list[ModelEvent]:
        """The events one ``chat.completion.chunk`` completes (an ``error`` chunk is the caller's to raise)."""
        events: list[ModelEvent] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = chat_usage(usage)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                events += self._say(ReasoningSummaryDelta(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                events += self._say(TextDelta(content))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._call_delta(call)
            events += self._advance()
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self._finish_reason = _FINISH_REASONS.get(reason, "stop")
        return events

    def close(self) -> list[ModelEvent]:
        """End of stream: every held delta, in order, then the one ``Finish``."""
        events: list[ModelEvent] = []
        for call in self._calls.values():
            if not call.closed:
                events += call.close()
        events += self._held
        self._held = []
        events.append(Finish(usage=self._usage, reason=self._finish_reason or "stop"))
        return events

    def _say(self, event: ModelEvent) -> list[ModelEvent]:
        if self._calls:
            self._held.append(event)
            return []
        return [event]

    def _call_delta(self, delta: JSONObject) -> None:
        index = delta.get("index")
        if not isinstance(index, int):
            index = max(self._calls, default=0)
        function = delta.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call(call_id=delta.get("id") or self._new_call_id(), name="")
        if not call.name and isinstance(function.get("name"), str):
            call.name = function["name"]
        piece = function.get("arguments")
        if not isinstance(piece, str) or not piece:
            return
        if call.closed:
            if piece.strip():
                raise ProtocolError(
                    502, "upstream_error", "The upstream sent more arguments for a tool call it had finished."
                )
            return
        call.pieces.append(piece)

    def _advance(self) -> list[ModelEvent]:
        """Stream the first open call; close it once it is complete and a later call has begun."""
        events: list[ModelEvent] = []
        calls = list(self._calls.values())
        for position, call in enumerate(calls):
            if call.closed:
                continue
            events += call.drain()
            if position + 1 < len(calls) and call.name and _is_json("".join(call.pieces)):
                events += call.close()
                continue
            break
        return events


def chat_usage(usage: JSONObject) -> Usage:
    """Chat Completions usage (``prompt_tokens``, ``completion_tokens`` and their details) as model-event usage."""
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=prompt,
        output_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=min(prompt, _int(details.get("cached_tokens"))),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
