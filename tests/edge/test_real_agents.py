"""The real agent CLIs (pinned in tests/agents/package.json) running tool loops through ``tether edge`` →
``tether serve``, inside a network namespace that has only loopback, so nothing leaves the machine. Each loop runs
three tool rounds on real files of a temporary project (Claude Code's Read and Bash, Codex's exec_command).

- Claude Code to a same-API upstream (``FakeAnthropic``, recording): every request the upstream receives equals, as
  a JSON value, the request Claude Code sent the edge, and each continuation's upload carries no tool schema, no
  system prompt and no earlier message body, only the new messages.
- Claude Code on embedded defaults (the scripted model playing a script, via the Messages ↔ Responses translation):
  the loop runs to its end, its continuations crossing as new content only.
- Codex (``codex exec``) in WebSocket mode to an OpenAI Responses upstream (``FakeResponsesUpstream`` over
  WebSocket): the gateway rebuilds each ``response.create`` exactly (its content hash is checked), and the upstream
  receives it as tether's engine sends any client's turn (see ``test_codex_over_websocket_to_a_responses_upstream``),
  with Codex's own key: the provider has none configured.
- Codex on embedded defaults: its continuations cross without its tool schemas and instructions.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.protocol.delta import value_hash

AGENTS = Path(__file__).parent.parent / "agents"
CLAUDE = AGENTS / "node_modules" / ".bin" / "claude"
CODEX = AGENTS / "node_modules" / ".bin" / "codex"
NOTES = "tether-notes: the gateway keeps the conversation, the edge sends only what changed. " * 3
CODE = "print('tether-main: a tool loop through the edge, round two')\n"
LONG_LEAF = 24
"""Strings of earlier messages at least this long must never cross again (shorter ones are ids and type names)."""


def _runnable() -> str | None:
    if not CLAUDE.exists() or not CODEX.exists():
        return "the agent CLIs are not installed (./dev test installs tests/agents/package.json)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip are needed for a loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "this user may not create a network namespace (unshare -n)"
    return None


pytestmark = pytest.mark.skipif(_runnable() is not None, reason=str(_runnable()))


def project(tmp_path: Path) -> Path:
    """The agent's working directory, with the files its tools read."""
    directory = tmp_path / "work" / "project"
    directory.mkdir(parents=True)
    (directory / "notes.txt").write_text(NOTES + "\n")
    (directory / "main.py").write_text(CODE)
    return directory


def claude_script(directory: Path) -> list[dict[str, Any]]:
    return [
        {"tool_calls": [{"name": "Read", "arguments": {"file_path": str(directory / "notes.txt")}}]},
        {"text": "Now the code.",
         "tool_calls": [{"name": "Bash", "arguments": {"command": "cat main.py", "description": "Show main.py"}}]},
        {"tool_calls": [{"name": "Bash", "arguments": {"command": "ls", "description": "List the files"}}]},
        {"text": "Done."},
    ]  # fmt: skip


CODEX_SCRIPT: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "exec_command", "arguments": {"cmd": "cat notes.txt"}}]},
    {"text": "Now the code.", "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "cat main.py"}}]},
    {"tool_calls": [{"name": "exec_command", "arguments": {"cmd": "ls"}}]},
    {"text": "Done."},
]


def run_agent(
    tmp_path: Path, upstream: str, prompt: str, script: list[Any] | None = None, agent: str = "claude"
) -> dict[str, Any]:
    out = tmp_path / "result.json"
    command = [
        sys.executable, str(AGENTS / "agent_run.py"), "--agent", agent, "--upstream", upstream,
        "--workdir", str(tmp_path / "work"), "--prompt", prompt, "--allowed-tools", "Read,Bash", "--out", str(out),
        "--timeout", "240", "--script", json.dumps(script or []),
    ]  # fmt: skip
    inner = "ip link set lo up && exec " + " ".join(_quote(part) for part in command)
    ran = subprocess.run(["unshare", "-n", "--", "bash", "-c", inner], capture_output=True, text=True, timeout=300,
                         check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["returncode"] == 0, result["stderr"]
    return result


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'"


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for child in value.values():
            yield from _leaves(child)
    elif isinstance(value, list):
        for child in value:
            yield from _leaves(child)


def _never_again(body: dict[str, Any], history_key: str, new: list[Any]) -> list[str]:
    """What a continuation of ``body`` must not upload: its tool schemas, its system prompt, and the long strings
    of its messages (JSON-escaped, as they would appear in a frame), but those the continuation's new messages
    hold too (the fake signs every empty thinking block alike)."""
    parts = [body.get("tools"), body.get("system"), body.get("instructions"), body.get(history_key)]
    repeated = set(_leaves(new))
    texts = [text[:160] for text in _leaves(parts) if len(text) >= LONG_LEAF and text not in repeated]
    return [json.dumps(text, ensure_ascii=False)[1:-1] for text in texts]


def _assert_new_content_only(captured: list[dict[str, Any]], history_key: str) -> None:
    for previous, continuation in itertools.pairwise(captured):
        assert continuation["based"], continuation["frames"]
        frames = "".join(continuation["frames"])
        earlier = previous["body"].get(history_key) or []
        new = [entry for entry in continuation["body"].get(history_key) or [] if entry not in earlier]
        for snippet in _never_again(previous["body"], history_key, new):
            assert snippet not in frames, (snippet, frames[:2000])


def _tool_results(messages: list[dict[str, Any]]) -> list[str]:
    return [
        json.dumps(block["content"])
        for message in messages
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


def _assert_claude_ran_three_rounds(result: dict[str, Any], last_request: dict[str, Any]) -> None:
    answer = json.loads(result["stdout"])
    assert answer["is_error"] is False, answer
    assert answer["result"] == "Done."
    rounds = [
        message for message in last_request["messages"]
        if message["role"] == "assistant" and any(block.get("type") == "tool_use" for block in message["content"])
    ]  # fmt: skip
    assert len(rounds) == 3  # three assistant messages, not one that merged them
    results = _tool_results(last_request["messages"])
    assert len(results) == 3
    assert "tether-notes" in results[0]
    assert "tether-main" in results[1]
    assert "main.py" in results[2]
    assert "notes.txt" in results[2]


def test_claude_code_tool_loop_reaches_the_upstream_untouched(tmp_path: Path) -> None:
    result = run_agent(tmp_path, "fake", "Look at the files here.", claude_script(project(tmp_path)))
    captured = [entry for entry in result["captured"] if entry["path"] == "/v1/messages"]
    upstream = [entry for entry in result["upstream"] if entry["path"] == "/v1/messages"]
    assert len(captured) == len(upstream) == 4
    for sent, received in zip(captured, upstream, strict=True):
        assert received["body"] == sent["body"]
        assert received["headers"]["x-api-key"] == "<set>"  # the agent's own key; the fake refuses any other
        features = {k: v for k, v in sent["headers"].items() if k.startswith(("anthropic-", "x-claude-code-"))}
        assert "anthropic-beta" in features  # the feature flags the upstream must receive
        assert {k: received["headers"].get(k) for k in features} == features
        assert "x-api-key" not in sent["headers"]  # the edge keeps no credential, not even in its capture
    _assert_claude_ran_three_rounds(result, captured[-1]["body"])
    _assert_new_content_only(captured, "messages")
    for previous, continuation in itertools.pairwise(captured):
        new_messages = continuation["body"]["messages"][len(previous["body"]["messages"]) :]
        assert continuation["uploaded"] < len(json.dumps(new_messages, separators=(",", ":"))) + 1000
    assert result["status"]["heals"] == 0


def test_claude_code_on_embedded_defaults_runs_a_multi_round_loop(tmp_path: Path) -> None:
    # The scripted model plays the same script (model script:task); its tool calls reach Claude Code as tool_use
    # blocks translated from Responses function calls, and its tool results go back as function_call_outputs.
    result = run_agent(tmp_path, "scripted", "Look at the files here.", claude_script(project(tmp_path)))
    captured = [entry for entry in result["captured"] if entry["path"] == "/v1/messages"]
    assert len(captured) == 4
    _assert_claude_ran_three_rounds(result, captured[-1]["body"])
    _assert_new_content_only(captured, "messages")
    assert result["status"]["heals"] == 0


def _without_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items as tether's engine sends them to a Responses upstream: client-side item ids mean nothing there."""
    optional = ("message", "function_call", "function_call_output")
    return [{k: v for k, v in item.items() if k != "id" or item.get("type", "message") not in optional}
            for item in items]  # fmt: skip


def test_codex_over_websocket_to_a_responses_upstream(tmp_path: Path) -> None:
    """Codex → edge (WebSocket) → gateway → FakeResponsesUpstream (WebSocket). What is compared, and why:

    Responses traffic is not forwarded raw: the gateway rebuilds Codex's ``response.create`` and runs it in tether's
    engine exactly as if Codex had sent it to ``tether serve``. So (1) the rebuilt frame equals Codex's: the edge
    names each frame by the content hash of what Codex sent, the gateway refuses a rebuilt request of another hash
    (that would heal), and no turn healed; (2) the upstream receives what the engine sends for any client's turn:
    every field of Codex's frame as it came (model, tools, tool_choice, include, reasoning, store, prompt_cache_key,
    client_metadata, ...), except ``stream`` (HTTP only; an upstream socket streams anyway), ``previous_response_id``
    (tether's id becomes the upstream's own, ``resp_up_…``, which the fake checks is its socket's latest) and the
    items' client-side ``id``s. Codex's ``generate: false`` warm-up is answered by tether, so the first turn the
    upstream sees carries the warm-up's input and the turn's, in full.
    """
    project(tmp_path)
    result = run_agent(tmp_path, "fake", "Look at the files here.", CODEX_SCRIPT, agent="codex")
    events = [json.loads(line) for line in result["stdout"].splitlines() if line.startswith("{")]
    assert events[-1]["type"] == "turn.completed", result["stdout"][-2000:]
    commands = [e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "command_execution"]
    assert [command["exit_code"] for command in commands] == [0, 0, 0]
    assert "tether-notes" in commands[0]["aggregated_output"]
    assert "tether-main" in commands[1]["aggregated_output"]

    creates = [entry for entry in result["captured"] if entry["path"] == "/v1/responses#ws"]
    for entry in creates:
        assert json.loads(entry["frames"][0])["id"] == value_hash(entry["body"])
    assert result["status"]["heals"] == 0
    warmup, turns = creates[0]["body"], [entry["body"] for entry in creates[1:]]
    assert warmup["generate"] is False
    upstream = [entry["body"] for entry in result["upstream"]]
    assert len(upstream) == len(turns) == 4
    assert {entry["connection"] for entry in result["upstream"]} == {1}
    # the provider has no key: Codex's own reached the upstream (the fake refuses any other), through the engine
    assert {entry["headers"]["authorization"] for entry in result["upstream"]} == {"<set>"}
    assert all("authorization" not in entry["headers"] for entry in creates)  # the edge's capture keeps none
    changed = {"stream", "previous_response_id", "input"}
    for sent, received in zip(turns, upstream, strict=True):
        assert {k: v for k, v in received.items() if k not in changed} == {
            k: v for k, v in sent.items() if k not in changed
        }
    assert upstream[0]["input"] == _without_ids(warmup["input"] + turns[0]["input"])
    assert "previous_response_id" not in upstream[0]
    upstream_ids = []
    for sent, received in zip(turns[1:], upstream[1:], strict=True):
        assert received["input"] == _without_ids(sent["input"])
        assert not sent["previous_response_id"].startswith("resp_up_")  # Codex only ever saw tether's ids
        assert received["previous_response_id"].startswith("resp_up_")
        upstream_ids.append(received["previous_response_id"])
    assert len(set(upstream_ids)) == 3
    _assert_new_content_only(creates, "input")
    for continuation in creates[2:]:
        assert continuation["uploaded"] < len(json.dumps(continuation["body"])) / 10


def test_codex_over_websocket_on_embedded_defaults(tmp_path: Path) -> None:
    result = run_agent(tmp_path, "scripted", "List the files here.", agent="codex")
    events = [json.loads(line) for line in result["stdout"].splitlines() if line.startswith("{")]
    assert any(event.get("type") == "turn.completed" for event in events), result["stdout"][-2000:]
    creates = [entry for entry in result["captured"] if entry["path"] == "/v1/responses#ws"]
    assert len(creates) >= 2
    first = next(entry["body"] for entry in creates if entry["body"].get("tools"))
    never_again = [tool["description"][:100] for tool in first["tools"] if len(tool.get("description", "")) > 150]
    if len(first.get("instructions") or "") > 400:
        never_again.append(first["instructions"][300:400])
    assert never_again
    for continuation in creates[1:]:
        frames = "".join(continuation["frames"])
        for snippet in never_again:
            assert json.dumps(snippet)[1:-1] not in frames
    assert result["status"]["heals"] == 0
