"""An Anthropic Messages request (``POST /v1/messages``) as a Responses request for tether's engine.

This is the direction for an upstream that does not speak Messages (the built-in scripted model, a Chat
Completions server, an OpenAI Responses upstream). When the routed upstream speaks Messages, the request is
forwarded untouched instead (see :class:`tether.providers.raw.RawForwarding`), and none of this runs.

What maps to what:

* ``system`` (a string or text blocks) → ``instructions``; a ``"role": "system"`` message inside ``messages``
  (Claude Code sends one) → a ``system`` message item where it stands.
* each message becomes Responses items in block order: runs of text, image and document blocks → one ``message``
  item; ``tool_use`` → ``function_call`` (``call_id`` = the ``tool_use`` id); ``tool_result`` →
  ``function_call_output``; ``thinking`` → ``reasoning`` with the thinking as its summary. Consecutive
  messages of one role stay separate items, which Responses allows.
* ``tools`` → function tools; ``tool_choice`` → ``tool_choice`` and ``parallel_tool_calls``; ``max_tokens`` →
  ``max_output_tokens``; ``temperature``, ``top_p``, ``stream`` as they are; ``metadata.user_id`` → ``user``;
  ``thinking`` → ``reasoning``.
* dropped, having no meaning for another model: thinking signatures and ``redacted_thinking`` blocks (they are
  Anthropic's own encryption; another upstream would refuse them as ``encrypted_content``), ``cache_control``
  (tether's engine holds the context anyway), ``top_k``, ``service_tier``, citations settings, a
  ``tool_result``'s ``is_error``.
* ``stop_sequences`` are not sent to the engine (Responses has no such field); they travel in
  :class:`MessagesReply`, and the reply ends the text where the first one starts (``stop_reason``
  ``stop_sequence``, ``stop_sequence`` set), as the API would. The engine's own record keeps the whole answer.

Anything the engine cannot express (server tools such as ``web_search_20250305``, search-result blocks) is a 400
``unsupported_value`` naming the field, never a silent change of meaning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard

from tether.protocol.agent_apis.anthropic_blocks import function_call, function_call_output, media_part, reasoning_item
from tether.protocol.agent_apis.common import bad_request, json_text, unsupported
from tether.protocol.items import estimate_tokens, fingerprint
from tether.types import Item, JSONObject

__all__ = ["MessagesReply", "MessagesTranslation", "count_message_tokens", "translate_messages_request"]

_ROLES = frozenset({"user", "assistant", "system"})
_CLIENT_TOOL_TYPES = frozenset({"custom"})
_THINKING_EFFORT = ((4096, "low"), (16384, "medium"))


@dataclass(frozen=True, slots=True)
class MessagesReply:
    """What translating the answer back needs to know about the request.

    Attributes:
        model: the model name as the agent sent it (echoed in the reply).
        stream: whether the agent asked for an SSE stream.
        thinking: whether the agent enabled extended thinking (only then are reasoning items sent back as
            ``thinking`` blocks).
        stop_sequences: the request's ``stop_sequences`` (applied to the reply, not by the engine).
        input_tokens: tether's estimate of the prompt, reported in ``message_start`` before the real usage is known.
    """

    model: str
    stream: bool = False
    thinking: bool = False
    stop_sequences: tuple[str, ...] = ()
    input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class MessagesTranslation:
    """A Messages request translated for tether's engine.

    Attributes:
        responses: a ``POST /v1/responses`` body (stateless: the whole history as ``input``), ready for
            :func:`tether.protocol.request.parse_create`. It has no ``store`` or ``previous_response_id``: the
            caller decides those.
        reply: what :class:`~tether.protocol.agent_apis.anthropic_reply.MessagesStreamEncoder` and
            :func:`~tether.protocol.agent_apis.anthropic_reply.messages_response` need.
    """

    responses: JSONObject
    reply: MessagesReply


def translate_messages_request(body: JSONObject) -> MessagesTranslation:
    """Translate a Messages request body into a Responses request body.

    Args:
        body: the decoded JSON body of ``POST /v1/messages``.

    Returns:
        The Responses body and the facts the reply needs.

    Raises:
        ProtocolError: 400 for a body the Messages API refuses (``param`` names the field, e.g. ``messages.2.content``),
            or ``unsupported_value`` for a valid one the engine cannot express.
    """
    responses = _responses_body(body, require_max_tokens=True)
    thinking = body.get("thinking")
    reply = MessagesReply(
        model=responses["model"],
        stream=responses.get("stream") is True,
        thinking=isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"),
        stop_sequences=tuple(_stop_sequences(body.get("stop_sequences"))),
        input_tokens=_estimate(responses),
    )
    return MessagesTranslation(responses=responses, reply=reply)


def count_message_tokens(body: JSONObject) -> JSONObject:
    """Answer ``POST /v1/messages/count_tokens`` with tether's estimate.

    The estimate is the engine's (about four bytes of canonical JSON a token, per input item and for the
    instructions) plus the tool definitions, which Anthropic counts too. It is an estimate, not the upstream
    tokenizer's count.

    Args:
        body: the decoded JSON body (a Messages request without ``max_tokens``).

    Returns:
        ``{"input_tokens": N}``, the shape the Messages API answers.

    Raises:
        ProtocolError: 400 as :func:`translate_messages_request`.
    """
    return {"input_tokens": _estimate(_responses_body(body, require_max_tokens=False))}


def _estimate(responses: JSONObject) -> int:
    tokens = sum(fingerprint(item).tokens for item in responses["input"])
    if responses.get("instructions"):
        tokens += estimate_tokens(responses["instructions"])
    if responses.get("tools"):
        tokens += estimate_tokens(json_text(responses["tools"]))
    return tokens


def _responses_body(body: JSONObject, *, require_max_tokens: bool) -> JSONObject:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: Field required.", "model", "missing_required_parameter")
    max_tokens = body.get("max_tokens")
    if require_max_tokens and not (_is_int(max_tokens) and max_tokens >= 1):
        raise bad_request("max_tokens: a positive integer is required.", "max_tokens", "missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: at least one message is required.", "messages", "missing_required_parameter")
    responses: JSONObject = {"model": model, "input": [item for i, m in enumerate(messages) for item in _items(i, m)]}
    instructions = _system_text(body.get("system"))
    if instructions:
        responses["instructions"] = instructions
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("tools: must be an array.", "tools", "invalid_type")
        if tools:
            responses["tools"] = [_tool(index, tool) for index, tool in enumerate(tools)]
    _tool_choice(body.get("tool_choice"), responses)
    if _is_int(max_tokens) and max_tokens >= 1:
        responses["max_output_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise bad_request(f"{name}: must be a number.", name, "invalid_type")
            responses[name] = value
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        responses["user"] = metadata["user_id"]
    reasoning = _reasoning(body.get("thinking"))
    if reasoning is not None:
        responses["reasoning"] = reasoning
    if body.get("stream") is not None:
        if not isinstance(body["stream"], bool):
            raise bad_request("stream: must be a boolean.", "stream", "invalid_type")
        responses["stream"] = body["stream"]
    return responses


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _stop_sequences(value: Any) -> Iterator[str]:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise bad_request("stop_sequences: must be an array of strings.", "stop_sequences", "invalid_type")
    yield from value


def _system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise bad_request("system: must be a string or an array of text blocks.", "system", "invalid_type")
    texts = []
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise bad_request("system: only text blocks are allowed.", f"system.{index}", "invalid_type")
        texts.append(block["text"])
    return "\n\n".join(texts)


# -- messages ------------------------------------------------------------------------------------------------


def _items(index: int, message: Any) -> list[Item]:
    param = f"messages.{index}"
    if not isinstance(message, dict):
        raise bad_request(f"{param}: must be an object.", param, "invalid_type")
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise bad_request(f"{param}.role: must be 'user' or 'assistant'.", f"{param}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "message", "role": role, "content": content}]
    if not isinstance(content, list):
        raise bad_request(f"{param}.content: must be a string or an array.", f"{param}.content", "invalid_type")
    builder = _ItemBuilder(role, param)
    for block_index, block in enumerate(content):
        builder.add(block_index, block)
    return builder.finish()


class _ItemBuilder:
    """Turns one message's blocks into items, keeping their order: content parts gather into message items."""

    def __init__(self, role: str, param: str) -> None:
        self.role = role
        self.param = param
        self.items: list[Item] = []
        self._parts: list[JSONObject] = []

    def add(self, index: int, block: Any) -> None:
        param = f"{self.param}.content.{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise bad_request(f"{param}: must be a typed content block.", param, "invalid_type")
        kind = block["type"]
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise bad_request(f"{param}.text: must be a string.", f"{param}.text", "invalid_type")
            text_type = "output_text" if self.role == "assistant" else "input_text"
            part: JSONObject = {"type": text_type, "text": block["text"]}
            if text_type == "output_text":
                part["annotations"] = []
            self._parts.append(part)
        elif kind in ("image", "document") and self.role != "assistant":
            self._parts.append(media_part(kind, block, param))
        elif kind == "tool_use" and self.role == "assistant":
            self._flush()
            self.items.append(function_call(block, param))
        elif kind == "tool_result" and self.role == "user":
            self._flush()
            self.items.append(function_call_output(block, param))
        elif kind == "thinking" and self.role == "assistant":
            self._flush()
            self.items.append(reasoning_item(block, param))
        elif kind == "redacted_thinking" and self.role == "assistant":
            self._flush()
        elif kind in ("tool_use", "tool_result", "thinking", "redacted_thinking", "image", "document"):
            raise bad_request(f"{param}: '{kind}' blocks are not allowed in '{self.role}' messages.", param)
        else:
            raise unsupported(f"{param}: content blocks of type '{kind}' are not supported by this model.", param)

    def finish(self) -> list[Item]:
        self._flush()
        return self.items

    def _flush(self) -> None:
        if self._parts:
            self.items.append({"type": "message", "role": self.role, "content": self._parts})
            self._parts = []


# -- tools and parameters ------------------------------------------------------------------------------------


def _tool(index: int, tool: Any) -> JSONObject:
    param = f"tools.{index}"
    if not isinstance(tool, dict):
        raise bad_request(f"{param}: must be an object.", param, "invalid_type")
    kind = tool.get("type")
    if kind is not None and (not isinstance(kind, str) or kind not in _CLIENT_TOOL_TYPES):
        raise unsupported(f"{param}: server tools ('{tool.get('type')}') are not supported by this model.", param)
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{param}.name: required.", f"{param}.name", "missing_required_parameter")
    if not isinstance(schema, dict):
        raise bad_request(f"{param}.input_schema: required.", f"{param}.input_schema", "missing_required_parameter")
    converted: JSONObject = {"type": "function", "name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        converted["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        converted["strict"] = tool["strict"]
    return converted


def _tool_choice(choice: Any, responses: JSONObject) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise bad_request("tool_choice: must be an object.", "tool_choice", "invalid_type")
    kind = choice.get("type")
    if kind == "auto":
        responses["tool_choice"] = "auto"
    elif kind == "any":
        responses["tool_choice"] = "required"
    elif kind == "none":
        responses["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        responses["tool_choice"] = {"type": "function", "name": choice["name"]}
    else:
        raise bad_request("tool_choice.type: must be 'auto', 'any', 'tool' (with a name) or 'none'.", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        responses["parallel_tool_calls"] = False


def _reasoning(thinking: Any) -> JSONObject | None:
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    budget = thinking.get("budget_tokens")
    effort = "high"
    if _is_int(budget):
        effort = next((name for limit, name in _THINKING_EFFORT if budget < limit), "high")
    elif thinking.get("type") == "adaptive":
        effort = "medium"
    return {"effort": effort, "summary": "auto"}
