"""A fake Anthropic Messages server (``POST /v1/messages``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import orjson
from starlette.responses import Response

from tether.providers.fakes.base import FakeTurn, FakeUpstream, PrefixCache, sse
from tether.types import JSONObject

MAX_BREAKPOINTS = 4
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeUpstream):
    """Speaks the Messages API: streamed ``message_start`` ... ``message_stop`` events (thinking, text and
    ``tool_use`` blocks with ``input_json_delta``), and prompt caching that honours ``cache_control`` breakpoints,
    reported as ``cache_read_input_tokens`` and ``cache_creation_input_tokens``.

    It refuses what the real API refuses and a translation could get wrong: roles that do not alternate, a
    ``tool_use`` not answered by a ``tool_result`` in the next message, tool results after text, empty text
    blocks, more than four breakpoints. See :class:`FakeUpstream` for the script, the recorder and the knobs.
    """

    kind: ClassVar[str] = "anthropic"
    path: ClassVar[str] = "/v1/messages"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache = PrefixCache()

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return headers.get("x-api-key") == api_key and "anthropic-version" in headers

    def check(self, body: JSONObject) -> str | None:
        messages = body.get("messages")
        if not isinstance(body.get("model"), str) or not isinstance(body.get("max_tokens"), int):
            return "'model' and 'max_tokens' are required."
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required."
        expected = "user"
        unanswered: set[str] = set()
        for index, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if role != expected:
                return f"messages.{index}: roles must alternate between 'user' and 'assistant', starting with 'user'."
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            problem = _check_blocks(index, blocks, unanswered)
            if problem is not None:
                return problem
            unanswered = {b["id"] for b in blocks if b.get("type") == "tool_use"}
            expected = "assistant" if role == "user" else "user"
        breakpoints = sum(1 for block in _prompt_blocks(body) if isinstance(block, dict) and "cache_control" in block)
        if breakpoints > MAX_BREAKPOINTS:
            return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}."
        return None

    def position(self, body: JSONObject) -> tuple[int, str | None]:
        messages: list[JSONObject] = body["messages"]
        last_user = max((i for i, m in enumerate(messages) if _is_user_turn(m)), default=-1)
        turns = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")
        return turns, _text(messages[last_user].get("content")) if last_user >= 0 else None

    def call_id(self, answer: int, index: int) -> str:
        return f"toolu_fake{answer}_{index}"

    def stream(self, body: JSONObject, turn: FakeTurn) -> Iterator[bytes]:
        usage = self._usage(body)
        message = {**self._message(body, turn, []), "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        yield sse({"type": "message_start", "message": message}, "message_start")
        yield sse({"type": "ping"}, "ping")
        for index, (block, deltas) in enumerate(self._blocks(turn)):
            yield sse({"type": "content_block_start", "index": index, "content_block": block}, "content_block_start")
            for delta in deltas:
                yield sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
            yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        delta = {"stop_reason": _stop_reason(turn), "stop_sequence": None}
        final_usage = {"output_tokens": turn.output_tokens}
        yield sse({"type": "message_delta", "delta": delta, "usage": final_usage}, "message_delta")
        yield sse({"type": "message_stop"}, "message_stop")

    def complete(self, body: JSONObject, turn: FakeTurn) -> JSONObject:
        content: list[JSONObject] = []
        if turn.reasoning:
            content.append({"type": "thinking", "thinking": turn.reasoning, "signature": "fake"})
        if turn.text:
            content.append({"type": "text", "text": turn.text})
        for call in turn.calls:
            content.append({"type": "tool_use", "id": call.call_id, "name": call.name, "input": _input(call.arguments)})
        usage = {**self._usage(body), "output_tokens": turn.output_tokens}
        return {**self._message(body, turn, content), "stop_reason": _stop_reason(turn), "usage": usage}

    def error_response(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        error = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
        return Response(orjson.dumps(error), status, headers=dict(headers or {}), media_type="application/json")

    def _message(self, body: JSONObject, turn: FakeTurn, content: list[JSONObject]) -> JSONObject:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_sequence": None,
        }

    def _blocks(self, turn: FakeTurn) -> Iterator[tuple[JSONObject, list[JSONObject]]]:
        if turn.reasoning:
            deltas = [{"type": "thinking_delta", "thinking": piece} for piece in self.chunks(turn.reasoning)]
            yield {"type": "thinking", "thinking": ""}, [*deltas, {"type": "signature_delta", "signature": "fake"}]
        if turn.text:
            yield {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in self.chunks(turn.text)]
        for call in turn.calls:
            pieces = ["", *self.chunks(call.arguments)]  # the real API opens with an empty partial_json
            start = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
            yield start, [{"type": "input_json_delta", "partial_json": p} for p in pieces]

    def _usage(self, body: JSONObject) -> JSONObject:
        blocks = _prompt_blocks(body)
        breakpoints = [n for n, block in enumerate(blocks, 1) if isinstance(block, dict) and "cache_control" in block]
        unmarked = [_without_cache_control(block) for block in blocks]
        read, written, uncached = self._cache.lookup(unmarked, write_at=breakpoints)
        return {"input_tokens": uncached, "cache_creation_input_tokens": written, "cache_read_input_tokens": read}


def _check_blocks(index: int, blocks: Any, unanswered: set[str]) -> str | None:
    if not isinstance(blocks, list) or not blocks:
        return f"messages.{index}: content must be a non-empty string or array."
    answered: set[str] = set()
    seen_other = False
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and not block.get("text"):
            return f"messages.{index}: text content blocks must be non-empty."
        if kind == "tool_result":
            if seen_other:
                return f"messages.{index}: tool_result blocks must come before any other content."
            if block.get("tool_use_id") not in unanswered:
                return f"messages.{index}: unexpected tool_use_id {block.get('tool_use_id')!r} in tool_result."
            answered.add(block["tool_use_id"])
        else:
            seen_other = True
    if unanswered - answered:
        return f"messages.{index}: tool_use ids {sorted(unanswered - answered)} have no tool_result right after."
    return None


def _prompt_blocks(body: JSONObject) -> list[Any]:
    """The request in cache order: tools, system, then every message's blocks (tagged with their role)."""
    system = body.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    blocks: list[Any] = [*(body.get("tools") or ()), *system]
    for message in body.get("messages") or ():
        content = message.get("content")
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        blocks += [{**block, "role": message.get("role")} for block in items if isinstance(block, dict)]
    return blocks


def _without_cache_control(block: Any) -> Any:
    return {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block


def _is_user_turn(message: JSONObject) -> bool:
    """A user message that is more than tool results (those continue the assistant's turn)."""
    if message.get("role") != "user":
        return False
    content = message.get("content")
    return isinstance(content, str) or any(b.get("type") != "tool_result" for b in content or [] if isinstance(b, dict))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _input(arguments: str) -> Any:
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}


def _stop_reason(turn: FakeTurn) -> str:
    if turn.truncated:
        return "max_tokens"
    return "tool_use" if turn.calls else "end_turn"
