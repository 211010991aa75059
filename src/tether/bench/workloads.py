"""Coding-agent workloads shaped like the public study behind tether (InfoQ, 2026).

Each task is a deterministic function of its seed: instructions of 8–20 KB, 5–10 tool schemas, a user prompt, and
the model's steps (tool calls — several in one step are parallel calls — then a final answer). Tool outputs are
real-looking: stdlib source for file reads (2–30 KB), long pytest logs, grep hits; edits are unified diffs in the
calls' arguments. The scripted model plays the steps (``script:<task>``); the benchmark client plays the tools.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tether.bench.corpus import diff, pytest_log, source_file

PATHS = ("src/parser.py", "src/lexer.py", "src/render.py", "src/config.py", "src/cli.py", "src/cache.py",
         "tests/test_parser.py", "tests/test_render.py", "tests/test_cli.py", "src/plugins/base.py")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    output: str


@dataclass(frozen=True, slots=True)
class Step:
    """One model turn: parallel tool calls, or (when ``calls`` is empty) the final answer ``text``."""

    calls: tuple[ToolCall, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    instructions: str
    tools: list[dict[str, Any]]
    prompt: str
    steps: tuple[Step, ...]

    @property
    def turns(self) -> int:
        return len(self.steps)

    @property
    def tool_calls(self) -> int:
        return sum(len(step.calls) for step in self.steps)

    def script(self) -> list[dict[str, Any]]:
        """The steps as the scripted model's script."""
        return [
            {"tool_calls": [{"name": c.name, "arguments": c.arguments} for c in step.calls]}
            if step.calls
            else {"text": step.text}
            for step in self.steps
        ]


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required, "additionalProperties": False},
        "strict": True,
    }


_STR = {"type": "string"}
TOOLS = [
    _tool("read_file", "Read a UTF-8 file of the workspace and return its content with line numbers.",
          {"path": _STR, "start_line": {"type": "integer"}, "end_line": {"type": "integer"}}, ["path"]),
    _tool("apply_patch", "Apply a unified diff to the workspace. Fails if a hunk does not apply cleanly.",
          {"patch": _STR}, ["patch"]),
    _tool("run_tests", "Run the test suite (pytest) or a subset and return the full log.",
          {"selector": _STR, "verbose": {"type": "boolean"}}, ["selector"]),
    _tool("grep", "Search the workspace with a regular expression; returns matching lines with file:line.",
          {"pattern": _STR, "path": _STR}, ["pattern"]),
    _tool("list_dir", "List a directory of the workspace.", {"path": _STR}, ["path"]),
    _tool("run_shell", "Run a shell command in the workspace sandbox and return stdout and stderr.",
          {"command": _STR, "timeout_s": {"type": "integer"}}, ["command"]),
    _tool("search_symbols", "Find definitions and references of a symbol.", {"symbol": _STR}, ["symbol"]),
    _tool("git_diff", "Show the working tree's diff against HEAD.", {"path": _STR}, []),
]  # fmt: skip


def instructions(rng: random.Random, size: int) -> str:
    """A coding agent's system prompt of about ``size`` characters."""
    rules = [
        "Read the relevant files before editing them; never guess an API.",
        "Make the smallest change that fixes the problem, then run the tests that cover it.",
        "Edits are unified diffs applied with apply_patch; keep hunks small and exact.",
        "Prefer the project's existing helpers over writing new ones.",
        "Explain what you changed and why in the final answer, in at most five sentences.",
        "Never print secrets or environment variables; never run destructive shell commands.",
        "When a test fails, read the failure carefully and reproduce it before changing code.",
        "Keep the style of the surrounding code: naming, typing, docstrings, error handling.",
    ]
    parts = ["You are a coding agent working in a sandboxed checkout of a Python project.", ""]
    section = 1
    while sum(len(p) + 1 for p in parts) < size:
        parts.append(f"## Section {section}: working rules")
        parts += [f"{index + 1}. {rule}" for index, rule in enumerate(rng.sample(rules, len(rules)))]
        parts.append("Example of a good patch:")
        parts.append(diff(rng, rng.choice(PATHS), 600))
        parts.append("")
        section += 1
    return "\n".join(parts)[:size]


def _call(rng: random.Random, name: str) -> ToolCall:
    path = rng.choice(PATHS)
    if name == "read_file":
        return ToolCall(name, {"path": path}, source_file(rng, rng.randrange(2_000, 30_000)))
    if name == "apply_patch":
        return ToolCall(name, {"patch": diff(rng, path, rng.randrange(600, 3_000))}, f"Applied patch to {path}.")
    if name == "run_tests":
        selector = rng.choice(["tests/", "tests/test_parser.py", "tests/test_render.py -k roundtrip"])
        log = pytest_log(rng, rng.randrange(5_000, 25_000), rng.randrange(0, 3))
        return ToolCall(name, {"selector": selector}, log)
    if name == "grep":
        pattern = rng.choice(["def render", "class Parser", "TODO", "cache_key", "import config"])
        hits = "\n".join(
            f"{rng.choice(PATHS)}:{rng.randrange(1, 900)}:    {pattern}(...)" for _ in range(rng.randrange(5, 60))
        )
        return ToolCall(name, {"pattern": pattern}, hits)
    if name == "list_dir":
        return ToolCall(name, {"path": path.rsplit("/", 1)[0]}, "\n".join(sorted(set(PATHS))))
    if name == "search_symbols":
        symbol = rng.choice(["Parser.parse", "render_tree", "CacheKey", "load_config"])
        refs = "\n".join(f"{rng.choice(PATHS)}:{rng.randrange(1, 900)}: {symbol}" for _ in range(rng.randrange(3, 30)))
        return ToolCall(name, {"symbol": symbol}, refs)
    if name == "git_diff":
        return ToolCall(name, {"path": "src/"}, diff(rng, path, rng.randrange(1_000, 6_000)))
    return ToolCall(name, {"command": "python -m pyflakes src"}, source_file(rng, 1_500))


_PHASES = {
    "fix-failing-test": ("run_tests", "read_file", "read_file", "grep", "read_file", "apply_patch", "run_tests"),
    "add-feature": ("list_dir", "read_file", "search_symbols", "read_file", "apply_patch", "apply_patch", "run_tests"),
    "refactor": ("grep", "read_file", "read_file", "apply_patch", "apply_patch", "run_tests", "git_diff"),
}
_PROMPTS = {
    "fix-failing-test": "The CI run is red: tests/test_parser.py::test_roundtrip fails. Find the cause and fix it.",
    "add-feature": "Add a --format=json option to the CLI that prints the parsed tree as JSON, with tests.",
    "refactor": "Move the cache logic out of src/render.py into src/cache.py and update every caller.",
}
# (turns, tool calls) ranges from the study: fix 10–15 turns / 12–17 calls; feature 5–15 / 4–21; refactor 6–11 / 10–20.
_SHAPES = {"fix-failing-test": ((10, 15), (12, 17)), "add-feature": ((5, 15), (4, 21)), "refactor": ((6, 11), (10, 20))}


TASK_KINDS = tuple(_SHAPES)


def make_task(kind: str, seed: int, *, turns: int | None = None) -> Task:
    """Build one task; ``turns`` overrides the study's range (long sessions)."""
    rng = random.Random(f"{kind}:{seed}")
    (low_turns, high_turns), (low_calls, high_calls) = _SHAPES[kind]
    n_turns = turns if turns is not None else rng.randint(low_turns, high_turns)
    n_calls = rng.randint(max(low_calls, n_turns - 1), max(high_calls, n_turns - 1))
    per_turn = [1] * (n_turns - 1)
    for _ in range(n_calls - len(per_turn)):
        per_turn[rng.randrange(len(per_turn))] += 1
    phases = _PHASES[kind]
    steps = []
    for index, count in enumerate(per_turn):
        phase = phases[min(index * len(phases) // len(per_turn), len(phases) - 1)]
        names = [phase] + [rng.choice(("read_file", "grep", phase)) for _ in range(count - 1)]
        steps.append(Step(calls=tuple(_call(rng, name) for name in names)))
    steps.append(Step(text=f"Done: {_PROMPTS[kind].split(':')[0].lower()}. The change is minimal and the tests pass."))
    used = {call.name for step in steps for call in step.calls}
    extra = [tool for tool in TOOLS if tool["name"] not in used]
    wanted = max(rng.randint(5, len(TOOLS)), len(used))
    tools = [tool for tool in TOOLS if tool["name"] in used] + rng.sample(extra, max(0, wanted - len(used)))
    return Task(
        name=f"{kind}-{seed}" if turns is None else f"long-session-{seed}",
        instructions=instructions(rng, rng.randrange(8_000, 20_000)),
        tools=tools,
        prompt=_PROMPTS[kind],
        steps=tuple(steps),
    )


def standard_tasks(seed: int) -> list[Task]:
    return [make_task(kind, seed) for kind in _PHASES]


def long_session(seed: int, turns: int = 60) -> Task:
    return make_task("fix-failing-test", seed, turns=turns)
