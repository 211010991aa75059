from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import pytest

from tether.protocol.errors import ProtocolError
from tether.protocol.items import estimate_tokens
from tether.protocol.model_events import Finish, ModelEvent, ReasoningSummaryDelta, TextDelta, ToolCallDelta
from tether.providers import Provider, ProviderRequest, Script, ScriptedProvider, ScriptedTiming, load_scripts
from tether.providers.scripted import ScriptError, ScriptStep, ScriptToolCall, parse_scripts
from tether.types import Item, JSONObject

WEATHER_TOOL: JSONObject = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state"}},
        "required": ["location"],
    },
}

SCRIPTS: dict[str, Script] = {
    "agent": (
        ScriptStep(reasoning="Look around first.", tool_calls=(ScriptToolCall("list_files", '{"path":"."}'),)),
        ScriptStep(
            text="Reading both files.",
            tool_calls=(
                ScriptToolCall("read_file", '{"path":"a.py"}'),
                ScriptToolCall("read_file", '{"path":"b.py"}'),
            ),
        ),
        ScriptStep(text="Both files look fine to me."),
    ),
}


def user(content: Any) -> Item:
    return {"type": "message", "role": "user", "content": content}


def make_request(
    context: Sequence[Item],
    *,
    model: str = "scripted",
    tools: list[JSONObject] | None = None,
    tool_choice: str | JSONObject = "auto",
    params: JSONObject | None = None,
    instructions: str | None = None,
    response_id: str = "resp_test",
    context_tokens: int = 100,
    cached_tokens: int = 0,
) -> ProviderRequest:
    return ProviderRequest(
        model=model,
        instructions=instructions,
        context=context,
        new_items=context[-1:],
        tools=tools or [],
        tool_choice=tool_choice,
        context_tokens=context_tokens,
        cached_tokens=cached_tokens,
        previous_response_id=None,
        response_id=response_id,
        params=params or {},
    )


async def collect(request: ProviderRequest, provider: ScriptedProvider | None = None) -> list[ModelEvent]:
    provider = provider or ScriptedProvider(ScriptedTiming(), SCRIPTS)
    events = [event async for event in provider.stream(request)]
    assert isinstance(events[-1], Finish)
    assert not any(isinstance(event, Finish) for event in events[:-1])
    return events


def finish_of(events: list[ModelEvent]) -> Finish:
    last = events[-1]
    assert isinstance(last, Finish)
    return last


def text_of(events: list[ModelEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def reasoning_of(events: list[ModelEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, ReasoningSummaryDelta))


def calls_of(events: list[ModelEvent]) -> dict[str, tuple[str, str]]:
    """call_id -> (name, joined arguments), in order of first appearance."""
    calls: dict[str, tuple[str, str]] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            name, arguments = calls.get(event.call_id, (event.name, ""))
            calls[event.call_id] = (name, arguments + event.arguments)
    return calls


def output_items(events: list[ModelEvent]) -> list[Item]:
    """The output items the events describe, as the engine would append them to the context."""
    items: list[Item] = []
    reasoning, text = reasoning_of(events), text_of(events)
    if reasoning:
        items.append({"type": "reasoning", "summary": [{"type": "summary_text", "text": reasoning}]})
    if text:
        items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
    for call_id, (name, arguments) in calls_of(events).items():
        items.append({"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments})
    return items


def tool_outputs(events: list[ModelEvent], output: str = "ok") -> list[Item]:
    return [{"type": "function_call_output", "call_id": call_id, "output": output} for call_id in calls_of(events)]


# -- text ------------------------------------------------------------------------------------------------------


async def test_text_streams_in_several_small_deltas_that_join_to_the_reply() -> None:
    events = await collect(make_request([user("Say hello in exactly 3 words.")]))
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert len(deltas) >= 3
    assert all(1 <= len(delta.text) <= 16 for delta in deltas)
    assert "Say hello in exactly 3 words." in text_of(events)
    assert finish_of(events).reason == "stop"


async def test_reply_without_any_user_message_is_still_text() -> None:
    events = await collect(make_request([{"type": "message", "role": "system", "content": "Be brief."}]))
    assert text_of(events)


async def test_multi_turn_history_answers_the_last_user_message() -> None:
    context = [
        user("My name is Alice."),
        {"type": "message", "role": "assistant", "content": "Hello Alice!"},
        user("What is my name?"),
    ]
    events = await collect(make_request(context))
    assert "What is my name?" in text_of(events)


# -- heuristic tool calls --------------------------------------------------------------------------------------


async def test_function_tool_is_called_with_streamed_arguments_from_its_schema() -> None:
    context = [user("What's the weather like in San Francisco?")]
    events = await collect(make_request(context, tools=[WEATHER_TOOL]))
    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    assert len(deltas) >= 2
    assert not any(isinstance(event, TextDelta) for event in events)
    ((call_id, (name, arguments)),) = calls_of(events).items()
    assert call_id.startswith("call_")
    assert name == "get_weather"
    assert json.loads(arguments) == {"location": "San Francisco"}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string", "enum": ["celsius", "fahrenheit"]}, "celsius"),
        ({"type": "string"}, "example"),
        ({"type": "string", "format": "date"}, "2025-01-01"),
        ({"type": "integer"}, 1),
        ({"type": "number"}, 1),
        ({"type": "boolean"}, True),
        ({"type": "array", "items": {"type": "string"}}, []),
        ({"type": "object"}, {}),
        ({"type": ["null", "integer"]}, 1),
        ({"anyOf": [{"type": "boolean"}, {"type": "string"}]}, True),
        (
            {
                "type": "object",
                "properties": {"city": {"type": "string"}, "x": {"type": "string"}},
                "required": ["city"],
            },
            {"city": "Paris, France"},
        ),
    ],
)
async def test_required_arguments_get_plausible_values(schema: JSONObject, expected: Any) -> None:
    tool: JSONObject = {
        "type": "function",
        "name": "probe",
        "parameters": {
            "type": "object",
            "properties": {"value": schema, "optional": {"type": "string"}},
            "required": ["value"],
        },
    }
    events = await collect(make_request([user("Is it sunny in Paris, France today?")], tools=[tool]))
    ((_, arguments),) = calls_of(events).values()
    assert json.loads(arguments) == {"value": expected}


async def test_query_like_arguments_take_the_user_message() -> None:
    tool: JSONObject = {
        "type": "function",
        "name": "search",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
    events = await collect(make_request([user("  latest   tether release ")], tools=[tool]))
    ((_, arguments),) = calls_of(events).values()
    assert json.loads(arguments) == {"query": "latest tether release"}


async def test_tool_without_parameters_is_called_with_an_empty_object() -> None:
    events = await collect(make_request([user("Ping.")], tools=[{"type": "function", "name": "ping"}]))
    assert list(calls_of(events).values()) == [("ping", "{}")]


async def test_tool_choice_none_answers_with_text() -> None:
    events = await collect(make_request([user("Weather in Oslo?")], tools=[WEATHER_TOOL], tool_choice="none"))
    assert not calls_of(events)
    assert text_of(events)


async def test_non_function_tools_are_ignored() -> None:
    events = await collect(make_request([user("Find news.")], tools=[{"type": "web_search"}]))
    assert not calls_of(events)
    assert text_of(events)


@pytest.mark.parametrize(
    "tool_choice",
    [
        {"type": "function", "name": "second"},
        {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "second"}]},
    ],
)
async def test_tool_choice_picks_the_named_function(tool_choice: JSONObject) -> None:
    tools: list[JSONObject] = [{"type": "function", "name": "first"}, {"type": "function", "name": "second"}]
    events = await collect(make_request([user("Go.")], tools=tools, tool_choice=tool_choice))
    assert [name for name, _ in calls_of(events).values()] == ["second"]


async def test_a_trailing_tool_output_is_summarised() -> None:
    first = await collect(make_request([user("Weather in Oslo?")], tools=[WEATHER_TOOL]))
    context = [user("Weather in Oslo?"), *output_items(first), *tool_outputs(first, output="Sunny, 21 C")]
    events = await collect(make_request(context, tools=[WEATHER_TOOL]))
    assert not calls_of(events)
    assert text_of(events) == "The tool returned 11 characters."


async def test_several_trailing_tool_outputs_are_summarised_together() -> None:
    context = [
        user("Go."),
        {"type": "function_call_output", "call_id": "a", "output": "abc"},
        {"type": "function_call_output", "call_id": "b", "output": [{"type": "input_text", "text": "de"}]},
    ]
    events = await collect(make_request(context))
    assert text_of(events) == "The 2 tools returned 5 characters in total."


# -- scripts ---------------------------------------------------------------------------------------------------


async def test_script_step_with_several_calls_makes_parallel_calls() -> None:
    context: list[Item] = [user("Review the code.")]
    first = await collect(make_request(context, model="script:agent"))
    context += [*output_items(first), *tool_outputs(first)]
    events = await collect(make_request(context, model="script:agent", response_id="resp_2"))
    assert text_of(events) == "Reading both files."
    assert all(event.phase == "commentary" for event in events if isinstance(event, TextDelta))
    calls = calls_of(events)
    assert len(calls) == 2
    assert [(name, json.loads(arguments)) for name, arguments in calls.values()] == [
        ("read_file", {"path": "a.py"}),
        ("read_file", {"path": "b.py"}),
    ]


async def test_script_steps_advance_with_each_tool_round_then_say_done() -> None:
    context: list[Item] = [user("Review the code.")]
    seen: list[tuple[str, str, list[str]]] = []
    for turn in range(5):
        events = await collect(make_request(context, model="script:agent", response_id=f"resp_{turn}"))
        names = [name for name, _ in calls_of(events).values()]
        seen.append((reasoning_of(events), text_of(events), names))
        context += output_items(events)
        if names:
            context += tool_outputs(events)
        else:
            context.append(user("Thanks, once more please."))
    assert seen == [
        ("Look around first.", "", ["list_files"]),
        ("", "Reading both files.", ["read_file", "read_file"]),
        ("", "Both files look fine to me.", []),
        # A new user message starts the script again.
        ("Look around first.", "", ["list_files"]),
        ("", "Reading both files.", ["read_file", "read_file"]),
    ]


async def test_text_sent_with_tool_outputs_continues_the_round() -> None:
    context: list[Item] = [user("Review the code.")]
    first = await collect(make_request(context, model="script:agent", response_id="resp_1"))
    # An agent (Claude Code, through the Messages translation) sends a reminder beside its tool results.
    context += [*output_items(first), *tool_outputs(first), user("<system-reminder>go on</system-reminder>")]

    second = await collect(make_request(context, model="script:agent", response_id="resp_2"))

    assert text_of(second) == "Reading both files."


async def test_script_runs_out_into_done() -> None:
    context: list[Item] = [user("Go.")]
    for turn in range(2):
        events = await collect(make_request(context, model="script:agent", response_id=f"resp_{turn}"))
        context += [*output_items(events), *tool_outputs(events)]
    # Step 2 is a text step; a client that keeps going without a user message runs past the script's end.
    events = await collect(make_request(context, model="script:agent", response_id="resp_2"))
    context += output_items(events)
    events = await collect(make_request(context, model="script:agent", response_id="resp_3"))
    assert text_of(events) == "Done."
    assert not calls_of(events)


async def test_interleaved_calls_and_outputs_count_as_one_round() -> None:
    context: list[Item] = [user("Go.")]
    first = await collect(make_request(context, model="script:agent", response_id="resp_1"))
    context += [*output_items(first), *tool_outputs(first)]
    second = await collect(make_request(context, model="script:agent", response_id="resp_2"))
    calls, outputs = output_items(second), tool_outputs(second)
    context += [calls[0], calls[1], outputs[0], calls[2], outputs[1]]
    events = await collect(make_request(context, model="script:agent", response_id="resp_3"))
    assert text_of(events) == "Both files look fine to me."


async def test_foreign_call_ids_fall_back_to_counting_model_turns() -> None:
    context: list[Item] = [
        user("Go."),
        {"type": "function_call", "call_id": "x1", "name": "list_files", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "x1", "output": "a.py"},
    ]
    events = await collect(make_request(context, model="script:agent"))
    assert [name for name, _ in calls_of(events).values()] == ["read_file", "read_file"]


async def test_call_ids_are_unique_per_response_and_position() -> None:
    context: list[Item] = [user("Go.")]
    first = await collect(make_request(context, model="script:agent"))
    context += [*output_items(first), *tool_outputs(first)]
    one = list(calls_of(await collect(make_request(context, model="script:agent", response_id="resp_a"))))
    two = list(calls_of(await collect(make_request(context, model="script:agent", response_id="resp_b"))))
    assert len(set(one + two)) == 4


async def test_unknown_script_is_model_not_found() -> None:
    with pytest.raises(ProtocolError) as caught:
        await collect(make_request([user("Go.")], model="script:nope"))
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "model_not_found", "model")
    assert "nope" in caught.value.message


# -- echo ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ([user("Repeat after me.")], "Repeat after me."),
        (
            [
                user("older"),
                user(
                    [
                        {"type": "input_text", "text": "Hello "},
                        {"type": "input_image"},
                        {"type": "input_text", "text": "world"},
                    ]
                ),
                {"type": "message", "role": "developer", "content": "Be nice."},
            ],
            "Hello world",
        ),
        ([{"type": "message", "role": "system", "content": "Only system."}], "(no user message)"),
        ([], "(no user message)"),
    ],
)
async def test_echo_repeats_the_last_user_message(context: list[Item], expected: str) -> None:
    events = await collect(make_request(context, model="echo"))
    assert text_of(events) == expected


# -- reasoning -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reasoning", [{"summary": "auto"}, {"effort": "low"}])
async def test_reasoning_summary_comes_before_the_answer(reasoning: JSONObject) -> None:
    events = await collect(make_request([user("Count from 1 to 5.")], params={"reasoning": reasoning}))
    first_text = next(i for i, event in enumerate(events) if isinstance(event, TextDelta))
    assert all(isinstance(event, ReasoningSummaryDelta) for event in events[:first_text])
    assert first_text >= 1
    summary = reasoning_of(events)
    assert summary == "Thinking about: Count from 1 to 5."
    assert finish_of(events).usage.reasoning_tokens == estimate_tokens(summary)


@pytest.mark.parametrize("reasoning", [None, {}, {"effort": "none"}, {"summary": None}])
async def test_no_reasoning_unless_asked(reasoning: JSONObject | None) -> None:
    params = {} if reasoning is None else {"reasoning": reasoning}
    events = await collect(make_request([user("Count from 1 to 5.")], params=params))
    assert not reasoning_of(events)
    assert finish_of(events).usage.reasoning_tokens == 0


# -- output budget and usage -----------------------------------------------------------------------------------


async def test_max_output_tokens_cuts_the_answer() -> None:
    full = text_of(await collect(make_request([user("Tell me a long story about the sea.")])))
    events = await collect(make_request([user("Tell me a long story about the sea.")], params={"max_output_tokens": 5}))
    finish = finish_of(events)
    assert finish.reason == "max_output_tokens"
    assert text_of(events) == full[:20]
    assert finish.usage.output_tokens == 5


async def test_max_output_tokens_can_cut_a_tool_call() -> None:
    events = await collect(
        make_request([user("Weather in San Francisco?")], tools=[WEATHER_TOOL], params={"max_output_tokens": 2})
    )
    assert finish_of(events).reason == "max_output_tokens"
    ((_, arguments),) = calls_of(events).values()
    assert len(arguments) == 8


async def test_an_answer_that_fits_max_output_tokens_exactly_stops_normally() -> None:
    events = await collect(make_request([user("exactly!")], model="echo", params={"max_output_tokens": 2}))
    assert text_of(events) == "exactly!"
    assert finish_of(events).reason == "stop"


async def test_usage_arithmetic() -> None:
    request = make_request(
        [user("Hi there.")],
        instructions="You are terse and precise.",
        context_tokens=1000,
        cached_tokens=700,
        params={"reasoning": {"summary": "auto"}},
    )
    events = await collect(request)
    usage = finish_of(events).usage
    input_tokens = 1000 + estimate_tokens("You are terse and precise.")
    assert usage.input_tokens == input_tokens
    assert usage.cached_tokens == 700
    assert usage.cache_write_tokens == input_tokens - 700
    assert usage.output_tokens == estimate_tokens(reasoning_of(events) + text_of(events))
    assert usage.reasoning_tokens == estimate_tokens(reasoning_of(events))


async def test_usage_never_reports_more_cached_than_input() -> None:
    usage = finish_of(await collect(make_request([user("Hi.")], context_tokens=10, cached_tokens=50))).usage
    assert (usage.cached_tokens, usage.cache_write_tokens) == (10, 0)


# -- determinism and timing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["scripted", "echo", "script:agent"])
async def test_same_request_gives_same_events(model: str) -> None:
    request = make_request(
        [user("What's the weather like in Rome?")],
        model=model,
        tools=[WEATHER_TOOL],
        params={"reasoning": {"summary": "auto"}},
    )
    assert await collect(request) == await collect(request)


async def test_first_event_waits_for_ttft() -> None:
    loop = asyncio.get_running_loop()
    provider = ScriptedProvider(ScriptedTiming(ttft_s=0.05))
    started = loop.time()
    stream = provider.stream(make_request([user("Hello.")]))
    await anext(stream)
    assert loop.time() - started >= 0.05
    await stream.aclose()


async def test_output_is_paced_at_tokens_per_second() -> None:
    loop = asyncio.get_running_loop()
    provider = ScriptedProvider(ScriptedTiming(tokens_per_second=1000))
    started = loop.time()
    events = await collect(make_request([user("Pace this reply, please.")]), provider)
    elapsed = loop.time() - started
    assert elapsed >= finish_of(events).usage.output_tokens / 1000


async def test_unlimited_rate_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    def counting_sleep(delay: float) -> Coroutine[Any, Any, None]:
        sleeps.append(delay)
        return real_sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", counting_sleep)
    await collect(make_request([user("A fairly long message to reply to, with many words in it.")]))
    assert sleeps == []


def test_timing_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        ScriptedTiming(ttft_s=-1)


# -- cost independent of history -------------------------------------------------------------------------------


class CountingContext(Sequence[Item]):
    """A long context that counts item reads and refuses to be iterated whole."""

    def __init__(self, items: list[Item]) -> None:
        self._items = items
        self.reads = 0

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Item: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Item]: ...
    def __getitem__(self, index: int | slice) -> Item | Sequence[Item]:
        if isinstance(index, slice):
            self.reads += len(range(*index.indices(len(self._items))))
            return self._items[index]
        self.reads += 1
        return self._items[index]

    def __iter__(self) -> Iterator[Item]:
        raise AssertionError("the provider iterated the whole context")


def long_agent_loop(rounds: int) -> list[Item]:
    """One user message, then many tool rounds with foreign call ids: 1 + 2 * rounds items."""
    items: list[Item] = [user("Do a long task.")]
    for n in range(rounds):
        items.append({"type": "function_call", "call_id": f"x{n}", "name": "step", "arguments": "{}"})
        items.append({"type": "function_call_output", "call_id": f"x{n}", "output": "ok"})
    return items


@pytest.mark.parametrize("tools", [[], [WEATHER_TOOL]])
@pytest.mark.parametrize("model", ["scripted", "echo", "script:agent"])
async def test_only_the_tail_of_a_long_context_is_read(model: str, tools: list[JSONObject]) -> None:
    history = long_agent_loop(5_000)[:-1]  # ends with a call: no trailing tool output
    context = CountingContext(history)
    assert len(context) == 10_000
    request = make_request(context, model=model, tools=tools)
    context.reads = 0
    events = await collect(request)
    assert context.reads < 50
    assert isinstance(events[-1], Finish)


async def test_a_long_scripted_loop_reads_only_its_last_round() -> None:
    items: list[Item] = [user("Go.")]
    first = await collect(make_request(items, model="script:agent", response_id="resp_0"))
    items += [*output_items(first), *tool_outputs(first)]
    items = long_agent_loop(5_000)[1:] + items  # 10,000 older items before the scripted loop
    context = CountingContext(items)
    request = make_request(context, model="script:agent", response_id="resp_1")
    context.reads = 0
    events = await collect(request)
    assert len(calls_of(events)) == 2  # the step after the first round, found from the call id
    assert context.reads == 2  # the trailing output and the call before it


async def test_a_trailing_tool_output_in_a_long_context_reads_a_few_items() -> None:
    context = CountingContext(long_agent_loop(5_000))
    request = make_request(context)
    context.reads = 0
    events = await collect(request)
    assert text_of(events) == "The tool returned 2 characters."
    assert context.reads <= 2


# -- scripts files ---------------------------------------------------------------------------------------------


def test_load_scripts_reads_steps(tmp_path: Path) -> None:
    path = tmp_path / "scripts.json"
    path.write_text(
        json.dumps(
            {
                "scripts": {
                    "demo": [
                        {"text": "Hi.", "reasoning": "Greet."},
                        {"tool_calls": [{"name": "read_file", "arguments": {"path": "x"}}, {"name": "now"}]},
                    ],
                    "empty": [],
                }
            }
        )
    )
    scripts = load_scripts(path)
    assert scripts == {
        "demo": (
            ScriptStep(text="Hi.", reasoning="Greet."),
            ScriptStep(tool_calls=(ScriptToolCall("read_file", '{"path":"x"}'), ScriptToolCall("now", "{}"))),
        ),
        "empty": (),
    }


def test_load_scripts_rejects_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ScriptError, match="not valid JSON"):
        load_scripts(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], 'expected an object with a "scripts" object'),
        ({"scripts": []}, 'expected an object with a "scripts" object'),
        ({"scripts": {"": []}}, "script names must not be empty"),
        ({"scripts": {"a": {"text": "x"}}}, r"scripts\.a: expected a list of steps"),
        ({"scripts": {"a": ["hi"]}}, r"scripts\.a\[0\]: expected an object"),
        ({"scripts": {"a": [{}]}}, r'scripts\.a\[0\]: a step needs "text" or "tool_calls"'),
        ({"scripts": {"a": [{"text": "x", "sleep": 1}]}}, r"unknown field\(s\) sleep"),
        ({"scripts": {"a": [{"text": 3}]}}, r"scripts\.a\[0\]\.text: expected a non-empty string"),
        ({"scripts": {"a": [{"text": "x", "reasoning": ""}]}}, r"\.reasoning: expected a non-empty string"),
        ({"scripts": {"a": [{"tool_calls": []}]}}, r"\.tool_calls: expected a non-empty list"),
        ({"scripts": {"a": [{"tool_calls": ["x"]}]}}, r"\.tool_calls\[0\]: expected an object"),
        ({"scripts": {"a": [{"tool_calls": [{"arguments": {}}]}]}}, r"\.tool_calls\[0\]\.name: expected a non-empty"),
        ({"scripts": {"a": [{"tool_calls": [{"name": "f", "arguments": "{}"}]}]}}, r"\.arguments: expected an object"),
        ({"scripts": {"a": [{"tool_calls": [{"name": "f", "id": 1}]}]}}, r"unknown field\(s\) id"),
    ],
)
def test_bad_script_shapes_are_named(data: object, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_scripts(data)


def test_a_step_needs_text_or_tool_calls() -> None:
    with pytest.raises(ValueError, match="text or tool calls"):
        ScriptStep(reasoning="only thinking")


# -- interface -------------------------------------------------------------------------------------------------


async def test_scripted_provider_is_a_provider() -> None:
    provider: Provider = ScriptedProvider(ScriptedTiming())
    assert provider.name == "scripted"
    events = [event async for event in provider.stream(make_request([user("Hi.")]))]
    assert isinstance(events[-1], Finish)
    await provider.aclose()
