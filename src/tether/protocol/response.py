"""The response object, with every key of the Open Responses schema present."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, cast

from tether.protocol.events import ResponseObject
from tether.types import Item, JSONObject

# Frozen all the way down (tuples for arrays, read-only mappings for objects) and thawed into fresh lists and dicts
# for each response: the engine updates its own response objects, so no two may share a default's list or dict.
PARAM_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "instructions": None,
        "tools": (),
        "tool_choice": "auto",
        "truncation": "disabled",
        "parallel_tool_calls": True,
        "text": MappingProxyType({"format": MappingProxyType({"type": "text"})}),
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "temperature": 1.0,
        "reasoning": MappingProxyType({"effort": None, "summary": None}),
        "max_output_tokens": None,
        "max_tool_calls": None,
        "service_tier": "default",
        "metadata": MappingProxyType({}),
        "safety_identifier": None,
        "prompt_cache_key": None,
        "user": None,
    }
)


def response_object(
    *,
    response_id: str,
    created_at: int,
    status: str,
    model: str,
    params: JSONObject,
    output: list[Item],
    previous_response_id: str | None,
    store: bool,
    usage: JSONObject | None = None,
    error: JSONObject | None = None,
    incomplete_details: JSONObject | None = None,
    completed_at: int | None = None,
) -> ResponseObject:
    """Build a complete response object.

    Args:
        params: the request parameters as sent (see ``CreateRequest.forwarded_params``); known ones fill
            their keys, unknown ones are echoed as they came.
    """
    body: JSONObject = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at,
        "status": status,
        "background": params.get("background") is True,
        "error": error,
        "incomplete_details": incomplete_details,
        "model": model,
        "output": output,
        "previous_response_id": previous_response_id,
        "store": store,
        "usage": usage,
    }
    for key, default in PARAM_DEFAULTS.items():
        value = params.get(key)
        body[key] = thaw(default) if value is None else value
    body["tools"] = [_echo_tool(tool) for tool in body["tools"]]
    reasoning = body["reasoning"]
    if isinstance(reasoning, dict):
        body["reasoning"] = {
            "effort": reasoning.get("effort"),
            "summary": reasoning.get("summary"),
            **reasoning,
        }
    for key, value in params.items():
        body.setdefault(key, value)
    # The keys ResponseObject names are all set above (status and the nested objects as the store or the stream
    # gave them); the echoed parameters are extra keys it does not name.
    return cast(ResponseObject, body)


def thaw(value: Any) -> Any:
    """A frozen default as fresh JSON: tuples become lists and read-only mappings dicts, all the way down."""
    if isinstance(value, Mapping):
        return {key: thaw(inner) for key, inner in value.items()}
    if isinstance(value, tuple):
        return [thaw(inner) for inner in value]
    return value


def _echo_tool(tool: JSONObject) -> JSONObject:
    if tool.get("type") == "function":
        return {"description": None, "parameters": None, "strict": None, **tool}
    return tool
