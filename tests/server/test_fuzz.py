"""Fuzzing a real ``tether serve``: generated and hostile HTTP bodies and WebSocket messages.

Hypothesis generates request-shaped JSON (known and unknown fields, item and event types, every JSON type in every
place) and arbitrary bytes; a fixed hostile corpus adds nesting depth, size, unicode, numbers and binary frames. The
server must answer every one: no 5xx, no hang (every answer within a bounded timeout), no socket dropped where the
protocol keeps it open, no traceback in its log, and a normal turn still served at the end. The number of inputs
sent is reported in the test output.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tether.protocol.json_depth import MAX_JSON_DEPTH
from tether.testing import ServeProcess, serve_subprocess

pytestmark = pytest.mark.timeout(600)

HTTP_EXAMPLES = 6_000
WS_EXAMPLES = 4_000
ANSWER_TIMEOUT_S = 20.0
MAX_BODY = 64 * 1024
PATHS = ("/responses", "/responses", "/responses", "/responses/compact", "/responses/input_tokens")
# Closing is the protocol's answer to these: 1009 (message too large) and 1007 (invalid UTF-8).
CLOSING_CODES = frozenset({1007, 1009})


@dataclass
class Tally:
    http: int = 0
    ws: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def status(self, code: int) -> None:
        self.statuses[code] = self.statuses.get(code, 0) + 1


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    workdir = tmp_path_factory.mktemp("fuzz")
    env = {
        "TETHER_LOG_FORMAT": "json",
        "TETHER_LOG_LEVEL": "warning",
        "TETHER_MAX_BODY_BYTES": str(MAX_BODY),
        "TETHER_STORE_URL": f"sqlite:///{workdir / 'fuzz.db'}",
    }
    with serve_subprocess(workdir, env) as server:
        yield server


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


@pytest.fixture(scope="module")
def client(fuzzed: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.base_url, timeout=ANSWER_TIMEOUT_S) as http:
        yield http


# -- strategies ---------------------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=24),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=6,
)
ITEM_TYPES = (
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "compaction",
    "item_reference",
    "web_search_call",
    "x_unknown_item",
    "",
)
items = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(ITEM_TYPES) | json_values},
        optional={
            "role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "x"]) | json_values,
            "content": st.text(max_size=24) | json_values,
            "call_id": st.text(max_size=12) | json_values,
            "output": st.text(max_size=24) | json_values,
            "name": st.text(max_size=12) | json_values,
            "arguments": st.text(max_size=24) | json_values,
            "id": st.text(max_size=20) | json_values,
            "encrypted_content": st.text(max_size=24) | st.just("tether:v1:e30") | json_values,
        },
    ),
    json_values,
)
create_fields = {
    "model": st.sampled_from(["echo", "gpt-test", "script:absent", ""]) | json_values,
    "input": st.text(max_size=60) | st.lists(items, max_size=4) | json_values,
}
optional_fields = {
    "stream": st.booleans() | json_values,
    "store": st.booleans() | json_values,
    "previous_response_id": st.text(max_size=30) | json_values,
    "instructions": st.text(max_size=24) | json_values,
    "tools": st.lists(json_values, max_size=3) | json_values,
    "tool_choice": json_values,
    "max_output_tokens": st.integers(min_value=-5, max_value=50) | json_values,
    "temperature": json_values,
    "reasoning": json_values,
    "text": json_values,
    "metadata": json_values,
    "background": json_values,
    "stream_id": st.text(max_size=10) | json_values,
    "generate": json_values,
    "tether:inherit_params": json_values,
    "tether:idempotency_key": st.text(max_size=10) | json_values,
    "x_unknown": json_values,
}
create_bodies = st.fixed_dictionaries(create_fields, optional=optional_fields)
http_bodies = st.one_of(
    create_bodies.map(lambda body: json.dumps(body).encode()),
    create_bodies.map(lambda body: json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
)
WS_TYPES = ("response.create", "tether:response.resume", "response.steer", "response.cancel", "x.unknown", "")
ws_events = st.fixed_dictionaries(
    {"type": st.sampled_from(WS_TYPES) | json_values},
    optional={**create_fields, **optional_fields, "response_id": json_values, "starting_after": json_values},
)
ws_messages = st.one_of(
    ws_events.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=80),
    st.binary(max_size=80),
)


# -- the hostile corpus -------------------------------------------------------------------------------------------


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def hostile_http_corpus() -> list[bytes]:
    corpus: list[str | bytes] = []
    for depth in (MAX_JSON_DEPTH - 6, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 253, 254, 255, 1023, 1024, 1025, 100_000):
        corpus.append('{"model":"echo","input":"hi","x":' + nested(depth) + "}")
        corpus.append(
            '{"model":"echo","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"a",'
            '"x":' + nested(depth) + "}]}]}"
        )
        corpus.append('{"model":"echo","input":"hi","x":' + '{"a":' * depth + "1" + "}" * depth + "}")
    corpus += [
        b"",
        b"null",
        b"[]",
        b'"string"',
        b"{",
        b"{}",
        b'{"model": "echo", "input": "' + b"x" * (MAX_BODY + 10) + b'"}',
        b'{"model": "echo", "input": "' + b"x" * (MAX_BODY - 100) + b'"}',
        b'{"model":"echo","input":"\xff\xfe invalid utf-8"}',
        b'{"model":"echo","input":"\xc0\xaf overlong"}',
        '{"model":"echo","input":"\\ud800 lone surrogate"}',
        '{"model":"echo","input":"\\udfff\\ud800"}',
        '{"model":"echo","input":"line\u2028separator\u2029and\x00nul"}',
        '{"model":"echo","input":"\u202eright-to-left \U0001f600 \ufeff bom"}',
        '{"model":"echo","input":"hi","max_output_tokens":1e400}',
        '{"model":"echo","input":"hi","max_output_tokens":123456789012345678901234567890}',
        '{"model":"echo","input":"hi","temperature":-0.0}',
        '{"model":"echo","model":"gpt-test","input":"duplicate keys"}',
        '{"model":"echo","input":[{"type":"message","role":"user","content":[{"type":"x_part","text":1}]}]}',
        '{"model":"echo","input":[{"type":"function_call_output","call_id":"nope","output":"x"}]}',
        '{"model":"echo","input":[{"type":"compaction","encrypted_content":"tether:v1:!!!"}]}',
        '{"model":"echo","input":[{"type":"compaction","encrypted_content":"tether:v1:W1tbW1tdXV1dXQ=="}]}',
        '{"model":"echo","input":"hi","stream":true,"previous_response_id":"resp_' + "0" * 32 + '"}',
        '{"model":"echo","input":"hi","background":true}',
        '{"model":"echo","input":"hi","background":true,"stream":true}',
        '{"model":"echo","input":"hi","background":true,"store":false}',
        '{"model":"echo","input":"hi","stream_id":"lane"}',
        '{"model":' + json.dumps("m" * 5000) + ',"input":"long model name"}',
        '{"model":"echo","input":' + json.dumps(["x"] * 2000) + "}",
    ]
    return [entry if isinstance(entry, bytes) else entry.encode("utf-8", "surrogatepass") for entry in corpus]


def hostile_ws_corpus() -> list[str | bytes]:
    corpus: list[str | bytes] = [
        b"\x00\x01binary",
        b'{"type":"response.create","model":"echo","input":"as binary"}',
        "",
        "not json",
        "null",
        "[]",
        '{"type":[]}',
        '{"type":{}}',
        '{"type":null}',
        '{"type":1}',
        '{"type":"response.create"}',
        '{"type":"response.create","model":"echo","input":"hi","stream_id":[]}',
        '{"type":"response.create","model":"echo","input":"hi","stream_id":"' + "s" * 300 + '"}',
        '{"type":"tether:response.resume","response_id":[]}',
        '{"type":"tether:response.resume","response_id":"resp_x","starting_after":"a"}',
        '{"type":"response.steer","response_id":"resp_x"}',
        '{"type":"response.create","model":"echo","input":"\\ud800"}',
        '{"type":"response.create","model":"echo","input":"hi","stream":false,"store":"yes"}',
    ]
    for depth in (MAX_JSON_DEPTH + 1, 254, 1023, 1024, 5000):
        corpus.append('{"type":"response.create","model":"echo","input":"hi","x":' + nested(depth) + "}")
    return corpus


# -- HTTP ---------------------------------------------------------------------------------------------------------


def post(client: httpx.Client, tally: Tally, path: str, body: bytes) -> None:
    with client.stream("POST", path, content=body, headers={"content-type": "application/json"}) as response:
        response.read()  # an SSE stream must end too: a hang is a timeout here
    tally.http += 1
    tally.status(response.status_code)
    assert response.status_code < 500, (path, body[:300], response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text[:300]
        assert set(response.json()["error"]) >= {"message", "type", "param", "code"}


def test_hostile_http_corpus(client: httpx.Client, tally: Tally) -> None:
    for body in hostile_http_corpus():
        for path in ("/responses", "/responses/compact", "/responses/input_tokens"):
            post(client, tally, path, body)


@settings(
    max_examples=HTTP_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(body=http_bodies, path_index=st.integers(min_value=0, max_value=len(PATHS) - 1))
def test_generated_http_bodies(client: httpx.Client, tally: Tally, body: bytes, path_index: int) -> None:
    post(client, tally, PATHS[path_index], body)


# -- WebSocket ----------------------------------------------------------------------------------------------------


@dataclass
class Socket:
    """One WebSocket to the fuzzed server, reopened only where the protocol closes it (1007, 1009)."""

    server: ServeProcess
    ws: ClientConnection | None = None

    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def get(self) -> ClientConnection:
        if self.ws is None:
            self.ws = self.stack.enter_context(
                connect(self.server.ws_url, open_timeout=ANSWER_TIMEOUT_S, max_size=None, ping_interval=None)
            )
        return self.ws

    def close(self) -> None:
        self.ws = None
        self.stack.close()
        self.stack = contextlib.ExitStack()


@pytest.fixture(scope="module")
def socket_(fuzzed: ServeProcess) -> Iterator[Socket]:
    holder = Socket(fuzzed)
    yield holder
    holder.close()


def ends_answer(event: dict[str, Any]) -> bool:
    terminal = event["type"] in ("response.completed", "response.failed", "response.incomplete")
    steering = event["type"] == "response.steer.failed"  # a response.steer's whole answer
    return terminal or steering or (event["type"] == "error" and "sequence_number" not in event)


def send_ws(socket_: Socket, tally: Tally, message: str | bytes) -> None:
    """Send one message and read until its answer ends; a close is allowed only with the protocol's codes."""
    ws = socket_.get()
    tally.ws += 1
    try:
        ws.send(message)
        for _ in range(10_000):
            raw = ws.recv(timeout=ANSWER_TIMEOUT_S)
            assert isinstance(raw, str), "the server sent a binary frame"
            event = json.loads(raw)
            if event["type"] == "error":
                assert event["status"] < 500, event
            if ends_answer(event):
                return
        raise AssertionError("an answer that never ends")
    except ConnectionClosed as closed:
        socket_.close()
        code = closed.rcvd.code if closed.rcvd is not None else None
        assert code in CLOSING_CODES, f"socket dropped ({code}) after {message[:200]!r}"


def test_hostile_ws_corpus(socket_: Socket, tally: Tally) -> None:
    for message in hostile_ws_corpus():
        send_ws(socket_, tally, message)
    too_large = '{"type":"response.create","model":"echo","input":"' + "x" * (MAX_BODY + 10) + '"}'
    send_ws(socket_, tally, too_large)  # answered with message_too_large, then closed with 1009
    with pytest.raises(ConnectionClosed) as closed_too_large:
        socket_.get().recv(timeout=ANSWER_TIMEOUT_S)
    assert closed_too_large.value.rcvd is not None
    assert closed_too_large.value.rcvd.code == 1009
    socket_.close()
    invalid_utf8 = socket_.get()
    with invalid_utf8.protocol_mutex:  # a text frame that is not UTF-8: the RFC says close with 1007
        invalid_utf8.protocol.send_text(b"\xff\xfe")
        invalid_utf8.send_data()
    tally.ws += 1
    with pytest.raises(ConnectionClosed) as closed:
        invalid_utf8.recv(timeout=ANSWER_TIMEOUT_S)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1007
    socket_.close()


@settings(
    max_examples=WS_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(message=ws_messages)
def test_generated_ws_messages(socket_: Socket, tally: Tally, message: str | bytes) -> None:
    send_ws(socket_, tally, message)


# -- after it all -------------------------------------------------------------------------------------------------


def test_a_normal_turn_is_served_and_the_log_is_clean(
    fuzzed: ServeProcess, client: httpx.Client, socket_: Socket, tally: Tally, capsys: pytest.CaptureFixture[str]
) -> None:
    reply = client.post("/responses", json={"model": "echo", "input": "still fine"})
    assert reply.status_code == 200
    assert reply.json()["output"][0]["content"][0]["text"] == "still fine"
    ws = socket_.get()
    ws.send(json.dumps({"type": "response.create", "model": "echo", "input": "still fine", "store": False}))
    events: list[dict[str, Any]] = []
    while not events or not ends_answer(events[-1]):
        events.append(json.loads(ws.recv(timeout=ANSWER_TIMEOUT_S)))
    assert events[-1]["type"] == "response.completed"

    log = fuzzed.log()
    assert "Traceback" not in log
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    server_errors = [r for r in records if isinstance(r.get("status"), int) and r["status"] >= 500]
    assert server_errors == []
    assert not [r for r in records if r.get("level") in ("error", "critical")]
    assert tally.http >= HTTP_EXAMPLES
    assert tally.ws >= WS_EXAMPLES
    assert tally.http + tally.ws >= 10_000
    summary = (
        f"fuzz: {tally.http} HTTP bodies and {tally.ws} WebSocket messages against tether serve; "
        f"0 5xx, 0 hangs, 0 dropped sockets, 0 tracebacks; statuses {dict(sorted(tally.statuses.items()))}"
    )
    with capsys.disabled():  # the count belongs in the test run's output, not only in a failure report
        print(f"\n{summary}")
