"""The gateway's end of the edge link, in process: rebuilding turns, the refusals an edge heals from, repeats."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog.testing

from tether.engine.engine import Engine, EngineLimits
from tether.protocol import edge_wire as wire
from tether.protocol.delta import MISSING, diff, large_values, value_hash
from tether.protocol.errors import ProtocolError
from tether.providers.router import ProviderRouter
from tether.providers.scripted import ScriptedProvider, ScriptedTiming
from tether.server.auth import Authenticator
from tether.server.edge_content import EdgeContent
from tether.server.edge_link import EdgeGateway
from tether.server.edge_pieces import INTERRUPTED_END
from tether.server.edge_turns import EdgeTurns, TurnLog
from tether.store.base import StoreDamagedError
from tether.store.memory import MemoryStore

BASE = {"model": "scripted", "instructions": "i" * 600, "input": [{"role": "user", "content": "hello"}]}
NEXT = {**BASE, "input": [*BASE["input"], {"role": "user", "content": "again"}]}


@contextlib.asynccontextmanager
async def node(store: MemoryStore) -> AsyncIterator[EdgeGateway]:
    """One gateway node on ``store`` (several share one store, as a cluster's nodes do)."""
    engine = Engine(store, ProviderRouter({"scripted": ScriptedProvider(ScriptedTiming(0.0, 0.0))}), EngineLimits())
    turns = EdgeTurns(grace_s=60)
    try:
        yield EdgeGateway(engine, Authenticator({}), EdgeContent(1 << 24, store), turns, 1 << 24)
    finally:
        await turns.aclose()
        await engine.aclose()


@pytest.fixture
async def gateway() -> AsyncIterator[EdgeGateway]:
    async with node(MemoryStore()) as running:
        yield running


def frame(turn: str, base: Any, new: dict[str, Any], known: Any = ()) -> wire.TurnFrame:
    return {
        "type": wire.TURN, "turn": turn, "api": "responses", "path": "/v1/responses", "id": value_hash(new),
        "base": None if base is MISSING else value_hash(base), "patch": diff(base, new, known),
    }  # fmt: skip


async def pieces(log: TurnLog) -> list[dict[str, Any]]:
    return [piece async for _, piece in log.follow()]


async def test_a_delta_against_a_held_request_is_rebuilt_and_answered(gateway: EdgeGateway) -> None:
    first = await gateway.open_turn("t", frame("one", MISSING, BASE), {})
    assert isinstance(first, TurnLog)
    assert (await pieces(first))[-1] == {"end": True}
    second = await gateway.open_turn("t", frame("two", BASE, NEXT), {})
    assert isinstance(second, TurnLog)
    answer = await pieces(second)
    assert answer[0]["head"]["status"] == 200
    assert gateway.content.get("t", value_hash(NEXT)) == NEXT


async def test_an_unknown_base_is_refused_so_the_edge_heals(gateway: EdgeGateway) -> None:
    refused = await gateway.open_turn("t", frame("one", BASE, NEXT), {})
    assert not isinstance(refused, TurnLog)
    assert refused["code"] == wire.UNKNOWN_BASE


async def test_unknown_references_are_listed(gateway: EdgeGateway) -> None:
    known = {value_hash(BASE["instructions"])}
    refused = await gateway.open_turn("t", frame("one", MISSING, BASE, known), {})
    assert not isinstance(refused, TurnLog)
    assert refused["code"] == wire.UNKNOWN_REFERENCE
    assert refused["missing"] == [value_hash(BASE["instructions"])]


async def test_a_rebuilt_request_that_misses_its_hash_is_refused(gateway: EdgeGateway) -> None:
    wrong = {**frame("one", MISSING, BASE), "id": value_hash(NEXT)}
    refused = await gateway.open_turn("t", wrong, {})  # type: ignore[arg-type]
    assert not isinstance(refused, TurnLog)
    assert refused["code"] == wire.DELTA_MISMATCH


async def test_a_repeated_turn_is_answered_from_its_log(gateway: EdgeGateway) -> None:
    first = await gateway.open_turn("t", frame("one", MISSING, BASE), {})
    again = await gateway.open_turn("t", frame("one", MISSING, BASE), {})
    assert first is again
    other_tenant = await gateway.open_turn("u", frame("one", MISSING, BASE), {})
    assert other_tenant is not first


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ([], "type"), ({"type": wire.TURN}, "turn"), ({"type": "x", "turn": "a"}, "type"),
        ({"type": wire.RESUME, "turn": "a", "after": -2}, "after"),
        ({"type": wire.TURN, "turn": "a", "api": "soap"}, "api"),
        ({"type": wire.TURN, "turn": "a", "api": "responses", "path": "v1"}, "path"),
        ({"type": wire.TURN, "turn": "a", "api": "responses", "path": "/v1", "id": 1}, "id"),
        ({"type": wire.TURN, "turn": "a", "api": "responses", "path": "/v1", "id": "h", "base": 2}, "base"),
        ({"type": wire.TURN, "turn": "a", "api": "responses", "path": "/v1", "id": "h", "base": None}, "patch"),
        ({"type": wire.TURN, "turn": "a", "api": "responses", "path": "/v1", "id": "h", "base": None,
          "patch": ["="], "headers": {}}, "headers"),
    ],
)  # fmt: skip
def test_malformed_frames_are_refused_naming_the_field(raw: Any, param: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        wire.parse_uplink(raw)
    assert caught.value.param == param


async def test_a_delta_that_expands_past_the_limit_is_refused(gateway: EdgeGateway) -> None:
    held = {"model": "scripted", "input": [{"role": "user", "content": "x" * 60_000}]}
    first = await gateway.open_turn("t", frame("one", MISSING, held), {})
    assert isinstance(first, TurnLog)
    blob = value_hash(held["input"][0])
    patch = ["f", {"input": ["a", [["n", ["r", blob]]] * 400]}]
    bomb: dict[str, Any] = {"type": wire.TURN, "turn": "two", "api": "responses", "path": "/v1/responses",
                            "id": "0" * 32, "base": None, "patch": patch}  # fmt: skip
    with pytest.raises(ProtocolError) as refused:  # the agent's error (413), not a refusal to heal from
        await gateway.open_turn("t", bomb, {})  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.code) == (413, "request_too_large")


async def test_another_node_on_the_store_continues_the_chain_with_its_references() -> None:
    store = MemoryStore()
    known = {value_hash(BASE["instructions"])}
    async with node(store) as first:
        log = await first.open_turn("t", frame("one", MISSING, BASE), {})
        assert isinstance(log, TurnLog)
        await pieces(log)
    async with node(store) as other:  # a restarted gateway, or another node of the cluster
        log = await other.open_turn("t", frame("two", BASE, NEXT, known), {})
        assert isinstance(log, TurnLog)
        assert (await pieces(log))[0]["head"]["status"] == 200
        assert other.content.get("t", value_hash(NEXT)) == NEXT
        refused = await other.open_turn("u", frame("three", BASE, NEXT), {})  # the store is scoped by tenant
        assert not isinstance(refused, TurnLog)
        assert refused["code"] == wire.UNKNOWN_BASE


async def test_a_store_false_request_never_reaches_the_store() -> None:
    store = MemoryStore()
    private = {**BASE, "store": False}
    async with node(store) as first:
        log = await first.open_turn("t", frame("one", MISSING, private), {})
        assert isinstance(log, TurnLog)
        await pieces(log)
        assert first.content.get("t", value_hash(private)) == private  # this node's memory holds it
    digests = [digest for digest, _, _ in large_values(private)] + [value_hash(private)]
    assert await store.get_edge_blobs("t", digests) == {}
    async with node(store) as other:
        refused = await other.open_turn("t", frame("two", private, {**private, "input": NEXT["input"]}), {})
        assert not isinstance(refused, TurnLog)
        assert refused["code"] == wire.UNKNOWN_BASE


@pytest.mark.parametrize("request_body", [{**BASE, "stream": True}, BASE])
async def test_a_turn_whose_node_died_ends_interrupted_so_the_edge_retries_it(
    gateway: EdgeGateway, request_body: dict[str, Any]
) -> None:
    # The edge's turn "dead" is held by a node whose lease has already lapsed (it died mid-generation).
    claim = await gateway.engine.store.claim_turn("t", "resp_dead", key="edge:dead", node="gone", lease_s=0.0)
    assert claim.lease is not None
    log = await gateway.open_turn("t", frame("dead", MISSING, request_body), {})
    assert isinstance(log, TurnLog)
    answer = await pieces(log)
    assert answer[-1] == INTERRUPTED_END  # not the agent's error: the edge sends the turn again under a new key
    assert all("body" not in piece and "event" not in piece for piece in answer)


class DamagedStore(MemoryStore):
    """A store whose every stored context is a row the disk damaged."""

    async def load_context(self, tenant: str, response_id: str) -> Any:
        raise StoreDamagedError(f"database /x/tether.db is damaged ({response_id}); run 'tether check'")

    async def get(self, tenant: str, response_id: str) -> Any:
        raise StoreDamagedError(f"database /x/tether.db is damaged ({response_id}); run 'tether check'")


async def test_a_damaged_stored_row_ends_the_edge_turn_with_one_store_damaged_line() -> None:
    """The edge's path to a damaged row logged edge.turn.failed, as for a bug; it is the disk's fault, said as on
    every other transport: one store.damaged line naming the file, and the turn ends with the gateway's error."""
    continued = {**NEXT, "previous_response_id": "resp_" + "0" * 32}
    async with node(DamagedStore()) as gateway:
        with structlog.testing.capture_logs() as logs:
            log = await gateway.open_turn("t", frame("one", MISSING, continued), {})
            assert isinstance(log, TurnLog)
            ended = await pieces(log)
    assert ended[-1]["end"] is True
    assert "error" in ended[-1], ended
    errors = [entry for entry in logs if entry["log_level"] in ("error", "critical")]
    assert [entry["event"] for entry in errors] == ["store.damaged"], errors
    assert "/x/tether.db" in errors[0]["problem"]
