"""The audit log's files: chains continue across reopenings, each tenant has its own, odd tenant names are safe."""

from __future__ import annotations

from pathlib import Path

from tether.audit.chain import GENESIS, verify
from tether.audit.log import AuditLog


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
