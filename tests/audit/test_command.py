"""``tether audit export`` and ``tether audit verify`` on the audit log a real server wrote: an untouched export
passes, and each kind of tampering (altered, removed, inserted, reordered, cut at either end) fails naming the first
bad line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest

from tether.cli import main
from tether.server.runner import serve_in_thread
from tether.settings import Settings

KEYS = {"sk-alpha-secret": "alpha", "sk-beta-secret": "beta"}
Lines = list[str]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server's audit log after a small workload (two tenants, a delete, a restart with a new key), exported."""
    directory = tmp_path_factory.mktemp("audit")
    settings = Settings(store_url=f"sqlite:///{directory / 'tether.db'}", log_level="warning", api_keys=KEYS)
    with serve_in_thread(settings) as server:
        for key in KEYS:
            headers = {"authorization": f"Bearer {key}"}
            previous = None
            for text in ("one", "two", "three"):
                body = {"model": "echo", "input": text, "previous_response_id": previous}
                previous = httpx.post(f"{server.base_url}/responses", json=body, headers=headers).json()["id"]
            assert httpx.delete(f"{server.base_url}/responses/{previous}", headers=headers).status_code == 200
    restarted = settings.model_copy(update={"api_keys": {**KEYS, "sk-gamma-secret": "gamma"}})
    with serve_in_thread(restarted):
        pass
    output = directory / "export.jsonl"
    assert main(["audit", "export", "--dir", str(directory / "audit"), "--output", str(output)]) == 0
    return output


def tampered(exported: Path, tmp_path: Path, change: Callable[[Lines], Lines]) -> Path:
    copy = tmp_path / "export.jsonl"
    copy.write_text("".join(change(exported.read_text().splitlines(keepends=True))))
    (tmp_path / "export.jsonl.manifest.json").write_bytes(Path(f"{exported}.manifest.json").read_bytes())
    return copy


def verify(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", str(path)])
    return code, capsys.readouterr().out


def test_the_export_holds_every_stored_turn_and_act(exported: Path) -> None:
    entries = [json.loads(line) for line in exported.read_text().splitlines()]
    kinds = [(entry["kind"], entry["tenant"]) for entry in entries]
    assert kinds.count(("turn", "alpha")) == kinds.count(("turn", "beta")) == 3
    assert kinds.count(("delete", "alpha")) == kinds.count(("delete", "beta")) == 1
    startups = [entry for entry in entries if entry["kind"] == "startup"]
    assert len(startups) == 2  # the first start-up, then the one with a changed set of keys
    assert len(startups[1]["added"]) == 1
    assert startups[1]["removed"] == []
    turn = next(entry for entry in entries if entry["kind"] == "turn")
    assert turn["key_id"].startswith("key_")
    assert turn["route"] == "default"
    assert turn["provider"] == "scripted"
    assert turn["outcome"] == "completed"
    assert turn["usage"]["output_tokens"] > 0
    assert len(turn["input_hashes"]) == len(turn["output_hashes"]) == 1
    assert "input" not in turn  # content is opt-in
    text = exported.read_text()
    assert all(key not in text for key in (*KEYS, "sk-gamma-secret"))
    manifest = json.loads(Path(f"{exported}.manifest.json").read_text())
    assert manifest["chains"]["tenant:alpha"]["chain_head"] == manifest["chains"]["tenant:alpha"]["last_hash"]


def test_an_untouched_export_verifies(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(exported, capsys)
    assert code == 0, out
    assert "OK" in out


def _alter(lines: Lines) -> Lines:
    entry = json.loads(lines[3])
    entry["outcome"] = "failed"
    return [*lines[:3], json.dumps(entry) + "\n", *lines[4:]]


# Lines 1-2 are the server's chain (two start-ups), 3-6 tenant alpha's (three turns, a delete), 7-10 beta's.
@pytest.mark.parametrize(
    ("change", "bad_line", "words"),
    [
        (_alter, 4, "altered"),
        (lambda lines: [*lines[:3], *lines[4:]], 4, "removed, inserted or moved"),  # a line removed
        (lambda lines: [*lines[:5], lines[3], *lines[5:]], 6, "removed, inserted or moved"),  # a copy inserted
        (lambda lines: [*lines[:3], lines[4], lines[3], *lines[5:]], 4, "removed, inserted or moved"),  # reordered
        (lambda lines: lines[1:], 1, "does not start where the manifest says"),  # cut at the start
        (lambda lines: lines[:-1], None, "ends early"),  # cut at the end
        (lambda lines: [*lines[:2], "not json\n", *lines[2:]], 3, "not a JSON line"),
    ],
    ids=["altered", "removed", "inserted", "reordered", "cut-start", "cut-end", "garbage"],
)
def test_each_kind_of_tampering_names_the_first_bad_line(
    exported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[Lines], Lines],
    bad_line: int | None,
    words: str,
) -> None:
    path = tampered(exported, tmp_path, change)
    code, out = verify(path, capsys)
    assert code == 1
    line = bad_line if bad_line is not None else len(path.read_text().splitlines()) + 1
    assert out.startswith(f"{path}:{line}: ")
    assert words in out


def test_export_filters_by_tenant_and_time(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = exported.parent / "audit"
    only = tmp_path / "alpha.jsonl"
    assert main(["audit", "export", "--dir", str(directory), "--tenant", "alpha", "-o", str(only)]) == 0
    entries = [json.loads(line) for line in only.read_text().splitlines()]
    assert {entry["tenant"] for entry in entries} == {"alpha"}
    assert len(entries) == 4
    assert main(["audit", "verify", str(only)]) == 0
    later = tmp_path / "later.jsonl"
    since = entries[2]["time"]
    assert (
        main(["audit", "export", "--dir", str(directory), "--tenant", "alpha", "--since", since, "-o", str(later)]) == 0
    )
    kept = [json.loads(line) for line in later.read_text().splitlines()]
    assert kept
    assert all(entry["time"] >= since for entry in kept)
    assert main(["audit", "verify", str(later)]) == 0  # a chain that starts mid-way, as its manifest says
    capsys.readouterr()
    assert main(["audit", "export", "--dir", str(directory), "--since", "yesterday", "-o", str(later)]) == 2
