"""tether's Responses answer as an Anthropic Messages body: the non-streamed answer, errors, SSE framing.

The streamed answer is :class:`~tether.protocol.agent_apis.anthropic_reply.MessagesStreamEncoder`; both map
output items to content blocks the same way (see that module), so the encoder's accumulated message equals
:func:`messages_response` of the finished response.
"""

from __future__ import annotations

from typing import Any, Literal

from tether.protocol.agent_apis.anthropic_request import MessagesReply
from tether.protocol.agent_apis.common import (
    ResponsesUsage,
    arguments_object,
    cut_at_stop,
    failed_error,
    incomplete_reason,
    public_id,
    tool_use_id,
)
from tether.protocol.errors import ProtocolError
from tether.protocol.sse import encode_event
from tether.protocol.vocabulary import ANTHROPIC_THINKING
from tether.types import Item, JSONObject

__all__ = [
    "anthropic_error",
    "encode_messages_event",
    "messages_failure",
    "messages_response",
    "ping_frame",
]

StopReason = Literal["end_turn", "max_tokens", "tool_use", "refusal", "stop_sequence"]

STOP_REASONS: dict[str, StopReason] = {"max_output_tokens": "max_tokens", "content_filter": "refusal"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
STREAM_ERROR_TYPES = {"rate_limit_exceeded": "rate_limit_error", "overloaded": "overloaded_error"}
PING: JSONObject = {"type": "ping"}


def encode_messages_event(event: JSONObject) -> bytes:
    """One Messages SSE frame: ``event: <type>`` and ``data: <json>`` (the API sends no ``[DONE]``)."""
    return encode_event(event)


def ping_frame() -> bytes:
    """An ``event: ping`` frame: the Messages API's own keep-alive, which clients ignore."""
    return encode_event(PING)


def anthropic_error(error: ProtocolError) -> JSONObject:
    """A protocol error in the Messages API's error shape: ``{"type": "error", "error": {"type", "message"}}``.

    The HTTP status stays ``error.status``; the error type follows it (``invalid_request_error`` for 400 and any
    4xx the API names no type of, ``rate_limit_error`` for 429, ``api_error`` for 5xx, ...).
    """
    kind = _ERROR_TYPES.get(error.status, "invalid_request_error" if 400 <= error.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def messages_failure(response: JSONObject) -> tuple[int, JSONObject]:
    """The HTTP status and Messages error body for a ``failed`` Responses response object (429 for a rate limit,
    else 500 ``api_error``)."""
    code, message = failed_error(response)
    kind = STREAM_ERROR_TYPES.get(code, "api_error")
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
        **message_head(response.get("id"), reply.model, content),
        "stop_reason": "stop_sequence" if hit is not None else _stop_reason(response, content),
        "stop_sequence": hit,
        "usage": usage_of(ResponsesUsage.of(response.get("usage"))),
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


# -- shared --------------------------------------------------------------------------------------------------


def message_head(response_id: Any, model: str, content: list[JSONObject]) -> JSONObject:
    return {
        "id": public_id("msg_", response_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage_of(ResponsesUsage()),
    }


def usage_of(usage: ResponsesUsage) -> JSONObject:
    return {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }


def _stop_reason(response: JSONObject, content: list[JSONObject]) -> StopReason:
    reason = incomplete_reason(response)
    if reason is not None:
        return STOP_REASONS.get(reason, "end_turn")
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
    if kind == "reasoning" and reply.thinking and summary_text(item):
        return [{"type": "thinking", "thinking": summary_text(item), "signature": signature(item)}]
    return []


def summary_text(item: Item) -> str:
    parts = [item.get("summary") or (), item.get("content") or ()]
    texts = [p["text"] for group in parts for p in group if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n\n".join(text for text in texts if text)


def signature(item: Item) -> str:
    """A reasoning item's ``encrypted_content`` as a thinking block's signature: an Anthropic upstream's own
    signature when tether kept one (behind its ``tether:anthropic:thinking:`` prefix), else the value as it is."""
    encrypted = item.get("encrypted_content")
    if not isinstance(encrypted, str):
        return ""
    return encrypted.removeprefix(ANTHROPIC_THINKING)
