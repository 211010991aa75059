"""The built-in scripted model: deterministic, keyless, and paced like a real one.

It is the default model of ``tether serve`` and the stand-in for a real model in tests and benchmarks. The ``model``
field of the request picks the behaviour:

* ``script:<name>`` follows a named :data:`Script`, one step per model turn (see :func:`load_scripts`);
* ``echo`` answers with the text of the last user message;
* anything else runs a small heuristic policy that is enough for compliance suites: summarise a tool output that
  ends the context, else call the chosen function tool with arguments made up from its JSON schema, else answer
  the last user message.

Every turn reads only the tail of the context (at most ``_LOOKBACK`` items, walking backwards) and takes its usage
from ``context_tokens``/``cached_tokens``, so its cost never grows with the conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

import orjson

from tether.protocol.errors import ErrorType, ProtocolError
from tether.protocol.input_items import as_function_call, as_function_call_output
from tether.protocol.items import estimate_tokens
from tether.protocol.model_events import Finish, ModelEvent, ReasoningSummaryDelta, TextDelta, ToolCallDelta, Usage
from tether.providers.base import ProviderRequest
from tether.types import Item, JSONObject

# Enough for the widest sensible parallel tool round (outputs + the newest call) and a short run of
# system/developer messages before the last user message; well below anything that grows with history.
_LOOKBACK = 40
_CHUNK_MIN = 4
_CHUNK_MAX = 16
_SNIPPET_CHARS = 80
_SCHEMA_DEPTH = 8

_MODEL_ITEM_TYPES = frozenset({"function_call", "reasoning"})
_TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
_PLACE_KEYS = frozenset({"location", "city", "place", "town", "region", "country", "address", "destination"})
_QUERY_KEYS = frozenset({"query", "q", "question", "prompt", "text", "message", "input", "search"})
_STRING_FORMATS = {
    "date": "2025-01-01",
    "date-time": "2025-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
}
_PROPER_NOUNS = re.compile(r"[A-Z][\w'-]*(?:,?\s+[A-Z][\w'-]*)*")
_WORDS = re.compile(r"\S+\s*|\s+")
_CALL_ID = re.compile(r"call_[0-9a-f]{24}_(\d{1,9})")

# A model whose turns fail once started (after response.created), for testing failure paths of clients and gateway.
FAIL_MODEL = "fail"


@dataclass(frozen=True, slots=True)
class ScriptedTiming:
    """How fast the scripted model answers.

    Attributes:
        ttft_s: seconds before the first event (time to first token).
        tokens_per_second: output pace after the first event, counting about four characters per token;
            ``0`` means unlimited (no sleeping at all).
    """

    ttft_s: float = 0.0
    tokens_per_second: float = 0.0

    def __post_init__(self) -> None:
        if self.ttft_s < 0 or self.tokens_per_second < 0:
            raise ValueError("ScriptedTiming values must not be negative")


@dataclass(frozen=True, slots=True)
class ScriptToolCall:
    """One function call of a script step; ``arguments`` is JSON text."""

    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One model turn of a script: optional reasoning summary, then text, then (parallel) tool calls.

    A step with tool calls ends the turn waiting for their outputs; its text, if any, is commentary before them.
    """

    text: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ScriptToolCall, ...] = ()

    def __post_init__(self) -> None:
        if not self.text and not self.tool_calls:
            raise ValueError("a script step needs text or tool calls")


Script: TypeAlias = Sequence[ScriptStep]

_FINAL_STEP = ScriptStep(text="Done.")


class ScriptError(ValueError):
    """A scripts file or object does not have the expected shape."""


def load_scripts(path: str | os.PathLike[str]) -> dict[str, Script]:
    """Read scripts from a JSON file shaped ``{"scripts": {"name": [step, ...]}}``.

    A step is ``{"text": "...", "reasoning": "optional summary"}`` or
    ``{"tool_calls": [{"name": "read_file", "arguments": {...}}, ...]}`` (several calls run in parallel); a step
    may carry both ``text`` and ``tool_calls``.

    Args:
        path: the JSON file.

    Returns:
        The scripts by name.

    Raises:
        OSError: the file cannot be read.
        ScriptError: the file is not JSON or a script has a bad shape (the message names the faulty field).
    """
    with open(path, "rb") as file:
        raw = file.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ScriptError(f"{os.fspath(path)}: not valid JSON: {exc}") from None
    return parse_scripts(data, source=os.fspath(path))


def parse_scripts(data: object, *, source: str = "scripts") -> dict[str, Script]:
    """Build scripts from already-decoded JSON (the shape :func:`load_scripts` reads)."""
    if not isinstance(data, dict) or not isinstance(data.get("scripts"), dict):
        raise ScriptError(f'{source}: expected an object with a "scripts" object')
    scripts: dict[str, Script] = {}
    for name, steps in data["scripts"].items():
        where = f"{source}: scripts.{name}"
        if not name:
            raise ScriptError(f"{source}: script names must not be empty")
        if not isinstance(steps, list):
            raise ScriptError(f"{where}: expected a list of steps")
        scripts[name] = tuple(_parse_step(step, f"{where}[{index}]") for index, step in enumerate(steps))
    return scripts


def _parse_step(step: object, where: str) -> ScriptStep:
    if not isinstance(step, dict):
        raise ScriptError(f"{where}: expected an object")
    unknown = sorted(set(step) - {"text", "reasoning", "tool_calls"})
    if unknown:
        raise ScriptError(f"{where}: unknown field(s) {', '.join(unknown)}")
    text, reasoning, calls = step.get("text"), step.get("reasoning"), step.get("tool_calls")
    for field, value in (("text", text), ("reasoning", reasoning)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ScriptError(f"{where}.{field}: expected a non-empty string")
    if calls is not None and (not isinstance(calls, list) or not calls):
        raise ScriptError(f"{where}.tool_calls: expected a non-empty list")
    if text is None and calls is None:
        raise ScriptError(f'{where}: a step needs "text" or "tool_calls"')
    tool_calls = tuple(_parse_tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(calls or ()))
    return ScriptStep(text=text, reasoning=reasoning, tool_calls=tool_calls)


def _parse_tool_call(call: object, where: str) -> ScriptToolCall:
    if not isinstance(call, dict):
        raise ScriptError(f"{where}: expected an object")
    unknown = sorted(set(call) - {"name", "arguments"})
    if unknown:
        raise ScriptError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name, arguments = call.get("name"), call.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise ScriptError(f"{where}.name: expected a non-empty string")
    if not isinstance(arguments, dict):
        raise ScriptError(f"{where}.arguments: expected an object")
    return ScriptToolCall(name=name, arguments=orjson.dumps(arguments).decode())


@dataclass(frozen=True, slots=True)
class _Call:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class _Turn:
    """What the model says in one turn, before the output budget and pacing."""

    text: str = ""
    reasoning: str = ""
    calls: tuple[_Call, ...] = ()
    phase: Literal["commentary", "final_answer"] | None = None


class _Tail:
    """The newest items of a context, read backwards on demand, each at most once, never more than ``limit``."""

    def __init__(self, context: Sequence[Item], limit: int = _LOOKBACK) -> None:
        self._context = context
        self._end = len(context)
        self._limit = min(limit, self._end)
        self._read: list[Item] = []

    def __iter__(self) -> Iterator[Item]:
        for back in range(self._limit):
            if back == len(self._read):
                self._read.append(self._context[self._end - 1 - back])
            yield self._read[back]

    def newest(self) -> Item | None:
        return next(iter(self), None)


class ScriptedProvider:
    """The built-in deterministic model (see the module docstring for what each model name does).

    Args:
        timing: time to first token and output pace.
        scripts: the scripts ``script:<name>`` models follow.
    """

    name = "scripted"

    def __init__(self, timing: ScriptedTiming, scripts: Mapping[str, Script] | None = None) -> None:
        self.timing = timing
        self._scripts: dict[str, Script] = dict(scripts or {})

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ModelEvent, None]:
        """Run one turn: plan it from the tail of the context, then emit it at the configured pace.

        Raises:
            ProtocolError: ``model_not_found`` (400) for ``script:<name>`` with no such script.
        """
        turn = self._plan(request)
        deltas, finish = _render(turn, request)
        if request.model == FAIL_MODEL:
            raise ProtocolError(
                500, "server_error", "The scripted model 'fail' failed on purpose.", error_type=ErrorType.SERVER
            )
        loop = asyncio.get_running_loop()
        if self.timing.ttft_s > 0:
            await asyncio.sleep(self.timing.ttft_s)
        rate = self.timing.tokens_per_second
        # The pace is spread over characters so the total time matches the usage's output_tokens exactly.
        seconds_per_char = finish.usage.output_tokens / rate / max(1, _chars(deltas)) if rate > 0 else 0.0
        start, sent = loop.time(), 0
        for delta in deltas:
            if sent and seconds_per_char:
                await _sleep_until(loop, start + sent * seconds_per_char)
            yield delta
            sent += len(_payload(delta))
        if seconds_per_char:
            await _sleep_until(loop, start + sent * seconds_per_char)
        yield finish

    async def aclose(self) -> None:
        """Nothing to release."""

    def check_model(self, model: str) -> None:
        """Refuse ``script:NAME`` before the turn starts when no such script is loaded.

        Raises:
            ProtocolError: ``model_not_found`` (400).
        """
        if model.startswith("script:") and model.removeprefix("script:") not in self._scripts:
            raise _no_script(model)

    def _plan(self, request: ProviderRequest) -> _Turn:
        tail = _Tail(request.context)
        if request.model.startswith("script:"):
            return self._script_turn(request, tail, request.model.removeprefix("script:"))
        if request.model == "echo":
            user_text = _last_user_text(tail)
            return _Turn(text="(no user message)" if user_text is None else user_text or "(empty message)")
        return _heuristic_turn(request, tail)

    def _script_turn(self, request: ProviderRequest, tail: _Tail, script_name: str) -> _Turn:
        script = self._scripts.get(script_name)
        if script is None:
            raise _no_script(request.model)
        index = _step_index(tail)
        step = script[index] if index < len(script) else _FINAL_STEP
        calls = tuple(
            _Call(_call_id(request, index, position), call.name, call.arguments)
            for position, call in enumerate(step.tool_calls)
        )
        return _Turn(
            text=step.text or "",
            reasoning=step.reasoning or "",
            calls=calls,
            phase="commentary" if calls and step.text else None,
        )


def _heuristic_turn(request: ProviderRequest, tail: _Tail) -> _Turn:
    newest = tail.newest()
    text, subject = "", "the conversation"
    calls: tuple[_Call, ...] = ()
    if newest is not None and newest.get("type") == "function_call_output":
        text, subject = _summarise_outputs(tail), "the tool output"
    else:
        user_text = _last_user_text(tail)
        if user_text:
            subject = _snippet(user_text)
        tool = _chosen_tool(request.tools, request.tool_choice)
        if tool is not None:
            arguments = _object_for(tool.get("parameters"), user_text or "", 0)
            calls = (_Call(_call_id(request, 0, 0), tool["name"], orjson.dumps(arguments).decode()),)
        elif user_text:
            text = f'You said: "{subject}". This is a deterministic reply from tether\'s scripted model.'
        else:
            text = "Hello! This is tether's scripted model; send a user message and I will answer it."
    reasoning = f"Thinking about: {subject}" if _wants_reasoning(request.params) else ""
    return _Turn(text=text, reasoning=reasoning, calls=calls)


def _step_index(tail: _Tail) -> int:
    """The number of model turns since the last user message: the script step to play now.

    A model turn is a run of consecutive model items (reasoning, assistant messages, function calls). The call ids
    this provider generates carry their step, so the walk stops at the newest of them: the result is that step,
    plus one for its own turn, plus the turns after it. With foreign call ids, it counts turns back to the last user
    message, within the lookback. A user message right after tool outputs (text an agent sends with its tool
    results, as Claude Code's reminders) continues the round instead of starting the script again.
    """
    turns, in_turn, user_seen = 0, False, False
    for item in tail:
        if _is_message(item, "user"):
            user_seen = True  # whether it starts a new round depends on what precedes it
            continue
        if user_seen and item.get("type") != "function_call_output" and not _is_instruction(item):
            return turns
        user_seen = False
        if not _is_model_item(item):
            in_turn = False
            continue
        if (call := as_function_call(item)) is not None:
            match = _CALL_ID.fullmatch(call["call_id"])
            if match is not None:
                return int(match.group(1)) + turns + (0 if in_turn else 1)
        if not in_turn:
            turns, in_turn = turns + 1, True
    return turns


def _is_instruction(item: Item) -> bool:
    return _is_message(item, "system") or _is_message(item, "developer")


def _call_id(request: ProviderRequest, step: int, position: int) -> str:
    key = f"{request.model}/{step}/{position}/{request.response_id}".encode()
    return f"call_{hashlib.blake2b(key, digest_size=12).hexdigest()}_{step}"


def _render(turn: _Turn, request: ProviderRequest) -> tuple[list[ModelEvent], Finish]:
    """Chunk the turn into deltas, cut them at ``max_output_tokens``, and account for usage."""
    limit = request.params.get("max_output_tokens")
    budget = limit * 4 if isinstance(limit, int) and not isinstance(limit, bool) else None
    deltas: list[ModelEvent] = []
    truncated = False
    for delta in _deltas(turn):
        size = len(_payload(delta))
        if budget is not None and size > budget:
            if budget:
                deltas.append(_cut(delta, budget))
            truncated = True
            break
        deltas.append(delta)
        budget = None if budget is None else budget - size

    input_tokens = request.context_tokens + (estimate_tokens(request.instructions) if request.instructions else 0)
    cached = min(request.cached_tokens, input_tokens)
    reasoning = [delta for delta in deltas if isinstance(delta, ReasoningSummaryDelta)]
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=estimate_tokens("".join(_payload(delta) for delta in deltas)),
        cached_tokens=cached,
        cache_write_tokens=input_tokens - cached,
        reasoning_tokens=estimate_tokens("".join(delta.text for delta in reasoning)),
    )
    return deltas, Finish(usage=usage, reason="max_output_tokens" if truncated else "stop")


def _deltas(turn: _Turn) -> Iterator[ModelEvent]:
    for piece in _chunks(turn.reasoning):
        yield ReasoningSummaryDelta(piece)
    for piece in _chunks(turn.text):
        yield TextDelta(piece, phase=turn.phase)
    for call in turn.calls:
        for piece in _chunks(call.arguments):
            yield ToolCallDelta(call_id=call.call_id, name=call.name, arguments=piece)


def _cut(delta: ModelEvent, size: int) -> ModelEvent:
    if isinstance(delta, ToolCallDelta):
        return replace(delta, arguments=delta.arguments[:size])
    if isinstance(delta, TextDelta | ReasoningSummaryDelta):
        return replace(delta, text=delta.text[:size])
    return delta


def _chunks(text: str) -> list[str]:
    """Split text into deterministic pieces of about 4–16 characters, at word boundaries where possible."""
    pieces: list[str] = []
    current = ""
    for word in _WORDS.findall(text):
        if current and len(current) + len(word) > _CHUNK_MAX and len(current) >= _CHUNK_MIN:
            pieces.append(current)
            current = ""
        current += word
        while len(current) > _CHUNK_MAX:
            pieces.append(current[:_CHUNK_MAX])
            current = current[_CHUNK_MAX:]
    if current:
        pieces.append(current)
    return pieces


def _payload(event: ModelEvent) -> str:
    if isinstance(event, ToolCallDelta):
        return event.arguments
    if isinstance(event, TextDelta | ReasoningSummaryDelta):
        return event.text
    return ""


def _chars(events: Sequence[ModelEvent]) -> int:
    return sum(len(_payload(event)) for event in events)


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


# -- reading the context ---------------------------------------------------------------------------------------


def _is_message(item: Item, role: str) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == role


def _is_model_item(item: Item) -> bool:
    return item.get("type") in _MODEL_ITEM_TYPES or _is_message(item, "assistant")


def _last_user_text(tail: _Tail) -> str | None:
    for item in tail:
        if _is_message(item, "user"):
            return _text_of(item.get("content"))
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") in _TEXT_PART_TYPES and isinstance(part.get("text"), str)
        )
    return ""


def _summarise_outputs(tail: _Tail) -> str:
    count = chars = 0
    for item in tail:
        output = as_function_call_output(item)
        if output is None:
            break
        count += 1
        chars += len(_text_of(output["output"]))
    if count == 1:
        return f"The tool returned {chars} characters."
    return f"The {count} tools returned {chars} characters in total."


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SNIPPET_CHARS else flat[: _SNIPPET_CHARS - 1] + "…"


def _wants_reasoning(params: JSONObject) -> bool:
    reasoning = params.get("reasoning")
    if not isinstance(reasoning, dict):
        return False
    return bool(reasoning.get("summary")) or reasoning.get("effort") not in (None, "none")


# -- tool calls ------------------------------------------------------------------------------------------------


def _chosen_tool(tools: Sequence[JSONObject], tool_choice: str | JSONObject) -> JSONObject | None:
    functions = [tool for tool in tools if tool.get("type") == "function" and isinstance(tool.get("name"), str)]
    if not functions or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        if tool_choice.get("type") == "function":
            return next((tool for tool in functions if tool["name"] == tool_choice.get("name")), functions[0])
        if tool_choice.get("type") == "allowed_tools":
            allowed = tool_choice.get("tools")
            names = (
                {tool.get("name") for tool in allowed if isinstance(tool, dict)} if isinstance(allowed, list) else set()
            )
            return next((tool for tool in functions if tool["name"] in names), None)
    return functions[0]


def _object_for(schema: Any, user_text: str, depth: int) -> JSONObject:
    """Arguments for an object schema: every required property, with a plausible deterministic value."""
    if not isinstance(schema, dict):
        return {}
    properties = schema.get("properties")
    required = schema.get("required")
    if not isinstance(properties, dict) or not isinstance(required, list):
        return {}
    return {key: _value_for(key, properties.get(key), user_text, depth + 1) for key in required if isinstance(key, str)}


def _value_for(key: str, schema: Any, user_text: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _SCHEMA_DEPTH:
        return "example"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return _value_for(key, options[0], user_text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return _object_for(schema, user_text, depth)
    if kind == "null":
        return None
    return _string_for(key, schema, user_text)


def _string_for(key: str, schema: JSONObject, user_text: str) -> str:
    name = key.lower()
    if name in _PLACE_KEYS:
        places = [match for match in _PROPER_NOUNS.findall(user_text) if match != "I"]
        if places:
            return str(places[-1])
    if name in _QUERY_KEYS and user_text.strip():
        return _snippet(user_text)
    return _STRING_FORMATS.get(str(schema.get("format")), "example")


def _no_script(model: str) -> ProtocolError:
    name = model.removeprefix("script:")
    return ProtocolError(
        400,
        "model_not_found",
        f"The model '{model}' does not exist: no script named '{name}' is loaded.",
        param="model",
    )
