"""An agent's own key reaches a Responses upstream that tether has no key for: the openai SDK → ``tether edge`` →
``tether serve`` → ``FakeResponsesUpstream``, which refuses any request without one of the agents' keys (401
``invalid_api_key``, as the real API does).

The gateway's providers have no ``api_key_env``, so the key the agent sent the edge (``Authorization: Bearer``) is
what goes upstream: on each HTTP request, and on the upgrade of WebSocket sockets that carry only that key's turns.
The key is held in memory for the turn only: no log line, no store row, no edge journal byte carries it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import structlog
from openai import AsyncOpenAI, OpenAI
from openai.types.responses import ResponseCompletedEvent

from tether.edge.run import RunningEdge, edge_in_thread
from tether.netutil import free_port
from tether.providers.fakes import FakeResponsesUpstream, RecordedCreate
from tether.server.runner import RunningServer, serve_in_thread

from .conftest import edge_config, responses_settings

KEY_A = "sk-agent-a-forwarded-0123456789abcdef"
KEY_B = "sk-agent-b-forwarded-fedcba9876543210"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream(api_key=KEY_A, more_api_keys=[KEY_B]) as fake:
        yield fake


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forwarded-credentials")


@pytest.fixture(scope="module")
def gateway(upstream: FakeResponsesUpstream, state_dir: Path) -> Iterator[RunningServer]:
    provider = {"kind": "openai-responses", "base_url": upstream.base_url}  # no api_key_env: no key of its own
    with serve_in_thread(responses_settings(state_dir / "tether.db", provider, log_level="debug")) as running:
        yield running


@pytest.fixture(scope="module")
def edge(gateway: RunningServer, state_dir: Path) -> Iterator[RunningEdge]:
    config = edge_config(gateway.base_url, journal=state_dir / "edge.db")
    with edge_in_thread(config, port=free_port()) as running:
        yield running


def http_turn(edge: RunningEdge, key: str, model: str, text: str) -> str:
    with OpenAI(api_key=key, base_url=edge.base_url + "/v1", max_retries=0) as sdk:
        response = sdk.responses.create(model=model, input=text)
    assert response.status == "completed", response
    return response.output_text


async def websocket_turns(edge: RunningEdge, key: str, texts: list[str]) -> list[str]:
    """One ``responses.connect()`` connection, a ``store=false`` chain of ``texts``."""
    sdk = AsyncOpenAI(api_key=key, base_url=edge.base_url + "/v1", max_retries=0)
    answers: list[str] = []
    async with sdk, sdk.responses.connect() as connection:
        previous: Any = None
        for text in texts:
            extra = {"previous_response_id": previous} if previous else {}
            await connection.response.create(model="ws-model", store=False, input=text, **extra)
            async for event in connection:
                if event.type in ("response.completed", "response.failed", "error"):
                    break
            assert isinstance(event, ResponseCompletedEvent), event
            previous = event.response.id
            answers.append(event.response.output_text)
    return answers


def since(upstream: FakeResponsesUpstream, before: int) -> list[RecordedCreate]:
    return upstream.requests[before:]


def test_the_agents_key_reaches_an_http_upstream(edge: RunningEdge, upstream: FakeResponsesUpstream) -> None:
    before = len(upstream.requests)
    assert http_turn(edge, KEY_A, "http-model", "Say hello over HTTP.") == "Say hello over HTTP."
    (record,) = since(upstream, before)
    assert record.transport == "http"
    assert record.headers["authorization"] == f"Bearer {KEY_A}"


async def test_the_agents_key_reaches_a_websocket_upstream(edge: RunningEdge, upstream: FakeResponsesUpstream) -> None:
    before = len(upstream.requests)
    assert await websocket_turns(edge, KEY_A, ["First.", "Second."]) == ["First.", "Second."]
    records = since(upstream, before)
    assert [record.transport for record in records] == ["websocket", "websocket"]
    assert {record.headers["authorization"] for record in records} == {f"Bearer {KEY_A}"}
    assert records[1].body["previous_response_id"].startswith("resp_up_")  # the socket's chain went on


async def test_two_agents_never_share_an_upstream_socket(edge: RunningEdge, upstream: FakeResponsesUpstream) -> None:
    before = len(upstream.requests)
    # Lane sockets (the agents' own WebSocket connections), then shared sockets (HTTP turns to the WebSocket
    # provider borrow an idle one): B's turn comes right after A's, when A's socket is idle and would be reused.
    await websocket_turns(edge, KEY_A, ["A one.", "A two."])
    await websocket_turns(edge, KEY_B, ["B one.", "B two."])
    http_turn(edge, KEY_A, "ws-model", "A over HTTP.")
    http_turn(edge, KEY_B, "ws-model", "B over HTTP.")
    http_turn(edge, KEY_A, "ws-model", "A again.")
    records = since(upstream, before)
    assert len(records) == 7
    sockets: dict[str, set[int | None]] = {}
    for record in records:
        sockets.setdefault(record.headers["authorization"], set()).add(record.connection)
    assert set(sockets) == {f"Bearer {KEY_A}", f"Bearer {KEY_B}"}
    assert not sockets[f"Bearer {KEY_A}"] & sockets[f"Bearer {KEY_B}"]


async def test_the_agents_key_is_never_logged_stored_or_journaled(
    edge: RunningEdge, upstream: FakeResponsesUpstream, state_dir: Path
) -> None:
    with structlog.testing.capture_logs() as logs:
        http_turn(edge, KEY_A, "http-model", "Keep this turn.")
        await websocket_turns(edge, KEY_B, ["Keep this one too."])
    assert logs, "the gateway logged nothing at debug level: the check below would be vacuous"
    lines = json.dumps(logs, default=repr)
    store, journal = written(state_dir, "tether.db"), written(state_dir, "edge.db")
    for held in (store, journal):  # both were written: their bytes are worth searching
        assert b"Keep this turn." in held
    for key in (KEY_A, KEY_B):
        assert key not in lines
        for held in (store, journal):
            assert key.encode() not in held
            assert key[len("sk-agent-a-") :].encode() not in held  # nor the key's tail, however it is framed


def written(directory: Path, database: str) -> bytes:
    """The bytes of a SQLite database and its sidecar files (``-wal``, ``-shm``, ``-journal``)."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob(database + "*")))


def test_a_refused_frame_never_lends_another_agents_key(upstream: FakeResponsesUpstream, state_dir: Path) -> None:
    """A frame the gateway refuses unread (over max_json_values, over the size limit) carried its agent's headers
    as a delta the gateway never applied, while the edge counted them sent: the next turn with those headers went
    without them, and ran with the headers of the turn before, another agent's key among them."""
    provider = {"kind": "openai-responses", "base_url": upstream.base_url}
    settings = responses_settings(state_dir / "refused.db", provider).model_copy(update={"max_json_values": 2000})
    with (
        serve_in_thread(settings) as gateway,
        edge_in_thread(edge_config(gateway.base_url), port=free_port()) as edge,
        httpx.Client(base_url=edge.base_url + "/v1", timeout=30) as client,
    ):

        def turn(key: str, text: str | list[Any]) -> httpx.Response:
            body = {"model": "http-model", "input": text}
            return client.post("/responses", json=body, headers={"authorization": f"Bearer {key}"})

        assert turn(KEY_A, "A first.").status_code == 200
        many = [{"type": "message", "role": "user", "content": "x"} for _ in range(1000)]
        refused = turn(KEY_B, many)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "too_many_json_values"
        before = len(upstream.requests)
        answer = turn(KEY_B, "B after its refusal.")
        assert answer.status_code == 200, answer.text
    (record,) = since(upstream, before)
    assert record.headers["authorization"] == f"Bearer {KEY_B}"
