"""Memory and responsiveness under the heaviest load the limits allow, against a real ``tether serve``.

200 resume requests arrive on one WebSocket that never reads (each for a stored response whose event log is ~4 MB
and must be loaded from the store), while 4 of the largest requests the limits allow (16 MiB bodies of 10,000
items) run over HTTP. Throughout, the server's RSS stays under :data:`RSS_BOUND_MB` and ``/health`` answers within
:data:`HEALTH_BOUND_S` (both documented in docs/resilience.md; the bound is generous because two shared cores
are slow, not because the server needs it).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tether.testing import ServeProcess, serve_subprocess

pytestmark = pytest.mark.timeout(300)

RSS_BOUND_MB = 700
HEALTH_BOUND_S = 5.0
RESUMES = 200
LARGE_REQUESTS = 4
MAX_BODY = 16 * 1024 * 1024
MAX_ITEMS = 10_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    header = bytes([0x81])
    if length < 126:
        header += bytes([0x80 | length])
    elif length < 65536:
        header += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def open_never_reading_socket(server: ServeProcess) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /v1/responses HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # only the upgrade answer is read, byte by byte; nothing after it ever is
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def largest_body_of_small_objects() -> bytes:
    """The request that costs the most to read: the most JSON objects 16 MiB and 10,000 items can hold (tiny content
    parts). Decoding it is one call that holds the GIL (~0.5 s of CPU), wherever it runs."""
    part = {"type": "input_text", "text": "a"}
    envelope = len(json.dumps({"type": "response.create", "model": "echo", "input": []}))
    per_item = (MAX_BODY - envelope - 1024) // MAX_ITEMS
    empty = len(json.dumps({"type": "message", "role": "user", "content": []}))
    parts = (per_item - empty) // (len(json.dumps(part)) + 2)
    items = [{"type": "message", "role": "user", "content": [part] * parts} for _ in range(MAX_ITEMS)]
    body = json.dumps({"model": "echo", "input": items}).encode()
    assert 0.97 * MAX_BODY < len(body) <= MAX_BODY - len(b'"type": "response.create", ')  # whole parts per item
    return body


def largest_body() -> bytes:
    envelope = len(json.dumps({"model": "echo", "input": []}))
    per_item = (MAX_BODY - envelope - 1024) // MAX_ITEMS
    text = "y" * (per_item - len(json.dumps({"type": "message", "role": "user", "content": ""})) - 2)
    items = [{"type": "message", "role": "user", "content": text} for _ in range(MAX_ITEMS)]
    body = json.dumps({"model": "echo", "input": items}).encode()
    assert MAX_BODY - 16 * 1024 < len(body) <= MAX_BODY
    return body


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    env = {
        "TETHER_LOG_LEVEL": "warning",
        "TETHER_RESUME_GRACE_S": "0",
        "TETHER_STORE_URL": f"sqlite:///{tmp_path / 'memory.db'}",
    }
    with serve_subprocess(tmp_path, env) as running:
        yield running


def test_resumes_from_a_socket_that_never_reads_and_the_largest_requests_stay_bounded(
    server: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        stored = client.post("/responses", json={"model": "echo", "input": "z" * (1024 * 1024)})
        assert stored.status_code == 200
        response_id = stored.json()["id"]
    baseline = rss_mb(server.process.pid)

    sock = open_never_reading_socket(server)
    resume = json.dumps({"type": "tether:response.resume", "response_id": response_id}).encode()
    for index in range(RESUMES):
        frame = json.dumps({"type": "tether:response.resume", "response_id": response_id, "stream_id": f"s{index}"})
        sock.sendall(masked_text_frame(frame.encode() if index else resume))

    body = largest_body()
    statuses: list[int] = []

    def post_large() -> None:
        with httpx.Client(base_url=server.base_url, timeout=120) as large:
            reply = large.post("/responses", content=body, headers={"content-type": "application/json"})
            statuses.append(reply.status_code)

    workers = [threading.Thread(target=post_large) for _ in range(LARGE_REQUESTS)]
    for worker in workers:
        worker.start()
    peak, slowest = baseline, 0.0
    with httpx.Client(base_url=f"http://{server.host}:{server.port}", timeout=60) as health:
        for _ in range(600):  # a bounded measuring window: until the large requests are done, and 3 s more
            started = time.perf_counter()
            assert health.get("/health").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            peak = max(peak, rss_mb(server.process.pid))
            if all(not worker.is_alive() for worker in workers) and len(statuses) == LARGE_REQUESTS:
                break
            threading.Event().wait(0.1)
        for _ in range(30):
            started = time.perf_counter()
            assert health.get("/health").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            peak = max(peak, rss_mb(server.process.pid))
            threading.Event().wait(0.1)
    for worker in workers:
        worker.join(120)
    sock.close()

    with capsys.disabled():
        print(
            f"\nmemory: baseline {baseline:.0f} MB, peak {peak:.0f} MB (bound {RSS_BOUND_MB} MB) with {RESUMES} "
            f"resumes on a socket that never reads and {LARGE_REQUESTS} requests of {len(body) / 2**20:.1f} MiB / "
            f"{MAX_ITEMS} items; slowest /health {slowest:.2f} s (bound {HEALTH_BOUND_S} s)"
        )
    assert statuses == [200] * LARGE_REQUESTS
    assert peak < RSS_BOUND_MB
    assert slowest < HEALTH_BOUND_S


def test_health_answers_while_the_costliest_requests_are_read_on_both_transports(
    server: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    body = largest_body_of_small_objects()
    message = b'{"type": "response.create", ' + body[1:]
    outcomes: list[str] = []

    def post() -> None:
        with httpx.Client(base_url=server.base_url, timeout=240) as client:
            reply = client.post("/responses", content=body, headers={"content-type": "application/json"})
            outcomes.append(f"http {reply.status_code}")

    def send() -> None:
        with ws_connect(server.ws_url, max_size=None, open_timeout=60) as ws:
            ws.send(message.decode())
            while True:
                event = json.loads(ws.recv(timeout=240))
                if event["type"] in ("response.completed", "response.failed", "error"):
                    outcomes.append(f"websocket {event['type']}")
                    return

    workers = [threading.Thread(target=post if index % 2 else send) for index in range(2 * LARGE_REQUESTS)]
    for worker in workers:
        worker.start()
    slowest, answers = 0.0, 0
    with httpx.Client(base_url=f"http://{server.host}:{server.port}", timeout=60) as health:
        while any(worker.is_alive() for worker in workers):
            started = time.perf_counter()
            assert health.get("/health").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            answers += 1
            threading.Event().wait(0.05)
    for worker in workers:
        worker.join()

    with capsys.disabled():
        print(
            f"\nresponsiveness: {LARGE_REQUESTS} HTTP + {LARGE_REQUESTS} WebSocket requests of "
            f"{len(body) / 2**20:.1f} MiB / {MAX_ITEMS} items of tiny parts; {answers} /health answers, slowest "
            f"{slowest:.2f} s (bound {HEALTH_BOUND_S} s)"
        )
    assert sorted(outcomes) == sorted(["http 200"] * LARGE_REQUESTS + ["websocket response.completed"] * LARGE_REQUESTS)
    assert slowest < HEALTH_BOUND_S
