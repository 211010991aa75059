"""Responses API ↔ Anthropic Messages, sans-I/O.

:func:`anthropic_request` turns a turn's whole context into a ``POST /v1/messages`` body;
:class:`AnthropicStreamDecoder` turns the upstream's stream events into model events.

Prompt caching: Anthropic caches the prefix up to each ``cache_control`` breakpoint (at most four). tether marks the
last tool, the last system block, the block where the previous turn's request ended (where that turn wrote the
cache, so this turn reads it exactly) and the last block (written now, read by the next turn). In an agent loop the
whole conversation but the newest round is then read from the cache.

Extended thinking (the request's ``thinking``, and thinking blocks kept as reasoning items that go back verbatim):
see :mod:`tether.providers.anthropic_thinking`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

from tether.protocol.input_items import (
    FunctionCallOutput,
    as_function_call,
    as_function_call_output,
    as_message,
    as_reasoning,
)
from tether.protocol.model_events import (
    Finish,
    ModelEvent,
    ReasoningEnd,
    ReasoningSummaryDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tether.providers.anthropic_thinking import fit_budget, reasoning_fields, thinking_block, thinking_config
from tether.providers.base import ProviderRequest
from tether.providers.translate_chat import (
    DROPPED_ITEM_TYPES,
    TEXT_PART_TYPES,
    content_text,
    expand_items,
    function_tools,
    unsupported,
)
from tether.types import Item, JSONObject

FinishReason = Literal["stop", "max_output_tokens", "content_filter"]

DEFAULT_MAX_TOKENS = 4096
EPHEMERAL: JSONObject = {"type": "ephemeral"}

_DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
_TOOL_ID_INVALID = re.compile(r"[^A-Za-z0-9_-]")
_MODEL_ITEM_TYPES = frozenset({"function_call", "reasoning"})
_THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})  # the API takes no cache_control on them
_STOP_REASONS: dict[str, FinishReason] = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "refusal": "content_filter",
}


def anthropic_request(
    request: ProviderRequest,
    *,
    prompt_caching: bool = True,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    thinking_budget_tokens: int | None = None,
) -> JSONObject:
    """The streaming Messages body for a turn: the whole context, system prompt and tools.

    Args:
        request: the turn.
        prompt_caching: place ``cache_control`` breakpoints.
        default_max_tokens: ``max_tokens`` when the client sets no ``max_output_tokens`` (plus any thinking budget).
        thinking_budget_tokens: extended thinking for turns that do not say (the provider's configuration).

    Raises:
        ProtocolError: an item, content part, tool or reasoning setting the Messages API cannot express.
    """
    system: list[JSONObject] = []
    if request.instructions:
        system.append({"type": "text", "text": request.instructions})
    conversation = _Conversation()
    previous_end = _previous_request_end(request.context, len(request.context) - len(request.new_items))
    previous_end_block: JSONObject | None = None
    for position, item in enumerate(request.context):
        for expanded in expand_items([item]):
            if expanded.get("type", "message") == "message" and expanded.get("role") in ("system", "developer"):
                text = content_text(expanded.get("content"))
                if text:
                    system.append({"type": "text", "text": text})
            else:
                conversation.add_item(expanded)
        if position == previous_end - 1:
            previous_end_block = conversation.last_block()

    body: JSONObject = {
        "model": request.model,
        "max_tokens": request.params.get("max_output_tokens") or default_max_tokens,
        "messages": conversation.messages(),
        "stream": True,
    }
    tools, mode = function_tools(request.tools, request.tool_choice)
    thinking = thinking_config(request.params, None)
    forced = bool(tools) and (mode == "required" or mode.startswith("function:"))
    if thinking is None and not forced:
        thinking = thinking_config(request.params, thinking_budget_tokens)  # the configured default
    if thinking is not None and thinking.get("type") != "disabled":
        if forced:
            raise unsupported(
                "extended thinking (reasoning.effort) cannot be used with a tool_choice that forces a tool on this "
                "upstream; use tool_choice auto or none, or reasoning.effort none",
                "tool_choice",
            )
        body["max_tokens"] = fit_budget(thinking, request.params.get("max_output_tokens"), default_max_tokens)
    if thinking is not None:
        body["thinking"] = thinking
    if system:
        body["system"] = system
    if tools:
        body["tools"] = [_tool(tool) for tool in tools]
        body["tool_choice"] = _tool_choice(mode, request.params.get("parallel_tool_calls") is False)
    for name in ("temperature", "top_p"):
        if request.params.get(name) is not None:
            body[name] = request.params[name]
    if isinstance(body.get("temperature"), int | float) and body["temperature"] > 1:
        # The Responses API takes 0..2, Anthropic 0..1: say so here rather than relay the upstream's refusal.
        raise unsupported(
            "temperature above 1 is not supported by this upstream (Anthropic takes 0 to 1)", "temperature"
        )
    if isinstance(request.params.get("user"), str):
        body["metadata"] = {"user_id": request.params["user"]}
    if prompt_caching:
        breakpoints = [
            body["tools"][-1] if tools else None,
            system[-1] if system else None,
            previous_end_block,
            conversation.last_block(),
        ]
        marked: set[int] = set()
        for block in breakpoints:
            if block is not None and id(block) not in marked and block.get("type") not in _THINKING_BLOCKS:
                marked.add(id(block))
                block["cache_control"] = dict(EPHEMERAL)
    return body


def _previous_request_end(context: Sequence[Item], boundary: int) -> int:
    """Where the previous turn's context ended: before the model output that precedes this turn's new items."""
    end = boundary
    while end > 0 and _is_model_item(context[end - 1]):
        end -= 1
    return end


def _is_model_item(item: Item) -> bool:
    kind = item.get("type", "message")
    return kind in _MODEL_ITEM_TYPES or (kind == "message" and item.get("role") == "assistant")


class _Conversation:
    """Messages with consecutive same-role turns merged, as the Messages API requires."""

    def __init__(self) -> None:
        self._messages: list[JSONObject] = []

    def add_item(self, item: Item) -> None:
        kind = item.get("type", "message")
        if (message := as_message(item)) is not None:
            role = "assistant" if message["role"] == "assistant" else "user"
            self._add(role, _content_blocks(message["content"], role))
        elif (call := as_function_call(item)) is not None:
            block = {"type": "tool_use", "id": tool_id(call["call_id"]), "name": call["name"]}
            self._add("assistant", [{**block, "input": _arguments(call["arguments"])}])
        elif (call_output := as_function_call_output(item)) is not None:
            self._add("user", [_tool_result(call_output)])
        elif (reasoning := as_reasoning(item)) is not None:
            thinking = thinking_block(reasoning)
            if thinking is not None:  # reasoning another upstream sealed means nothing to Anthropic
                self._add("assistant", [thinking])
        elif kind not in DROPPED_ITEM_TYPES:
            raise unsupported(f"input items of type '{kind}' are not supported by this upstream", "input")

    def last_block(self) -> JSONObject | None:
        return self._messages[-1]["content"][-1] if self._messages else None

    def messages(self) -> list[JSONObject]:
        for message in self._messages:
            # Tool results must open a user message; a stable sort keeps everything else in order.
            message["content"].sort(key=lambda block: block.get("type") != "tool_result")
        return self._messages

    def _add(self, role: str, blocks: list[JSONObject]) -> None:
        if not blocks:
            return
        if self._messages and self._messages[-1]["role"] == role:
            self._messages[-1]["content"].extend(blocks)
        else:
            self._messages.append({"role": role, "content": blocks})


def tool_id(call_id: str) -> str:
    """A call id as Anthropic accepts it (``[A-Za-z0-9_-]+``), the same for a call and its result."""
    return _TOOL_ID_INVALID.sub("_", call_id) or "call"


def _arguments(arguments: str) -> JSONObject:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}  # arguments cut short (max_output_tokens): the call is kept, with what can be said of it
    return value if isinstance(value, dict) else {}


def _tool_result(item: FunctionCallOutput) -> JSONObject:
    output = item["output"]
    content: str | list[JSONObject]
    if isinstance(output, list):
        content = [block for part in output if isinstance(part, dict) for block in _part_blocks(part, "user")]
    else:
        content = str(output or "")
    return {"type": "tool_result", "tool_use_id": tool_id(item["call_id"]), "content": content}


def _content_blocks(content: object, role: str) -> list[JSONObject]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return []
    return [block for part in content if isinstance(part, dict) for block in _part_blocks(part, role)]


def _part_blocks(part: JSONObject, role: str) -> list[JSONObject]:
    kind = part.get("type")
    if kind in TEXT_PART_TYPES or kind == "refusal":
        text = part.get("text") if kind != "refusal" else part.get("refusal")
        return [{"type": "text", "text": text}] if isinstance(text, str) and text else []
    if kind == "input_image" and role == "user":
        return [{"type": "image", "source": _source(part.get("image_url"), "input_image", "image_url")}]
    if kind == "input_file" and role == "user":
        url = part.get("file_data") or part.get("file_url")
        return [{"type": "document", "source": _source(url, "input_file", "file_data or file_url")}]
    raise unsupported(f"content parts of type '{kind}' are not supported by this upstream", "input")


def _source(url: object, part: str, field: str) -> JSONObject:
    if not isinstance(url, str):
        raise unsupported(f"{part} parts need {field} (file_id is not supported by this upstream)", "input")
    match = _DATA_URL.fullmatch(url)
    if match is not None:
        return {"type": "base64", "media_type": match["media"], "data": match["data"]}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise unsupported(f"{part} {field} must be an http(s) URL or a base64 data URL", "input")


def _tool(tool: JSONObject) -> JSONObject:
    converted: JSONObject = {"name": tool["name"]}
    if tool.get("description"):
        converted["description"] = tool["description"]
    converted["input_schema"] = tool.get("parameters") or {"type": "object", "properties": {}}
    return converted


def _tool_choice(mode: str, sequential: bool) -> JSONObject:
    if mode == "none":
        return {"type": "none"}
    choice: JSONObject
    if mode.startswith("function:"):
        choice = {"type": "tool", "name": mode.removeprefix("function:")}
    else:
        choice = {"type": "any" if mode == "required" else "auto"}
    if sequential:
        choice["disable_parallel_tool_use"] = True
    return choice


# -- stream --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ToolBlock:
    call_id: str
    name: str
    start_input: JSONObject
    sent_arguments: bool = False


class AnthropicStreamDecoder:
    """Messages stream events (``message_start`` ... ``message_stop``) in, model events out.

    Content blocks arrive one after another, never interleaved, so deltas go out as they come. An ``error`` event
    is the caller's to raise.
    """

    def __init__(self) -> None:
        self._tools: dict[int, _ToolBlock] = {}
        self._thinking: dict[int, JSONObject] = {}  # thinking blocks open, signature (or data) as it streams
        self._usage: JSONObject = {}
        self._stop_reason: FinishReason = "stop"
        self.finished = False

    def feed(self, event: JSONObject) -> list[ModelEvent]:
        """The model events one stream event (its JSON data) means."""
        kind = event.get("type")
        if kind == "message_start":
            self._usage.update(_numbers(event.get("message", {}).get("usage")))
        elif kind == "content_block_start":
            return self._block_start(event.get("index", 0), event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._block_delta(event.get("index", 0), event.get("delta") or {})
        elif kind == "content_block_stop":
            return self._block_stop(event.get("index", 0))
        elif kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if isinstance(reason, str):
                self._stop_reason = _STOP_REASONS.get(reason, "stop")
            self._usage.update(_numbers(event.get("usage")))
        elif kind == "message_stop":
            self.finished = True
        return []

    def close(self) -> list[ModelEvent]:
        """The one ``Finish``, with the usage the stream reported."""
        return [Finish(usage=anthropic_usage(self._usage), reason=self._stop_reason)]

    def _block_start(self, index: int, block: JSONObject) -> list[ModelEvent]:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        if kind in _THINKING_BLOCKS:
            self._thinking[index] = dict(block)
            text = block.get("thinking")
            return [ReasoningSummaryDelta(text)] if isinstance(text, str) and text else []
        if kind == "tool_use":
            start_input = block.get("input")
            tool = _ToolBlock(str(block.get("id")), str(block.get("name")), start_input or {})
            self._tools[index] = tool
            return [ToolCallDelta(call_id=tool.call_id, name=tool.name, arguments="")]
        return []

    def _block_delta(self, index: int, delta: JSONObject) -> list[ModelEvent]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [TextDelta(delta["text"])]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [ReasoningSummaryDelta(delta["thinking"])]
        thinking = self._thinking.get(index)
        if kind == "signature_delta" and thinking is not None:
            thinking["signature"] = str(thinking.get("signature") or "") + str(delta.get("signature") or "")
            return []
        tool = self._tools.get(index)
        if kind == "input_json_delta" and tool is not None and delta.get("partial_json"):
            tool.sent_arguments = True
            return [ToolCallDelta(call_id=tool.call_id, name=tool.name, arguments=delta["partial_json"])]
        return []

    def _block_stop(self, index: int) -> list[ModelEvent]:
        thinking = self._thinking.pop(index, None)
        if thinking is not None:
            return [ReasoningEnd(reasoning_fields(thinking))]
        tool = self._tools.pop(index, None)
        if tool is None or tool.sent_arguments:
            return []
        arguments = orjson.dumps(tool.start_input).decode()
        return [ToolCallDelta(call_id=tool.call_id, name=tool.name, arguments=arguments)]


def anthropic_usage(usage: JSONObject) -> Usage:
    """Anthropic usage as model-event usage: its ``input_tokens`` excludes cache reads and writes, ours includes."""
    read = usage.get("cache_read_input_tokens", 0)
    write = usage.get("cache_creation_input_tokens", 0)
    return Usage(
        input_tokens=usage.get("input_tokens", 0) + read + write,
        output_tokens=usage.get("output_tokens", 0),
        cached_tokens=read,
        cache_write_tokens=write,
    )


def _numbers(usage: object) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    return {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}
