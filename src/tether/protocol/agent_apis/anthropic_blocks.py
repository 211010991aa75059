"""Anthropic Messages content blocks as Responses content parts and items (see
:mod:`~tether.protocol.agent_apis.anthropic_request` for the whole request).

Each function takes the block and ``param``, the block's place in the request (``messages.2.content.0``), which
a refusal names.
"""

from __future__ import annotations

from typing import Any

from tether.protocol.agent_apis.common import bad_request, data_url, json_text, unsupported
from tether.types import Item, JSONObject

__all__ = ["function_call", "function_call_output", "media_part", "reasoning_item"]


def media_part(kind: str, block: JSONObject, param: str) -> JSONObject:
    """An ``image`` or ``document`` block as an ``input_image``, ``input_file`` or ``input_text`` part."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise bad_request(f"{param}.source: required.", f"{param}.source", "missing_required_parameter")
    source_type = source.get("type")
    if source_type == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        url = data_url(source["media_type"], source["data"])
        if kind == "image":
            return {"type": "input_image", "image_url": url, "detail": "auto"}
        return {"type": "input_file", "file_data": url, "filename": _filename(block, source["media_type"])}
    if source_type == "url" and isinstance(source.get("url"), str):
        if kind == "image":
            return {"type": "input_image", "image_url": source["url"], "detail": "auto"}
        return {"type": "input_file", "file_url": source["url"]}
    if source_type == "file" and isinstance(source.get("file_id"), str):
        if kind == "image":
            return {"type": "input_image", "file_id": source["file_id"], "detail": "auto"}
        return {"type": "input_file", "file_id": source["file_id"]}
    if kind == "document" and source_type == "text" and isinstance(source.get("data"), str):
        return {"type": "input_text", "text": source["data"]}
    if kind == "document" and source_type == "content" and isinstance(source.get("content"), (str, list)):
        content = source["content"]
        text = content if isinstance(content, str) else _blocks_text(content, f"{param}.source.content")
        return {"type": "input_text", "text": text}
    raise bad_request(f"{param}.source: an unknown or incomplete {kind} source.", f"{param}.source")


def _filename(block: JSONObject, media_type: str) -> str:
    title = block.get("title")
    if isinstance(title, str) and title:
        return title
    return "document.pdf" if media_type == "application/pdf" else "document"


def _blocks_text(blocks: list[Any], param: str) -> str:
    texts = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise unsupported(f"{param}.{index}: only text blocks are supported here.", f"{param}.{index}")
        texts.append(block["text"])
    return "".join(texts)


def function_call(block: JSONObject, param: str) -> Item:
    """A ``tool_use`` block as a ``function_call`` item (its id becomes the ``call_id``)."""
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise bad_request(f"{param}: tool_use blocks need an 'id' and a 'name'.", param, "missing_required_parameter")
    arguments = block.get("input", {})
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": json_text(arguments)}


def function_call_output(block: JSONObject, param: str) -> Item:
    """A ``tool_result`` block as a ``function_call_output`` item."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{param}.tool_use_id: required.", f"{param}.tool_use_id", "missing_required_parameter")
    content = block.get("content")
    output: str | list[JSONObject]
    if content is None or isinstance(content, str):
        output = content or ""
    elif isinstance(content, list):
        output = [_result_part(part, f"{param}.content.{index}") for index, part in enumerate(content)]
    else:
        raise bad_request(f"{param}.content: must be a string or an array.", f"{param}.content", "invalid_type")
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _result_part(block: Any, param: str) -> JSONObject:
    if not isinstance(block, dict):
        raise bad_request(f"{param}: must be a typed content block.", param, "invalid_type")
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return {"type": "input_text", "text": block["text"]}
    if kind in ("image", "document"):
        return media_part(str(kind), block, param)
    raise unsupported(f"{param}: tool results of type '{kind}' are not supported by this model.", param)


def reasoning_item(block: JSONObject, param: str) -> Item:
    """A ``thinking`` block as a ``reasoning`` item with the thinking as its summary (the signature is Anthropic's
    own and means nothing to another model)."""
    thinking = block.get("thinking")
    if not isinstance(thinking, str):
        raise bad_request(f"{param}.thinking: required.", f"{param}.thinking", "missing_required_parameter")
    return {"type": "reasoning", "summary": [{"type": "summary_text", "text": thinking}] if thinking else []}
