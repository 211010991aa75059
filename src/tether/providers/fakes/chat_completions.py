"""A fake OpenAI-compatible Chat Completions server (``POST /v1/chat/completions``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.providers.fakes.base import FakeTurn, FakeUpstream, PrefixCache, sse
from tether.types import JSONObject

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})  # "function": deprecated
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}


class FakeChatCompletions(FakeUpstream):
    """Speaks Chat Completions like vLLM or OpenAI: streamed ``chat.completion.chunk``\\ s (reasoning as
    ``reasoning_content``, parallel tool calls by ``index``), usage when ``stream_options.include_usage`` asks,
    and automatic prefix caching reported as ``prompt_tokens_details.cached_tokens``.

    ``base_url`` ends in ``/v1``, ready for a ``chat-completions`` provider's config; ``GET /v1/models`` lists
    :attr:`models`. See :class:`FakeUpstream` for the script, the recorder and the failure knobs.
    """

    kind: ClassVar[str] = "chat-completions"
    path: ClassVar[str] = "/v1/chat/completions"
    models: ClassVar[tuple[str, ...]] = ("fake-chat",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache = PrefixCache()

    @property
    def base_url(self) -> str:
        return super().base_url + "/v1"

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return headers.get("authorization") == f"Bearer {api_key}"

    def extra_routes(self) -> list[Route]:
        return [Route("/v1/models", self._models, methods=["GET"])]

    async def _models(self, request: Request) -> Response:
        recorded, _ = await self.record(request)
        if self.api_key is not None and not self.authorized(recorded.headers, self.api_key):
            return self.error_response(401, "Invalid API key.")
        data = [{"id": model, "object": "model", "created": 0, "owned_by": "fake"} for model in self.models]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    def check(self, body: JSONObject) -> str | None:
        messages = body.get("messages")
        if not isinstance(body.get("model"), str) or not isinstance(messages, list) or not messages:
            return "'model' and a non-empty 'messages' array are required."
        pending: set[str] = set()
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if not isinstance(role, str) or role not in _ROLES:
                return f"messages[{index}].role: invalid role {role!r}."
            if role == "tool":
                call_id = message.get("tool_call_id")
                if not isinstance(call_id, str) or call_id not in pending:
                    return f"messages[{index}]: a 'tool' message must answer a preceding assistant tool call."
                pending.discard(call_id)
                continue
            if pending:
                return f"messages[{index}]: tool calls {sorted(pending)} have no 'tool' message."
            for call in message.get("tool_calls") or ():
                if not isinstance(call, dict) or not isinstance(call.get("id"), str):
                    return f"messages[{index}].tool_calls: each call needs an 'id'."
                pending.add(call["id"])
        return None

    def position(self, body: JSONObject) -> tuple[int, str | None]:
        """Assistant turns since the last user message that starts a round, and its text; a user message right
        after tool results (an agent's reminder) continues the round, as the scripted model and FakeAnthropic
        count it."""
        messages: list[JSONObject] = body["messages"]
        starts = [i for i, m in enumerate(messages) if m.get("role") == "user" and not _after_tool_results(messages, i)]
        last_user = max(starts, default=-1)
        turns = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")
        return turns, _text(messages[last_user].get("content")) if last_user >= 0 else None

    def call_id(self, answer: int, index: int) -> str:
        return f"call_fake{answer}_{index}"

    def stream(self, body: JSONObject, turn: FakeTurn) -> Iterator[bytes]:
        usage = self._usage(body, turn)
        chunk = _Chunks(body, turn)
        yield chunk.frame({"role": "assistant", "content": ""})
        for piece in self.chunks(turn.reasoning):
            yield chunk.frame({"reasoning_content": piece})
        for piece in self.chunks(turn.text):
            yield chunk.frame({"content": piece})
        for index, call in enumerate(turn.calls):
            opening = {"index": index, "id": call.call_id, "type": "function"}
            yield chunk.frame({"tool_calls": [{**opening, "function": {"name": call.name, "arguments": ""}}]})
            for piece in self.chunks(call.arguments):
                yield chunk.frame({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk.frame({}, finish_reason=_finish_reason(turn))
        if (body.get("stream_options") or {}).get("include_usage"):
            yield sse({**chunk.envelope, "choices": [], "usage": usage})
        yield sse("[DONE]")

    def complete(self, body: JSONObject, turn: FakeTurn) -> JSONObject:
        message: JSONObject = {"role": "assistant", "content": turn.text or None}
        if turn.reasoning:
            message["reasoning_content"] = turn.reasoning
        if turn.calls:
            message["tool_calls"] = [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in turn.calls
            ]
        return {
            "id": f"chatcmpl-fake{turn.answer_id}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(turn)}],
            "usage": self._usage(body, turn),
        }

    def error_response(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        kind = _ERROR_TYPES.get(status, "rate_limit_error" if status == 429 else "server_error")
        error = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return Response(orjson.dumps(error), status, headers=dict(headers or {}), media_type="application/json")

    def _usage(self, body: JSONObject, turn: FakeTurn) -> JSONObject:
        blocks = [*(body.get("tools") or ()), *body["messages"]]
        read, written, uncached = self._cache.lookup(blocks)
        prompt = read + written + uncached
        return {
            "prompt_tokens": prompt,
            "completion_tokens": turn.output_tokens,
            "total_tokens": prompt + turn.output_tokens,
            "prompt_tokens_details": {"cached_tokens": read},
        }


class _Chunks:
    """Chunk framing; with ``include_usage`` every chunk but the last carries ``"usage": null``, as OpenAI's do."""

    def __init__(self, body: JSONObject, turn: FakeTurn) -> None:
        self.envelope: JSONObject = {
            "id": f"chatcmpl-fake{turn.answer_id}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body["model"],
        }
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def frame(self, delta: JSONObject, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        chunk: JSONObject = {**self.envelope, "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)


def _after_tool_results(messages: list[JSONObject], index: int) -> bool:
    """Whether the message at ``index`` follows tool results (other user or system messages in between)."""
    for message in reversed(messages[:index]):
        role = message.get("role")
        if role == "tool":
            return True
        if role not in ("user", "system", "developer"):
            return False
    return False


def _finish_reason(turn: FakeTurn) -> str:
    if turn.truncated:
        return "length"
    return "tool_calls" if turn.calls else "stop"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
