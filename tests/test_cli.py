"""``tether`` as a new user runs it: each start-up mistake is one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tether import __version__
from tether.testing import serve_subprocess

CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.upper().startswith("TETHER_")}


def run_tether(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        cwd=tmp_path,
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_version(tmp_path: Path) -> None:
    result = run_tether(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tether {__version__}"


def test_missing_key_variable(tmp_path: Path) -> None:
    config = tmp_path / "tether.toml"
    config.write_text('[providers.up]\nkind = "chat-completions"\napi_key_env = "TETHER_CLI_TEST_ABSENT_KEY"\n')
    result = run_tether(tmp_path, "serve", "--config", str(config), "--store-url", "memory://", "--port", "0")
    assert_one_line_error(result, "TETHER_CLI_TEST_ABSENT_KEY", "is not set")


def test_route_to_unknown_provider(tmp_path: Path) -> None:
    config = tmp_path / "tether.toml"
    config.write_text('[[routes]]\nmodel = "gpt-*"\nprovider = "nowhere"\n')
    result = run_tether(tmp_path, "serve", "--config", str(config), "--store-url", "memory://", "--port", "0")
    assert_one_line_error(result, "unknown provider 'nowhere'")


def test_toml_syntax_error(tmp_path: Path) -> None:
    config = tmp_path / "tether.toml"
    config.write_text("port = [\n")
    assert_one_line_error(run_tether(tmp_path, "serve", "--config", str(config)), "TOML syntax error")


def test_misspelt_key(tmp_path: Path) -> None:
    config = tmp_path / "tether.toml"
    config.write_text('[[routes]]\nmodel = "x"\nprovider = "scripted"\nupstream_modle = "y"\n')
    result = run_tether(tmp_path, "serve", "--config", str(config))
    assert_one_line_error(result, f"{config}:4", "'upstream_modle'", "did you mean 'upstream_model'?")


def test_bad_store_url(tmp_path: Path) -> None:
    result = run_tether(tmp_path, "serve", "--store-url", "mysql://db/x", "--port", "0")
    assert_one_line_error(result, "unsupported store URL")


@pytest.mark.parametrize("scheme", ["postgresql", "redis"])
def test_an_unreachable_cluster_store(tmp_path: Path, scheme: str) -> None:
    """Was a 30-70 line traceback with exit 1 (and, for PostgreSQL, a warning line every retry for 10 s)."""
    with socket.socket() as closed:  # bound, never listening: connecting to it is refused
        closed.bind(("127.0.0.1", 0))
        url = f"{scheme}://127.0.0.1:{closed.getsockname()[1]}/0"
        result = run_tether(tmp_path, "serve", "--store-url", url, "--port", "0")
    assert_one_line_error(result, f"cannot open the store {url}:")


def test_port_out_of_range(tmp_path: Path) -> None:
    assert_one_line_error(run_tether(tmp_path, "serve", "--port", "99999"), "out of range")


def test_missing_scripts_file(tmp_path: Path) -> None:
    result = run_tether(
        tmp_path,
        "serve",
        "--store-url",
        "memory://",
        "--port",
        "0",
        env={"TETHER_SCRIPTED__SCRIPTS_FILE": "scripts.json"},
    )
    assert_one_line_error(result, "scripts.json", "scripts_file")


def test_port_in_use_is_reported_before_ready(tmp_path: Path, busy_port: int) -> None:
    result = run_tether(tmp_path, "serve", "--store-url", "memory://", "--port", str(busy_port))
    assert_one_line_error(result, f"127.0.0.1:{busy_port}", "--port")
    assert "server.ready" not in result.stderr


def read_until_ready(process: subprocess.Popen[str]) -> list[str]:
    assert process.stderr is not None
    lines = []
    for _ in range(200):
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "server.ready" in line:
            break
    return lines


def test_start_up_says_where_it_listens_and_warns_on_open_public_bind(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tether", "serve", "--host", "0.0.0.0", "--port", "0", "--store-url", "memory://"],
        cwd=tmp_path,
        env={**CLEAN_ENV, "TETHER_LOG_FORMAT": "json", "TETHER_PORTT": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = read_until_ready(process)
    finally:
        process.terminate()
        process.wait(15)
        assert process.stderr is not None
        process.stderr.close()
    records = [orjson.loads(line) for line in lines if line.startswith("{")]
    by_event = {record["event"]: record for record in records}
    listening = by_event["server.listening"]
    assert listening["url"].startswith("http://0.0.0.0:")
    assert listening["store"] == "memory://"
    assert listening["routes"] == ["* -> scripted"]
    assert "server.open_access" in by_event
    assert any("did you mean TETHER_PORT?" in str(record.get("problem")) for record in records)
    assert "server.ready" in by_event


def test_an_empty_database_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tether.db").write_bytes(b"")
    result = run_tether(tmp_path, "serve", "--store-url", "sqlite:///tether.db", "--port", "0")
    assert_one_line_error(result, "tether.db is empty (0 bytes)")


def test_a_second_server_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    with serve_subprocess(tmp_path, {"TETHER_LOG_LEVEL": "warning"}):
        result = run_tether(tmp_path, "serve", "--port", "0")
    assert_one_line_error(result, ".tether/tether.db is in use by another tether process", "--store-url")


def test_check_reports_whole_and_missing_databases(tmp_path: Path) -> None:
    missing = run_tether(tmp_path, "check", "--store-url", "sqlite:///absent.db")
    assert_one_line_error(missing, "absent.db does not exist")
    with serve_subprocess(tmp_path, {"TETHER_LOG_LEVEL": "warning"}):
        pass
    whole = run_tether(tmp_path, "check")
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.strip() == ".tether/tether.db: 0 responses, 0 items: ok"


def test_a_second_server_on_one_sqlite_file_through_a_hard_link_refuses_to_start(tmp_path: Path) -> None:
    with serve_subprocess(tmp_path, {"TETHER_LOG_LEVEL": "warning"}) as first:
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "link.db").hardlink_to(tmp_path / ".tether" / "tether.db")
        result = run_tether(tmp_path, "serve", "--store-url", "sqlite:///elsewhere/link.db", "--port", "0")
    assert_one_line_error(result, f"link.db is in use by another tether process (pid {first.process.pid},", "hard link")


def test_a_negative_response_ttl_is_refused_in_one_line(tmp_path: Path) -> None:
    """A negative TTL stored every response already expired: each became a 404 as soon as it was written."""
    result = run_tether(tmp_path, "serve", "--port", "0", env={"TETHER_RESPONSE_TTL_S": "-1"})
    assert_one_line_error(result, "response_ttl_s")
