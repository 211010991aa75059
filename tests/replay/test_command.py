"""``tether replay`` on a chain a real server stored: the transcript, its JSON, the equivalent stateless request
(which a fresh server answers with the same output, ids aside), and a re-run on another route."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tether.cli import main
from tether.replay.against import normalised
from tether.server.runner import serve_in_thread
from tether.settings import ScriptedSettings, Settings

SCRIPTS = {
    "scripts": {
        "tools": [{"tool_calls": [{"name": "read_file", "arguments": {"path": "notes.txt"}}]}, {"text": "Read it."}],
        "other": [{"text": "I will not read anything."}],
    }
}
TOOLS = [{"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}}]


class Chain:
    def __init__(self, directory: Path) -> None:
        self.scripts = directory / "scripts.json"
        self.scripts.write_text(json.dumps(SCRIPTS))
        self.store_url = f"sqlite:///{directory / 'tether.db'}"
        self.responses: list[dict[str, Any]] = []

    def settings(self, store_url: str) -> Settings:
        return Settings(store_url=store_url, log_level="warning", scripted=ScriptedSettings(scripts_file=self.scripts))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """A stored two-turn chain: a tool call, then the answer after the tool's output (the server is stopped after)."""
    made = Chain(tmp_path_factory.mktemp("replay"))
    with serve_in_thread(made.settings(made.store_url)) as server:
        first = httpx.post(
            f"{server.base_url}/responses", json={"model": "script:tools", "input": "read my notes", "tools": TOOLS}
        ).json()
        call = first["output"][-1]
        second = httpx.post(
            f"{server.base_url}/responses",
            json={
                "model": "script:tools",
                "tools": TOOLS,
                "previous_response_id": first["id"],
                "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "buy milk"}],
            },
        ).json()
    made.responses = [first, second]
    return made


def replay(chain: Chain, capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str]:
    code = main(["replay", chain.responses[-1]["id"], "--store-url", chain.store_url, *arguments])
    return code, capsys.readouterr().out


def test_the_transcript_shows_turns_items_tokens_and_bytes(chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = replay(chain, capsys)
    assert code == 0
    assert f"turn 1  {chain.responses[0]['id']}" in out
    assert f"turn 2  {chain.responses[1]['id']}" in out
    assert "> user: read my notes" in out
    assert "< call read_file(" in out
    assert "output [call_" in out
    assert "< assistant: Read it." in out
    assert "bytes sent" in out
    assert "saved" in out


def test_the_json_transcript_counts_bytes_sent_and_saved(chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = replay(chain, capsys, "--json")
    assert code == 0
    transcript = json.loads(out)
    first, second = transcript["turns"]
    assert [first["response_id"], second["response_id"]] == [r["id"] for r in chain.responses]
    assert second["output_tokens"] == chain.responses[1]["usage"]["output_tokens"]
    # Computed here from what the client sent and received: turn 2 sent one tool output and the parent's id, where a
    # stateless client would have sent the whole context again (tether forwards its non-null defaults too).
    params = {
        "model": "script:tools",
        "tools": TOOLS,
        "store": True,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    context = [*first["input"], *chain.responses[0]["output"], *second["input"]]
    sent = {**params, "input": second["input"], "previous_response_id": chain.responses[0]["id"]}
    assert second["bytes_stateless"] == len(orjson.dumps({**params, "input": context}))
    assert second["bytes_sent"] == len(orjson.dumps(sent))
    assert second["bytes_saved"] == second["bytes_stateless"] - second["bytes_sent"]
    assert second["bytes_saved"] > 0
    assert transcript["bytes_saved"] == first["bytes_saved"] + second["bytes_saved"]


def test_as_request_sent_to_a_fresh_server_gives_the_same_output(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = replay(chain, capsys, "--as-request")
    assert code == 0
    request = json.loads(out)
    assert "previous_response_id" not in request
    assert [item["type"] for item in request["input"]] == ["message", "function_call", "function_call_output"]
    with serve_in_thread(chain.settings(f"sqlite:///{tmp_path / 'fresh.db'}")) as fresh:
        answer = httpx.post(f"{fresh.base_url}/responses", content=orjson.dumps(request)).json()
    assert answer["status"] == "completed"
    assert answer["id"] != chain.responses[1]["id"]
    assert normalised(answer["output"]) == normalised(chain.responses[1]["output"])
    assert answer["output"][0]["content"][0]["text"] == "Read it."


def test_against_another_route_shows_where_the_outputs_diverge(
    chain: Chain, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_SCRIPTED__SCRIPTS_FILE", str(chain.scripts))
    code, out = replay(chain, capsys, "--against", "script:tools")
    assert code == 0, out
    assert "turn 1: same" in out
    assert "turn 2: same" in out  # the re-run's own call id was mapped into the tool output
    code, out = replay(chain, capsys, "--against", "script:other")
    assert code == 3
    assert "turn 1: DIVERGES" in out
    assert "re-run   < assistant: I will not read anything." in out
    assert "first divergence at turn 1" in out


def test_an_unknown_response_is_one_line_and_exit_1(chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "resp_missing", "--store-url", chain.store_url])
    captured = capsys.readouterr()
    assert code == 1
    assert "resp_missing" in captured.err


def test_replay_reads_the_database_of_a_running_server(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_url = f"sqlite:///{tmp_path / 'live.db'}"
    with serve_in_thread(chain.settings(store_url)) as server:  # it holds the file's lock the whole time
        answer = httpx.post(f"{server.base_url}/responses", json={"model": "echo", "input": "still running"}).json()
        code = main(["replay", answer["id"], "--store-url", store_url, "--json"])
        out = capsys.readouterr().out
        assert code == 0, out
        printed = out[out.index("\n{\n") + 1 :] if not out.startswith("{") else out  # past the server's log lines
        assert json.loads(printed)["turns"][0]["output"][0]["content"][0]["text"] == "still running"
        later = httpx.post(f"{server.base_url}/responses", json={"model": "echo", "input": "and after"})
        assert later.status_code == 200  # the reader took nothing from the server
