"""A Chat Completions request (``POST /v1/chat/completions``) as a Responses request for tether's engine.

The direction for an upstream that does not speak Chat Completions (the built-in scripted model, an Anthropic or
OpenAI Responses upstream). When the routed upstream speaks it, the request is forwarded untouched instead.

What maps to what:

* ``system`` and ``developer`` messages → message items of that role, where they stand; ``user`` content parts
  ``text`` / ``image_url`` / ``file`` → ``input_text`` / ``input_image`` / ``input_file``;
* an ``assistant`` message → a message item with its ``content`` as ``output_text`` (and ``refusal`` as a
  ``refusal`` part), then one ``function_call`` per ``tool_calls`` entry (``call_id`` = the call's ``id``);
* a ``tool`` message → a ``function_call_output`` for its ``tool_call_id``;
* ``tools`` (``function`` ones) → function tools; ``tool_choice`` (including ``allowed_tools``) and
  ``parallel_tool_calls`` as Responses spells them; ``max_completion_tokens`` (or ``max_tokens``) →
  ``max_output_tokens``; ``response_format`` → ``text.format``; ``reasoning_effort`` → ``reasoning.effort``;
  ``temperature``, ``top_p``, ``user``, ``metadata``, ``safety_identifier``, ``prompt_cache_key``, ``stream`` as
  they are.
* dropped, having no Responses meaning: ``seed``, ``frequency_penalty``, ``presence_penalty``, ``logit_bias``,
  ``logprobs``, ``store`` (Chat's own, not tether's), a message's ``name``. ``stop`` is not sent to the engine; it
  travels in :class:`ChatReply`, and the reply ends the text where the first sequence starts.

Refused with 400 ``unsupported_value``: ``n`` above 1, audio, legacy ``function`` messages, non-function tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.protocol.agent_apis.common import bad_request, unsupported
from tether.types import Item, JSONObject

__all__ = ["ChatReply", "ChatTranslation", "translate_chat_request"]

_PASSED_THROUGH = ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key")


@dataclass(frozen=True, slots=True)
class ChatReply:
    """What translating the answer back needs to know about the request.

    Attributes:
        model: the model name as the agent sent it (echoed in every chunk).
        stream: whether the agent asked for an SSE stream.
        include_usage: ``stream_options.include_usage``: a last chunk with empty ``choices`` carries the usage,
            and every chunk before it carries ``"usage": null``.
        stop: the request's ``stop`` sequences (applied to the reply, not by the engine).
    """

    model: str
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatTranslation:
    """A Chat Completions request translated for tether's engine.

    Attributes:
        responses: a stateless ``POST /v1/responses`` body (the whole history as ``input``), ready for
            :func:`tether.protocol.request.parse_create`; no ``store`` or ``previous_response_id``.
        reply: what :class:`~tether.protocol.agent_apis.chat_reply.ChatStreamEncoder` and
            :func:`~tether.protocol.agent_apis.chat_reply.chat_completion` need.
    """

    responses: JSONObject
    reply: ChatReply


def translate_chat_request(body: JSONObject) -> ChatTranslation:
    """Translate a Chat Completions request body into a Responses request body.

    Args:
        body: the decoded JSON body of ``POST /v1/chat/completions``.

    Returns:
        The Responses body and the facts the reply needs.

    Raises:
        ProtocolError: 400 for a body the Chat Completions API refuses (``param`` names the field, e.g.
            ``messages[2].content``), or ``unsupported_value`` for a valid one the engine cannot express.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", "messages", "missing_required_parameter")
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported("Only n=1 is supported by this model.", "n")
    responses: JSONObject = {"model": model, "input": [item for i, m in enumerate(messages) for item in _items(i, m)]}
    tools = _tools(body.get("tools"))
    if tools:
        responses["tools"] = tools
    if body.get("tool_choice") is not None:
        responses["tool_choice"] = _tool_choice(body["tool_choice"])
    if isinstance(body.get("parallel_tool_calls"), bool):
        responses["parallel_tool_calls"] = body["parallel_tool_calls"]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise bad_request("'max_completion_tokens' must be a positive integer.", "max_completion_tokens")
        responses["max_output_tokens"] = limit
    for name in _PASSED_THROUGH:
        if body.get(name) is not None:
            responses[name] = body[name]
    if isinstance(body.get("metadata"), dict):
        responses["metadata"] = body["metadata"]
    text_format = _text_format(body.get("response_format"))
    if text_format is not None:
        responses["text"] = {"format": text_format}
    if isinstance(body.get("reasoning_effort"), str):
        responses["reasoning"] = {"effort": body["reasoning_effort"]}
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream", "invalid_type")
    if stream is not None:
        responses["stream"] = stream
    options = body.get("stream_options")
    reply = ChatReply(
        model=model,
        stream=stream is True,
        include_usage=stream is True and isinstance(options, dict) and options.get("include_usage") is True,
        stop=_stop(body.get("stop")),
    )
    return ChatTranslation(responses=responses, reply=reply)


def _stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise bad_request("'stop' must be a string or an array of strings.", "stop", "invalid_type")


# -- messages ------------------------------------------------------------------------------------------------


def _items(index: int, message: Any) -> list[Item]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_request(f"'{param}' must be an object.", param, "invalid_type")
    role = message.get("role")
    content = message.get("content")
    if role in ("system", "developer"):
        return [{"type": "message", "role": role, "content": _text_content(content, f"{param}.content")}]
    if role == "user":
        return [{"type": "message", "role": "user", "content": _user_content(content, f"{param}.content")}]
    if role == "assistant":
        return _assistant_items(message, param)
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request(f"'{param}.tool_call_id' is required.", f"{param}.tool_call_id")
        output = _text_content(content, f"{param}.content")
        return [{"type": "function_call_output", "call_id": call_id, "output": output}]
    if role == "function":
        raise unsupported(f"'{param}': legacy 'function' messages are not supported; use 'tool'.", f"{param}.role")
    raise bad_request(f"'{param}.role' must be one of system, developer, user, assistant, tool.", f"{param}.role")


def _text_content(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of text parts.", param, "invalid_type")
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise bad_request(f"'{param}[{index}]' must be a text part.", f"{param}[{index}]", "invalid_type")
        texts.append(part["text"])
    return "".join(texts)


def _user_content(content: Any, param: str) -> str | list[JSONObject]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param, "invalid_type")
    return [_user_part(part, f"{param}[{index}]") for index, part in enumerate(content)]


def _user_part(part: Any, param: str) -> JSONObject:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return {"type": "input_text", "text": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise bad_request(f"'{param}.image_url.url' is required.", f"{param}.image_url")
        detail = image.get("detail") if isinstance(image, dict) else None
        return {"type": "input_image", "image_url": url, "detail": detail if isinstance(detail, str) else "auto"}
    if kind == "file" and isinstance(part.get("file"), dict):
        file = part["file"]
        converted: JSONObject = {"type": "input_file"}
        for key in ("file_data", "file_id", "filename"):
            if isinstance(file.get(key), str):
                converted[key] = file[key]
        if "file_data" not in converted and "file_id" not in converted:
            raise bad_request(f"'{param}.file' needs 'file_data' or 'file_id'.", f"{param}.file")
        return converted
    if kind == "input_audio":
        raise unsupported(f"'{param}': audio input is not supported by this model.", param)
    raise bad_request(f"'{param}' is not a valid content part.", param, "invalid_type")


def _assistant_items(message: JSONObject, param: str) -> list[Item]:
    items: list[Item] = []
    content = message.get("content")
    parts: list[JSONObject] = []
    if isinstance(content, str):
        if content:
            parts.append({"type": "output_text", "text": content, "annotations": []})
    elif isinstance(content, list):
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "output_text", "text": part["text"], "annotations": []})
            elif kind == "refusal" and isinstance(part.get("refusal"), str):
                parts.append({"type": "refusal", "refusal": part["refusal"]})
            else:
                raise bad_request(f"'{param}.content[{index}]' must be a text or refusal part.", f"{param}.content")
    elif content is not None:
        raise bad_request(f"'{param}.content' must be a string, an array or null.", f"{param}.content", "invalid_type")
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        items.append({"type": "message", "role": "assistant", "content": parts})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request(f"'{param}.tool_calls' must be an array.", f"{param}.tool_calls", "invalid_type")
    for index, call in enumerate(calls):
        items.append(_function_call(call, f"{param}.tool_calls[{index}]"))
    if message.get("function_call") is not None:
        raise unsupported(f"'{param}.function_call' (legacy) is not supported; use 'tool_calls'.", param)
    return items


def _function_call(call: Any, param: str) -> Item:
    function = call.get("function") if isinstance(call, dict) else None
    valid = isinstance(function, dict) and isinstance(call.get("id"), str) and isinstance(function.get("name"), str)
    if not valid or not isinstance(function, dict):
        raise bad_request(f"'{param}' needs an 'id' and a 'function.name'.", param, "missing_required_parameter")
    if call.get("type", "function") != "function":
        raise unsupported(f"'{param}': tool calls of type '{call.get('type')}' are not supported.", param)
    arguments = function.get("arguments")
    return {
        "type": "function_call",
        "call_id": call["id"],
        "name": function["name"],
        "arguments": arguments if isinstance(arguments, str) else "{}",
    }


# -- tools and parameters ------------------------------------------------------------------------------------


def _tools(tools: Any) -> list[JSONObject]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", "tools", "invalid_type")
    converted = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise unsupported(f"'{param}': tools of type '{kind}' are not supported by this model.", param)
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"'{param}.function.name' is required.", param, "missing_required_parameter")
        out: JSONObject = {"type": "function", "name": function["name"]}
        if isinstance(function.get("description"), str):
            out["description"] = function["description"]
        out["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
        if isinstance(function.get("strict"), bool):
            out["strict"] = function["strict"]
        converted.append(out)
    return converted


def _tool_choice(choice: Any) -> str | JSONObject:
    if choice in ("auto", "none", "required"):
        return str(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "function", "name": function["name"]}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if isinstance(allowed, dict) and isinstance(allowed.get("tools"), list):
            names = [
                t["function"]["name"]
                for t in allowed["tools"]
                if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
            ]
            tools = [{"type": "function", "name": name} for name in names]
            return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"), "tools": tools}
    raise bad_request("'tool_choice' must be auto, none, required or a function choice.", "tool_choice")


def _text_format(response_format: Any) -> JSONObject | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
        schema = response_format["json_schema"]
        keys = ("name", "schema", "strict", "description")
        return {"type": "json_schema", **{key: schema[key] for key in keys if key in schema}}
    if kind in ("json_object", "text"):
        return {"type": kind}
    raise bad_request("'response_format.type' must be text, json_object or json_schema.", "response_format")
