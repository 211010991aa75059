"""``tether edge``'s mistakes are one line each: no gateway, a bad --listen, a port in use, no edge to ask."""

from __future__ import annotations

import socket

import pytest

from tether.cli import main


def test_no_gateway_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_EDGE__GATEWAY", raising=False)
    assert main(["edge"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "tether edge: no gateway configured: pass --gateway URL or set TETHER_EDGE__GATEWAY"
    )


def test_a_bad_listen_address_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["edge", "--gateway", "http://127.0.0.1:1/v1", "--listen", "nowhere"]) == 2
    assert "--listen must be HOST:PORT" in capsys.readouterr().err


def test_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["edge", "--gateway", "http://127.0.0.1:1/v1", "--listen", f"127.0.0.1:{port}",
                     "--journal", str(tmp_path) + "/edge.db"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "another process is listening there" in err


def test_status_without_an_edge_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert main(["edge", "status", "--listen", f"127.0.0.1:{port}"]) == 1
    assert "no edge answers" in capsys.readouterr().err
