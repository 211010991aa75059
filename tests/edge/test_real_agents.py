"""The real agent CLIs (pinned in tests/agents/package.json) running tool loops through ``tether edge`` →
``tether serve``, inside a network namespace that has only loopback, so nothing leaves the machine.

- To a same-API upstream (``FakeAnthropic``, recording): every request the upstream receives equals, as a JSON
  value, the request Claude Code sent the edge, and each continuation's upload carries no tool schema, no system
  prompt and no earlier message body.
- On embedded defaults (the scripted model, via translation): the loop runs to its end without an error.
- Codex (``codex exec``) in WebSocket mode on embedded defaults: its ``response.create`` frames are relayed per
  connection, and its continuations cross without its tool schemas and instructions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

AGENTS = Path(__file__).parent.parent / "agents"
CLAUDE = AGENTS / "node_modules" / ".bin" / "claude"
CODEX = AGENTS / "node_modules" / ".bin" / "codex"
SCRIPT: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "Bash", "arguments": {"command": "echo tether-was-here", "description": "greet"}}]},
    {"text": "Done."},
]


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


def run_agent(
    tmp_path: Path, upstream: str, prompt: str, script: list[Any] | None = None, agent: str = "claude"
) -> dict[str, Any]:
    out = tmp_path / "result.json"
    command = [
        sys.executable, str(AGENTS / "agent_run.py"), "--agent", agent, "--upstream", upstream,
        "--workdir", str(tmp_path / "work"), "--prompt", prompt, "--allowed-tools", "Bash", "--out", str(out),
        "--timeout", "150", "--script", json.dumps(script or []),
    ]  # fmt: skip
    inner = "ip link set lo up && exec " + " ".join(_quote(part) for part in command)
    ran = subprocess.run(["unshare", "-n", "--", "bash", "-c", inner], capture_output=True, text=True, timeout=200,
                         check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["returncode"] == 0, result["stderr"]
    return result


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'"


def _snippets(body: dict[str, Any]) -> list[str]:
    """Pieces of the first request that must never cross again: tool schemas, the system prompt, its messages."""
    texts = [tool["description"][:120] for tool in body["tools"] if len(tool.get("description", "")) > 200]
    system = body["system"]
    texts += [block["text"][200:320] for block in system if len(block.get("text", "")) > 400]
    first = json.dumps(body["messages"][0]["content"])
    texts.append(first[100:220])
    return texts


def test_claude_code_tool_loop_reaches_the_upstream_untouched(tmp_path: Path) -> None:
    result = run_agent(tmp_path, "fake", "Say hello with the Bash tool.", SCRIPT)
    answer = json.loads(result["stdout"])
    assert answer["is_error"] is False
    assert answer["result"] == "Done."
    captured = [entry for entry in result["captured"] if entry["path"] == "/v1/messages"]
    upstream = [entry for entry in result["upstream"] if entry["path"] == "/v1/messages"]
    assert len(captured) == len(upstream) >= 2
    for sent, received in zip(captured, upstream, strict=True):
        assert received["body"] == sent["body"]
    never_again = _snippets(captured[0]["body"])
    for continuation in captured[1:]:
        assert continuation["based"]
        frames = "".join(continuation["frames"])
        for snippet in never_again:
            assert json.dumps(snippet)[1:-1] not in frames
        assert continuation["uploaded"] < len(json.dumps(continuation["body"])) / 10
    assert result["status"]["heals"] == 0


def test_claude_code_on_embedded_defaults_runs_its_loop_to_the_end(tmp_path: Path) -> None:
    result = run_agent(tmp_path, "scripted", "List the files here.")
    answer = json.loads(result["stdout"])
    assert answer["is_error"] is False
    assert answer["num_turns"] >= 2
    assert all(entry["based"] for entry in result["captured"][1:])


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
