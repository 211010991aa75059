"""The audit log's files: chains continue across reopenings, each tenant has its own, odd tenant names are safe;
content only on opt-in."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx

from tether.audit.chain import GENESIS, verify
from tether.audit.log import AuditLog
from tether.server.runner import serve_in_thread
from tether.settings import Settings


def test_a_chain_continues_where_it_ended_after_reopening(tmp_path: Path) -> None:
    first = AuditLog(tmp_path).append({"kind": "turn", "tenant": "acme", "time": "t0"})
    assert first["seq"] == 0
    assert first["prev"] == GENESIS
    second = AuditLog(tmp_path).append({"kind": "turn", "tenant": "acme", "time": "t1"})
    assert second["seq"] == 1
    assert second["prev"] == first["hash"]
    lines = (tmp_path / "tenant-acme.jsonl").read_text().splitlines()
    assert verify(lines) is None


def test_tenants_and_the_server_have_separate_chains(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for tenant in ("a", "b", None, "a/../../etc", "a"):
        log.append({"kind": "turn", "tenant": tenant, "time": "t"})
    assert log.chains() == ["system", "tenant:a", "tenant:a/../../etc", "tenant:b"]
    assert [entry["seq"] for entry in log.entries("tenant:a")] == [0, 1]
    assert all(path.parent == tmp_path for path in tmp_path.iterdir())  # the odd name became a hashed file name


def test_the_head_of_a_long_line_is_read_from_the_end(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.append({"kind": "turn", "tenant": "big", "time": "t", "input": ["x" * 200_000]})
    last = log.append({"kind": "turn", "tenant": "big", "time": "t", "input": ["y" * 300_000]})
    assert AuditLog(tmp_path).head("tenant:big").hash == last["hash"]


def test_content_is_in_entries_only_when_the_operator_opts_in(tmp_path: Path) -> None:
    for content in (False, True):
        directory = tmp_path / str(content)
        settings = Settings(
            store_url=f"sqlite:///{directory / 'tether.db'}", log_level="warning", audit_content=content
        )
        with serve_in_thread(settings) as server:
            answer = httpx.post(f"{server.base_url}/responses", json={"model": "echo", "input": "SECRET-NOTE"})
            assert answer.status_code == 200
        (turn,) = [e for e in AuditLog(directory / "audit").entries("tenant:default") if e["kind"] == "turn"]
        assert ("SECRET-NOTE" in str(turn)) is content
        assert ("input" in turn) is content
