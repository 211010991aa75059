"""A client's mistakes at the HTTP and WebSocket layers are one warning line in the log, never a traceback."""

from __future__ import annotations

import base64
import logging
import os
import socket
from pathlib import Path

import httpx2 as httpx
import orjson
import structlog

from tether.server.uvicorn_logs import UvicornLogHandler
from tether.testing import serve_subprocess


def send_invalid_utf8_text_frame(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET /v1/responses HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        payload, mask = b"\xff\xfe\xfd", os.urandom(4)
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        return sock.recv(4096)  # the close frame: 1007, invalid payload data


def send_malformed_chunked_body(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b'Content-Type: application/json\r\n\r\n5\r\n{"a":\r\nZZ\r\n'
        )
        return sock.recv(4096)


def test_client_mistakes_are_one_line_warnings(tmp_path: Path) -> None:
    with serve_subprocess(tmp_path, {"TETHER_LOG_FORMAT": "json", "TETHER_STORE_URL": "memory://"}) as server:
        close = send_invalid_utf8_text_frame(server.port)
        answer = send_malformed_chunked_body(server.port)
        assert close[:1] == b"\x88"
        assert close[2:4] == (1007).to_bytes(2, "big")
        assert answer.startswith(b"HTTP/1.1 400")
        log = server.log()
    assert "Traceback" not in log
    records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(records) == len(log.splitlines())
    mistakes = [r for r in records if r["event"] == "http.client_mistake"]
    assert {r["problem"] for r in mistakes} == {
        "Invalid UTF-8 sequence received from client.",
        "Invalid HTTP request received.",
    }
    assert all(r["level"] == "warning" for r in mistakes)


def test_a_refused_upgrade_is_no_error_in_the_log(tmp_path: Path) -> None:
    """An upgrade without a valid key gets 401; uvicorn logged an error for it (its handshake flag stayed unset)."""
    env = {"TETHER_LOG_FORMAT": "json", "TETHER_STORE_URL": "memory://", "TETHER_API_KEYS": '{"sk-t": "t"}'}
    with serve_subprocess(tmp_path, env) as server:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(
                    b"GET /v1/responses HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 401")
            assert b"invalid_api_key" in answer
        # A request after them: the log is written in order, so the refusals' lines are in it by now.
        assert httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10).status_code == 200
        log = server.log()
    records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [r for r in records if r["level"] in ("error", "critical")] == []


def test_an_invalid_utf8_frame_is_logged_without_its_bytes() -> None:
    """uvicorn hands over the UnicodeDecodeError, whose repr holds the whole frame (a client's message content, up
    to the size limit): the line says what was wrong and where, never the payload."""
    frame = b'{"type": "response.create", "input": "my secret \xff plan"}'
    try:
        frame.decode()
    except UnicodeDecodeError as error:
        record = logging.LogRecord(
            "uvicorn.error",
            logging.ERROR,
            __file__,
            0,
            "Invalid UTF-8 sequence received from client.",
            None,
            (type(error), error, error.__traceback__),
        )
    with structlog.testing.capture_logs() as logs:
        UvicornLogHandler().emit(record)
    assert [(line["event"], line["log_level"]) for line in logs] == [("http.client_mistake", "warning")]
    assert "secret" not in repr(logs)
    assert logs[0]["error"] == "UnicodeDecodeError: invalid start byte at position 48"
