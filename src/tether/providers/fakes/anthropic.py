"""A fake Anthropic Messages server (``POST /v1/messages``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.protocol.items import estimate_tokens
from tether.providers.fakes.base import FakeTurn, FakeUpstream, PrefixCache, sse
from tether.types import JSONObject

MAX_BREAKPOINTS = 4
MIN_BUDGET_TOKENS = 1024
_THINKING_BLOCKS = ("thinking", "redacted_thinking")
_THINKING_DOCS = (
    "Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)
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

    It accepts what the real API accepts: consecutive messages of one role (the API combines them into one turn),
    ``"role": "system"`` messages inside ``messages`` (Claude Code sends its environment block so), an empty final
    assistant message (a prefill), ``x-api-key`` or ``Authorization: Bearer`` credentials. It refuses what the
    real API refuses and a translation could get wrong: a first turn that is not the user's, a ``tool_use`` not
    answered by a ``tool_result`` in the next turn, tool results after other content, empty or whitespace-only
    text blocks, empty messages, more than four breakpoints, a ``cache_control`` that is not ``ephemeral`` with a
    ``ttl`` of ``5m`` or ``1h`` (a ``1h`` one after a ``5m`` one too), ``temperature`` or ``top_p`` outside 0..1, and
    a ``tool_choice`` that forces tool use with extended thinking enabled. A top-level ``cache_control``
    (automatic caching) marks the last block. Fields it does not check (``context_management``, ``output_config``,
    ``metadata``, beta tool fields such as ``defer_loading``) are accepted, as the real API accepts them with the
    beta headers Claude Code sends. ``POST /v1/messages/count_tokens`` answers ``{"input_tokens": N}`` and
    ``GET /v1/models`` lists :attr:`models`. See :class:`FakeUpstream` for the script, the recorder and the knobs.

    Extended thinking: with ``thinking`` enabled every answer opens with a ``thinking`` block (the step's
    reasoning, possibly empty) signed by the fake, or a ``redacted_thinking`` block with ``redact_thinking=True``;
    a step's reasoning is shown even without ``thinking``, so one script gives one transcript through every
    upstream. As the real API does, it refuses a ``thinking`` block whose signature does not match its text, a
    ``redacted_thinking`` block it did not issue, a budget under 1,024 tokens or not under ``max_tokens``, and, with
    thinking enabled, a tool loop whose assistant turn (the one the last ``tool_result`` answers) does not start
    with its thinking block.
    """

    kind: ClassVar[str] = "anthropic"
    path: ClassVar[str] = "/v1/messages"
    models: ClassVar[tuple[str, ...]] = ("claude-sonnet-4-5", "claude-haiku-4-5")

    def __init__(self, *args: Any, redact_thinking: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redact_thinking = redact_thinking
        self._cache = PrefixCache()
        self._secret = b"fake-anthropic-thinking"  # fixed, so twin fakes answer byte for byte alike
        self._redacted: set[str] = set()

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        has_key = headers.get("x-api-key") == api_key or headers.get("authorization") == f"Bearer {api_key}"
        return has_key and "anthropic-version" in headers

    def extra_routes(self) -> list[Route]:
        return [
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ]

    def check(self, body: JSONObject) -> str | None:
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required."
        return self._check_prompt(body) or _check_sampling(body)

    def _check_prompt(self, body: JSONObject) -> str | None:
        messages = body.get("messages")
        if not isinstance(body.get("model"), str):
            return "model: Field required."
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required."
        turns: list[tuple[int, str, list[Any]]] = []  # consecutive same-role messages are one turn
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                return f"messages.{index}: Input should be a valid dictionary."
            role, content = message.get("role"), message.get("content")
            if role not in ("user", "assistant", "system"):
                return f"messages.{index}.role: Input should be 'user', 'assistant' or 'system'."
            if isinstance(content, str):
                content = [{"type": "text", "text": content}] if content else []
            if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
                return f"messages.{index}.content: Input should be a valid string or list of content blocks."
            if not content and not (role == "assistant" and index == len(messages) - 1):
                return (
                    f"messages.{index}: all messages must have non-empty content except for the optional final "
                    "assistant message."
                )
            if role == "system":
                if any(block.get("type") != "text" for block in content):
                    return f"messages.{index}: system messages may only hold text blocks."
                problem = _check_blocks(index, content, set())
                if problem is not None:
                    return problem
            elif turns and turns[-1][1] == role:
                turns[-1][2].extend(content)
            else:
                turns.append((index, role, list(content)))
        if not turns or turns[0][1] != "user":
            return 'messages: the first message must use the "user" role.'
        problem = self._check_thinking(body, turns)
        if problem is not None:
            return problem
        unanswered: set[str] = set()
        for index, role, blocks in turns:
            if not blocks:
                continue  # the empty final assistant message
            problem = _check_blocks(index, blocks, unanswered)
            if problem is not None:
                return problem
            unanswered = {b["id"] for b in blocks if b.get("type") == "tool_use"} if role == "assistant" else set()
        marks = [block["cache_control"] for block in _prompt_blocks(body) if _marked(block)]
        if len(marks) > MAX_BREAKPOINTS:
            return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marks)}."
        automatic = body.get("cache_control")
        return _check_cache_controls([*marks, *([] if automatic is None else [automatic])])

    def _check_thinking(self, body: JSONObject, turns: list[tuple[int, str, list[Any]]]) -> str | None:
        for index, role, blocks in turns:
            for number, block in enumerate(blocks):
                kind = block.get("type")
                where = f"messages.{index}.content.{number}"
                if kind in _THINKING_BLOCKS and role != "assistant":
                    return f"{where}: {kind} blocks may only appear in assistant messages."
                if kind == "thinking" and block.get("signature") != self._sign(block.get("thinking")):
                    return f"{where}: Invalid `signature` in `thinking` block."
                if kind == "redacted_thinking" and block.get("data") not in self._redacted:
                    return f"{where}: Invalid `data` in `redacted_thinking` block."
        thinking = body.get("thinking")
        if not isinstance(thinking, dict) or not _thinking_enabled(body):
            return None
        budget = thinking.get("budget_tokens")
        if thinking.get("type") == "enabled":
            if not isinstance(budget, int) or budget < MIN_BUDGET_TOKENS:
                return f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_BUDGET_TOKENS}"
            if not body["max_tokens"] > budget:
                return f"`max_tokens` must be greater than `thinking.budget_tokens`. {_THINKING_DOCS}"
        if len(turns) >= 2 and turns[-1][1] == "user" and turns[-2][1] == "assistant":
            results = any(block.get("type") == "tool_result" for block in turns[-1][2])
            index, _, blocks = turns[-2]
            first = blocks[0].get("type") if blocks else None
            if results and first not in _THINKING_BLOCKS:
                return (
                    f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                    f"`{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking "
                    "block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you "
                    "include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. "
                    + _THINKING_DOCS
                )
        return None

    def _sign(self, thinking: object) -> str:
        digest = hmac.new(self._secret, str(thinking).encode(), hashlib.sha256).digest()
        return base64.b64encode(b"\x12" + digest).decode()

    def _thinking_block(self, body: JSONObject, turn: FakeTurn) -> JSONObject | None:
        """The answer's thinking block, whole, or ``None`` when it has none."""
        if not (turn.reasoning or _thinking_enabled(body)):
            return None
        if self.redact_thinking:
            sealed = hmac.new(self._secret, b"redacted:" + turn.reasoning.encode(), hashlib.sha256).digest()
            data = base64.b64encode(b"\x0e" + sealed).decode()
            with self._lock:
                self._redacted.add(data)
            return {"type": "redacted_thinking", "data": data}
        return {"type": "thinking", "thinking": turn.reasoning, "signature": self._sign(turn.reasoning)}

    def position(self, body: JSONObject) -> tuple[int, str | None]:
        """Assistant turns since the user's last turn, and its text.

        As the API does, consecutive messages of one role are one turn (``system`` messages between them do not
        count); a user turn that holds tool results continues the assistant's work, even with text beside them
        (Claude Code adds reminders there), so only a user turn without any starts the script again.
        """
        turns: list[tuple[str, list[JSONObject]]] = []
        for message in body["messages"]:
            role = message.get("role")
            if role == "system":
                continue
            if turns and turns[-1][0] == role:
                turns[-1][1].append(message)
            else:
                turns.append((str(role), [message]))
        last_user = max((i for i, (role, group) in enumerate(turns) if _is_user_turn(role, group)), default=-1)
        assistant_turns = sum(1 for role, _ in turns[last_user + 1 :] if role == "assistant")
        if last_user < 0:
            return assistant_turns, None
        return assistant_turns, "".join(_text(message.get("content")) for message in turns[last_user][1])

    def call_id(self, answer: int, index: int) -> str:
        return f"toolu_fake{answer}_{index}"

    def stream(self, body: JSONObject, turn: FakeTurn) -> Iterator[bytes]:
        usage = self._usage(body)
        message = {**self._message(body, turn, []), "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        yield sse({"type": "message_start", "message": message}, "message_start")
        yield sse({"type": "ping"}, "ping")
        for index, (block, deltas) in enumerate(self._blocks(body, turn)):
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
        thinking = self._thinking_block(body, turn)
        if thinking is not None:
            content.append(thinking)
        if turn.text:
            content.append({"type": "text", "text": turn.text})
        for call in turn.calls:
            content.append({"type": "tool_use", "id": call.call_id, "name": call.name, "input": _input(call.arguments)})
        usage = {**self._usage(body), "output_tokens": turn.output_tokens}
        return {**self._message(body, turn, content), "stop_reason": _stop_reason(turn), "usage": usage}

    async def _count_tokens(self, request: Request) -> Response:
        recorded, body = await self.record(request)
        if self.api_key is not None and not self.authorized(recorded.headers, self.api_key):
            return self.error_response(401, "Invalid API key.")
        if not isinstance(body, dict):
            return self.error_response(400, "The body must be a JSON object.")
        problem = self._check_prompt(body)
        if problem is not None:
            return self.error_response(400, problem)
        blocks = _prompt_blocks(body)
        tokens = sum(estimate_tokens(orjson.dumps(block, option=orjson.OPT_SORT_KEYS)) for block in blocks)
        return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")

    async def _models(self, request: Request) -> Response:
        recorded, _ = await self.record(request)
        if self.api_key is not None and not self.authorized(recorded.headers, self.api_key):
            return self.error_response(401, "Invalid API key.")
        data = [
            {"type": "model", "id": model, "display_name": model, "created_at": "2025-01-01T00:00:00Z"}
            for model in self.models
        ]
        listing = {"data": data, "has_more": False, "first_id": self.models[0], "last_id": self.models[-1]}
        return Response(orjson.dumps(listing), media_type="application/json")

    def error_response(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        error = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
        return Response(orjson.dumps(error), status, headers=dict(headers or {}), media_type="application/json")

    def _message(self, body: JSONObject, turn: FakeTurn, content: list[JSONObject]) -> JSONObject:
        return {
            "id": f"msg_fake{turn.answer_id}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_sequence": None,
        }

    def _blocks(self, body: JSONObject, turn: FakeTurn) -> Iterator[tuple[JSONObject, list[JSONObject]]]:
        thinking = self._thinking_block(body, turn)
        if thinking is not None and thinking["type"] == "redacted_thinking":
            yield thinking, []
        elif thinking is not None:
            deltas = [{"type": "thinking_delta", "thinking": piece} for piece in self.chunks(turn.reasoning)]
            signature = {"type": "signature_delta", "signature": thinking["signature"]}
            yield {"type": "thinking", "thinking": "", "signature": ""}, [*deltas, signature]
        if turn.text:
            yield {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in self.chunks(turn.text)]
        for call in turn.calls:
            pieces = ["", *self.chunks(call.arguments)]  # the real API opens with an empty partial_json
            start = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
            yield start, [{"type": "input_json_delta", "partial_json": p} for p in pieces]

    def _usage(self, body: JSONObject) -> JSONObject:
        blocks = _prompt_blocks(body)
        breakpoints = [n for n, block in enumerate(blocks, 1) if _marked(block)]
        if isinstance(body.get("cache_control"), dict) and blocks:
            breakpoints.append(len(blocks))  # automatic caching: a breakpoint on the last block
        unmarked = [_without_cache_control(block) for block in blocks]
        read, written, uncached = self._cache.lookup(unmarked, write_at=breakpoints)
        return {"input_tokens": uncached, "cache_creation_input_tokens": written, "cache_read_input_tokens": read}


def _thinking_enabled(body: JSONObject) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _check_blocks(index: int, blocks: Any, unanswered: set[str]) -> str | None:
    if not isinstance(blocks, list) or not blocks:
        return f"messages.{index}: content must be a non-empty string or array."
    answered: set[str] = set()
    seen_other = False
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and not block.get("text"):
            return f"messages.{index}: text content blocks must be non-empty."
        if kind == "text" and not str(block["text"]).strip():
            return f"messages.{index}: text content blocks must contain non-whitespace text."
        if kind == "tool_use" and not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
            return f"messages.{index}: tool_use blocks need a string 'id' and 'name'."
        if kind == "tool_result":
            if seen_other:
                return f"messages.{index}: tool_result blocks must come before any other content."
            if not isinstance(block.get("tool_use_id"), str) or block["tool_use_id"] not in unanswered:
                return f"messages.{index}: unexpected tool_use_id {block.get('tool_use_id')!r} in tool_result."
            answered.add(block["tool_use_id"])
        else:
            seen_other = True
    if unanswered - answered:
        return f"messages.{index}: tool_use ids {sorted(unanswered - answered)} have no tool_result right after."
    return None


def _marked(block: Any) -> bool:
    return isinstance(block, dict) and block.get("cache_control") is not None


def _check_cache_controls(marks: list[Any]) -> str | None:
    """Breakpoints in prompt order: ephemeral, a ttl of 5m or 1h, and no 1h one after a 5m one."""
    seen_short = False
    for mark in marks:
        if not isinstance(mark, dict) or mark.get("type") != "ephemeral":
            return "cache_control.type: Input should be 'ephemeral'."
        ttl = mark.get("ttl", "5m")
        if ttl not in ("5m", "1h"):
            return "cache_control.ttl: Input should be '5m' or '1h'."
        if ttl == "1h" and seen_short:
            return "A ttl='1h' cache_control block must not come after a ttl='5m' cache_control block."
        seen_short = seen_short or ttl == "5m"
    return None


def _check_sampling(body: JSONObject) -> str | None:
    """The sampling parameters' ranges, and a tool choice that extended thinking allows (auto or none)."""
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1):
            return f"{name}: Input should be a number between 0 and 1."
    choice = body.get("tool_choice")
    if choice is None:
        return None
    choice_kind = choice.get("type") if isinstance(choice, dict) else None
    if choice_kind not in ("auto", "any", "tool", "none"):
        return "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'."
    if choice_kind == "tool" and not isinstance(choice.get("name"), str):
        return "tool_choice.tool.name: Field required."
    thinking = body.get("thinking")
    if choice_kind in ("any", "tool") and isinstance(thinking, dict) and thinking.get("type") == "enabled":
        return "Thinking may not be enabled when tool_choice forces tool use."
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


def _is_user_turn(role: str, messages: list[JSONObject]) -> bool:
    """A user turn that holds no tool results (one that does continues the assistant's turn)."""
    if role != "user":
        return False
    return not any(
        isinstance(block, dict) and block.get("type") == "tool_result"
        for message in messages
        if isinstance(message.get("content"), list)
        for block in message["content"]
    )


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
