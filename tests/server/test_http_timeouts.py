"""Slow and silent HTTP clients are timed out: headers, body and keep-alive idle each have a deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx2 as httpx
import openai
import orjson
import pytest
import websockets.sync.client

from tether.server.runner import RunningServer

from .wire import ServerFactory

SHORT = {"header_timeout_s": 0.3, "body_timeout_s": 0.5, "idle_timeout_s": 0.3}


@pytest.fixture
def quick_server(make_server: ServerFactory) -> RunningServer:
    return make_server(http=SHORT)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket timeout, far above the deadlines)."""
    sock.settimeout(20)
    received = b""
    for _ in range(1000):
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk
    raise AssertionError("the server kept sending")


def error_code(answer: bytes) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    code: str = orjson.loads(body)["error"]["code"]
    return code


def test_a_connection_that_never_sends_a_byte_is_closed(quick_server: RunningServer) -> None:
    with socket.create_connection((quick_server.host, quick_server.port)) as sock:
        assert error_code(read_until_closed(sock)) == "request_timeout"


def test_dribbled_headers_are_timed_out(quick_server: RunningServer) -> None:
    with socket.create_connection((quick_server.host, quick_server.port)) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: t\r\n")
        assert error_code(read_until_closed(sock)) == "request_timeout"


def test_a_dribbled_body_is_timed_out(quick_server: RunningServer) -> None:
    with socket.create_connection((quick_server.host, quick_server.port)) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n")
        sock.sendall(b'content-length: 100\r\n\r\n{"model":')
        answer = read_until_closed(sock)
    assert error_code(answer) == "request_timeout"
    assert b"body" in answer


def test_a_body_dribbled_a_byte_at_a_time_is_timed_out(quick_server: RunningServer) -> None:
    """Each byte resets no pause allowance once the body falls below body_min_rate: the client is cut."""
    with socket.create_connection((quick_server.host, quick_server.port)) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: t\r\ncontent-length: 100000\r\n\r\n")
        sock.settimeout(0.1)
        answer = b""
        for _ in range(400):  # about 40 s at most; the deadline is about 1 s
            try:
                sock.sendall(b" ")
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
        answer += read_until_closed(sock) if answer else b""
    assert error_code(answer) == "request_timeout"


def test_a_slow_steady_body_outlasts_the_pause_allowance(make_server: ServerFactory) -> None:
    """A large body on a slow link takes longer than body_timeout_s in all and is still served."""
    server = make_server(http={"header_timeout_s": 0.3, "body_timeout_s": 1.0, "idle_timeout_s": 5.0})
    body = orjson.dumps({"model": "echo", "input": "x" * 60_000, "store": False})
    chunk = len(body) // 25
    with socket.create_connection((server.host, server.port)) as sock:
        head = b"POST /v1/responses HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        sock.sendall(head + b"content-length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), chunk):
            sock.sendall(body[start : start + chunk])
            time.sleep(0.1)  # the slow link itself (about 2.5 s in all), not synchronisation
        sock.settimeout(20)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response with a content-length."""
    sock.settimeout(20)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1]
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_kept_alive_connection_idle_past_the_header_deadline_is_reused(make_server: ServerFactory) -> None:
    """Between requests the idle timeout governs, quietly; the header deadline starts with the next request."""
    server = make_server(http={"header_timeout_s": 0.3, "body_timeout_s": 0.5, "idle_timeout_s": 30.0})
    with socket.create_connection((server.host, server.port)) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(1.0)  # the agent running a tool: longer than the header deadline


def test_an_idle_keep_alive_connection_is_closed(quick_server: RunningServer) -> None:
    with socket.create_connection((quick_server.host, quick_server.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"408" not in answer


def test_requests_within_the_deadlines_and_websockets_are_not_cut(quick_server: RunningServer) -> None:
    with httpx.Client(base_url=quick_server.base_url, timeout=20) as client:
        body = {"model": "echo", "input": "hello", "store": False}
        assert client.post("/responses", json=body).status_code == 200
    with websockets.sync.client.connect(quick_server.ws_url, open_timeout=20) as ws:
        # Past every HTTP deadline: the upgraded socket is governed by its ping timeout, not by them.
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.0)
        ws.send(
            orjson.dumps({"type": "response.create", "model": "echo", "input": "still here", "store": False}).decode()
        )
        for _ in range(100):
            event = orjson.loads(ws.recv(timeout=20))
            if event["type"] == "response.completed":
                break
        assert event["type"] == "response.completed"


UPGRADE = (
    b"GET /v1/responses HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize(
    "request_bytes",
    [
        UPGRADE + b"Content-Length: 5\r\n\r\nhello",
        UPGRADE.replace(b"GET", b"POST") + b"Content-Length: 2\r\n\r\n{}",
        UPGRADE + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        UPGRADE + b"".join(b"X-%d: v\r\n" % n for n in range(200)) + b"\r\n",
    ],
    ids=["body", "post-with-body", "chunked", "200-headers"],
)
def test_an_upgrade_the_websocket_library_cannot_read_is_refused(
    quick_server: RunningServer, request_bytes: bytes
) -> None:
    """It was handed to the WebSocket library, which refused it without a word: no answer, no timer, held forever."""
    with socket.create_connection((quick_server.host, quick_server.port)) as sock:
        sock.sendall(request_bytes)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Failed to open a WebSocket connection" in answer


def test_requests_sent_before_a_half_close_are_answered(server: RunningServer) -> None:
    """A client that shuts its side after sending (``shutdown(SHUT_WR)``) still reads every answer, then the end."""
    plain = orjson.dumps({"model": "echo", "input": "half closed", "store": False})
    streamed = orjson.dumps({"model": "echo", "input": "half closed too", "store": False, "stream": True})
    head = b"POST /v1/responses HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    for requests, answers in (
        ([plain], 1),
        ([streamed], 1),
        ([plain, streamed, plain], 3),  # pipelined, then the half-close
    ):
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"".join(head % len(body) + body for body in requests))
            sock.shutdown(socket.SHUT_WR)
            answer = read_until_closed(sock)
        assert answer.count(b"HTTP/1.1 200 ") == answers, answer[:500]
        assert answer.count(b'"text":"half closed') >= answers
        if streamed in requests:
            assert b"data: [DONE]" in answer


def test_a_half_close_with_nothing_in_flight_closes_the_connection(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b""
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: t\r\ncontent-length: 100\r\n\r\n{")  # a body cut short
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b""


HUGE = 40 * 1024 * 1024


def send_a_huge_body(server: RunningServer, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` with a content-length of :data:`HUGE`, then body bytes until the server stops taking them (or all
    of them); return how many were sent and all the server answered before it closed."""
    received: list[bytes] = []
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(head + b"content-length: %d\r\n\r\n" % HUGE)
        reader = threading.Thread(target=lambda: received.append(read_until_closed(sock)))
        reader.start()
        sent = 0
        chunk = b"x" * 65536
        try:
            while sent < HUGE:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reader.join()
    return sent, received[0]


def test_after_a_413_the_rest_of_a_huge_body_is_not_read_and_the_connection_closes(make_server: ServerFactory) -> None:
    """The server answered 413 at once, then read and discarded all 40 MB the client went on sending, and kept the
    connection open. Now it reads a bounded amount more (so the client can read the 413) and closes."""
    server = make_server(max_body_bytes=4096)
    head_sent = b"POST /v1/responses HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
    sent, answer = send_a_huge_body(server, head_sent)
    assert sent < HUGE // 2, sent  # the server stopped reading, far short of the body
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("chunked", [False, True])
def test_an_httpx_client_sending_a_huge_body_reads_the_413(make_server: ServerFactory, chunked: bool) -> None:
    server = make_server(max_body_bytes=4096)
    body = b'{"model": "echo", "input": "' + b"x" * HUGE + b'"}'

    def pieces() -> Iterator[bytes]:
        for at in range(0, len(body), 65536):
            yield body[at : at + 65536]

    with httpx.Client(base_url=f"http://{server.host}:{server.port}/v1", timeout=30) as client:
        reply = client.post("/responses", content=pieces() if chunked else body)
        assert reply.status_code == 413, reply.text
        assert reply.json()["error"]["code"] == "request_too_large"
        assert client.post("/responses", json={"model": "echo", "input": "hi"}).status_code == 200


def test_the_openai_sdk_sending_a_huge_body_reads_the_413(make_server: ServerFactory) -> None:
    server = make_server(max_body_bytes=4096)
    client = openai.OpenAI(base_url=f"http://{server.host}:{server.port}/v1", api_key="k", max_retries=0)
    with client, pytest.raises(openai.APIStatusError) as refused:
        client.responses.create(model="echo", input="x" * HUGE)
    assert refused.value.status_code == 413
    assert refused.value.code == "request_too_large"


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/tether/edge"])
def test_a_401_before_the_body_is_read_closes_the_connection(make_server: ServerFactory, path: str) -> None:
    """Authentication is decided before the body is read, but the 401 kept the connection open: the server then
    read and discarded all of the body the unauthenticated client went on sending, however large (past the body
    limit too, which only reading it checks). Now the 401 says connection: close and the close lingers, as a 413's."""
    server = make_server(api_keys={"sk-right": "tenant"})
    head_sent = b"POST %s HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\nauthorization: Bearer sk-wrong\r\n"
    sent, answer = send_a_huge_body(server, head_sent % path.encode())
    assert sent < HUGE // 2, sent
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["error"]["code"] == "invalid_api_key"


def test_an_httpx_client_sending_a_huge_body_without_a_key_reads_the_401(make_server: ServerFactory) -> None:
    server = make_server(api_keys={"sk-right": "tenant"})
    body = b'{"model": "echo", "input": "' + b"x" * HUGE + b'"}'
    with httpx.Client(base_url=f"http://{server.host}:{server.port}/v1", timeout=30) as client:
        reply = client.post("/responses", content=body)
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"]["code"] == "invalid_api_key"
        authorized = {"authorization": "Bearer sk-right"}
        ok = client.post("/responses", json={"model": "echo", "input": "hi"}, headers=authorized)
        assert ok.status_code == 200
