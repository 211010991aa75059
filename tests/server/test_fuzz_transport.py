"""Hostile HTTP/1.1 framing against a real ``tether serve``: chunked bodies, lengths, pipelining, half-closes, odd
request lines, headers and upgrades. Each gets the answers HTTP gives it (by status, in order) and then the end of
the connection; none hangs (the deadlines are short, and a socket timeout far above them bounds the wait), none is a
5xx, and the log has no traceback and no error line.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import orjson
import pytest

from tether.testing import ServeProcess, serve_subprocess

pytestmark = pytest.mark.timeout(300)

KEY = "sk-fuzz"
BODY = b'{"model":"echo","input":"hi","store":false}'
STREAMED = b'{"model":"echo","input":"two","store":false,"stream":true}'
UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
WS_KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


def request(
    method: bytes = b"POST",
    path: bytes = b"/v1/responses",
    headers: bytes = b"",
    body: bytes = BODY,
    length: bool = True,
    auth: bool = True,
) -> bytes:
    head = method + b" " + path + b" HTTP/1.1\r\nHost: t\r\n" + (b"Authorization: Bearer sk-fuzz\r\n" if auth else b"")
    return head + headers + (b"Content-Length: %d\r\n" % len(body) if length else b"") + b"\r\n" + body


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for chunk in chunks) + b"0\r\n\r\n"


TE = b"Transfer-Encoding: chunked\r\n"


def chunked_post(body: bytes, coding: bytes = TE) -> bytes:
    return request(headers=coding, body=body, length=False)


def get(path: bytes = b"/v1/responses", headers: bytes = b"", **options: bool) -> bytes:
    return request(b"GET", path, headers, b"", False, **options)


HEALTH = get(b"/health")
BAD_CHUNK = b"f" * 24 + b"\r\nabc\r\n"  # a chunk size past any integer h11 reads

# (name, bytes sent, half-close after sending, statuses expected in order)
CORPUS: list[tuple[str, bytes, bool, list[int]]] = [
    ("chunked", chunked_post(chunked(BODY[:5], BODY[5:])), False, [200]),
    ("chunked a byte at a time", chunked_post(chunked(*(bytes([b]) for b in BODY))), False, [200]),
    ("chunk extension", chunked_post(b"%x;a=b\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"), False, [200]),
    ("trailer", chunked_post(chunked(BODY)[:-2] + b"X-T: 1\r\n\r\n"), False, [200]),
    ("bad chunk size", chunked_post(b"zz\r\n" + BODY + b"\r\n0\r\n\r\n"), False, [400]),
    ("huge chunk size", chunked_post(b"f" * 20 + b"\r\n" + BODY), False, [408]),
    ("no last chunk", chunked_post(b"%x\r\n" % len(BODY) + BODY + b"\r\n"), False, [408]),
    ("chunk without its CRLF", chunked_post(b"%x\r\n" % len(BODY) + BODY + b"0\r\n\r\n"), False, [400]),
    ("chunked and a length", request(headers=TE, body=chunked(BODY)), False, [400]),  # RFC 9112 6.3: refused, closed
    ("chunked and a length, then more", request(headers=TE, body=chunked(BODY)) + HEALTH, False, [400]),
    ("gzip transfer coding", chunked_post(chunked(BODY), b"Transfer-Encoding: gzip, chunked\r\n"), False, [400]),
    # answered on the headers (an unknown path, no API key) while the body's bad chunk size is already in: uvicorn's
    # 400 goes out, and the app's own answer, which h11 then refused, was a traceback in the log
    ("bad chunk size, unknown path", request(path=b"/v1/nope", headers=TE, body=BAD_CHUNK, length=False), False, [400]),
    ("bad chunk size, no API key", request(headers=TE, body=BAD_CHUNK, length=False, auth=False), False, [400]),
    ("length too short", request(headers=b"Content-Length: 5\r\n", length=False), False, [400]),
    ("length too long, then half-closed", request(headers=b"Content-Length: 500\r\n", length=False), True, []),
    ("negative length", request(headers=b"Content-Length: -1\r\n", length=False), False, [400]),
    ("huge length", request(headers=b"Content-Length: 99999999999999999999\r\n", length=False), False, [413]),
    ("two lengths", request(headers=b"Content-Length: 5\r\nContent-Length: 29\r\n", length=False), False, [400]),
    ("no length, half-closed", request(length=False), True, [400]),
    ("expect 100-continue", request(headers=b"Expect: 100-continue\r\n"), False, [100, 200]),
    ("HTTP/1.0", request().replace(b"HTTP/1.1", b"HTTP/1.0", 1), False, [200]),
    ("HTTP/0.9", b"GET /health\r\n\r\n", False, [400]),
    ("TLS hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 100, False, [400]),
    ("bare LF line ends", request().replace(b"\r\n", b"\n"), False, [200]),
    ("200 kB header", request(headers=b"X-A: " + b"a" * 200_000 + b"\r\n"), False, [400]),
    ("5000 headers", request(headers=b"".join(b"X-%d: v\r\n" % n for n in range(5000))), False, [200]),
    ("header without a colon", request(headers=b"Broken\r\n"), False, [400]),
    ("NUL in a header", request(headers=b"X-A: a\x00b\r\n"), False, [400]),
    ("no Host", request().replace(b"Host: t\r\n", b""), False, [400]),
    ("two Hosts", request(headers=b"Host: u\r\n"), False, [400]),
    ("absolute URI", request(path=b"http://elsewhere/v1/responses"), False, [404]),
    ("percent-encoded junk", get(b"/v1/responses/%ff%fe%00"), False, [404]),
    ("100 kB path", get(b"/v1/responses/" + b"a" * 100_000), False, [404]),
    ("lower-case method", request(b"post"), False, [405]),
    ("no key", request(auth=False), False, [401]),
    ("h2c upgrade", get(b"/health", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"), False, [200]),
    ("upgrade with a body", request(b"GET", headers=UPGRADE + WS_KEY, body=b"hello"), False, [400]),
    ("POST upgrade", request(headers=UPGRADE + WS_KEY), False, [400]),
    ("upgrade, chunked", get(headers=UPGRADE + WS_KEY + TE) + b"0\r\n\r\n", False, [400]),
    ("upgrade, 200 headers", get(headers=UPGRADE + WS_KEY + b"X-A: v\r\n" * 200), False, [400]),
    ("upgrade without a key", get(headers=UPGRADE), False, [400]),
    ("upgrade without an API key", get(headers=UPGRADE + WS_KEY, auth=False), False, [401]),
    ("upgrade elsewhere", get(b"/v1/models", UPGRADE + WS_KEY), False, [404]),
    ("pipelined", request() + request(body=STREAMED) + HEALTH, False, [200, 200, 200]),
    ("pipelined, then half-closed", request() + request(body=STREAMED) + HEALTH, True, [200, 200, 200]),
    ("pipelined, a bad one between", request() + request(body=b"{bad") + HEALTH, True, [200, 400, 200]),
    ("a request, then half-closed", request(body=STREAMED), True, [200]),
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    env = {
        "TETHER_LOG_FORMAT": "json",
        "TETHER_STORE_URL": "memory://",
        "TETHER_API_KEYS": orjson.dumps({KEY: "fuzz"}).decode(),
        "TETHER_HTTP__HEADER_TIMEOUT_S": "0.5",
        "TETHER_HTTP__BODY_TIMEOUT_S": "0.5",
        "TETHER_HTTP__IDLE_TIMEOUT_S": "0.5",
    }
    with serve_subprocess(tmp_path_factory.mktemp("fuzz-transport"), env) as served:
        yield served


def exchange(server: ServeProcess, data: bytes, half_close: bool) -> bytes:
    """Send ``data`` and read until the server closes (the deadlines above close every case well within 30 s)."""
    with socket.create_connection((server.host, server.port)) as sock:
        sock.settimeout(30)
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:  # what the server sent before resetting is still the answer
            pass
        return received


@pytest.mark.parametrize(("data", "half_close", "statuses"), [case[1:] for case in CORPUS], ids=[c[0] for c in CORPUS])
def test_hostile_framing_gets_its_answers_then_the_end(
    server: ServeProcess, data: bytes, half_close: bool, statuses: list[int]
) -> None:
    answer = exchange(server, data, half_close)
    assert [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)] == statuses, answer[:600]
    if 200 in statuses and STREAMED in data:
        assert b"data: [DONE]" in answer


def test_the_log_is_clean_after_the_corpus(server: ServeProcess) -> None:
    for _, data, half_close, _ in CORPUS[:3]:
        exchange(server, data, half_close)
    log = server.log()
    assert "Traceback" not in log
    records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [r for r in records if r["level"] in ("error", "critical") and r["event"] != "http.access"] == []
    assert not [r for r in records if isinstance(r.get("status"), int) and r["status"] >= 500]
