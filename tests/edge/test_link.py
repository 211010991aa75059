"""The link's rules for a turn the gateway lost or whose generation was interrupted, driven frame by frame: every
piece reaches the agent once, a new generation never joins one the agent has seen part of."""

from __future__ import annotations

from typing import Any

import orjson

from tether.edge.chains import ChainBook
from tether.edge.link import GatewayLink, LinkOptions, LinkUnavailableError, Turn
from tether.protocol import edge_wire as wire
from tether.protocol.edge_wire import Piece

REQUEST = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
HEAD = {"status": 200, "headers": {"content-type": "text/event-stream"}}


def link(*, hold_answers: bool = False) -> GatewayLink:
    return GatewayLink(LinkOptions("ws://127.0.0.1:9/v1/tether/edge", hold_answers=hold_answers), ChainBook())


def out(turn: Turn, seq: int, **piece: Any) -> bytes:
    return orjson.dumps({"type": wire.OUT, "turn": turn.key, "seq": seq, **piece})


def queued(turn: Turn) -> list[Piece | LinkUnavailableError]:
    items = []
    while not turn.queue.empty():
        items.append(turn.queue.get_nowait())
    return items


def sse(text: str) -> dict[str, Any]:
    return {"sse": ["content_block_delta", text]}


async def test_held_answers_reach_the_agent_only_at_their_end() -> None:
    edge = link(hold_answers=True)
    turn = edge.submit("anthropic-messages", "/v1/messages", REQUEST, {}, 10)
    edge._receive(out(turn, 0, head=HEAD, gen="resp_a"))
    edge._receive(out(turn, 1, **sse("a")))
    assert queued(turn) == [{"head": HEAD}]
    edge._receive(out(turn, 2, end=True))
    assert queued(turn) == [sse("a"), {"end": True}]


async def test_an_interrupted_generation_is_sent_again_under_a_new_key_and_never_shown() -> None:
    edge = link(hold_answers=True)
    turn = edge.submit("anthropic-messages", "/v1/messages", REQUEST, {}, 10)
    first_key = turn.key
    edge._receive(out(turn, 0, head=HEAD, gen="resp_a"))
    edge._receive(out(turn, 1, **sse("partial")))
    edge._receive(out(turn, 2, end=True, interrupted=True, error="stopped"))
    assert turn.key != first_key  # a new idempotency key: generated exactly once more
    assert edge.stats.interrupted == 1
    edge._receive(orjson.dumps({"type": wire.OUT, "turn": first_key, "seq": 3, **sse("late")}))  # the old key
    edge._receive(out(turn, 0, head=HEAD, gen="resp_b"))
    edge._receive(out(turn, 1, **sse("whole")))
    edge._receive(out(turn, 2, end=True))
    assert queued(turn) == [{"head": HEAD}, {"head": HEAD}, sse("whole"), {"end": True}]


async def test_a_lost_turn_answered_by_the_same_generation_skips_what_arrived() -> None:
    edge = link()
    turn = edge.submit("anthropic-messages", "/v1/messages", REQUEST, {}, 10)
    edge._receive(out(turn, 0, head=HEAD, gen="resp_a"))
    edge._receive(out(turn, 1, **sse("a")))
    turn.delivered = True  # the agent read it
    edge._receive(orjson.dumps(wire.refused_frame(turn.key, wire.TURN_NOT_FOUND, "no log")))
    assert turn.resend
    assert edge._frame(turn, None)["type"] == wire.TURN  # the turn itself, not a resume
    for seq, piece in enumerate([{"head": HEAD, "gen": "resp_a"}, sse("a"), sse("b"), {"end": True}]):
        edge._receive(out(turn, seq, **piece))
    assert queued(turn) == [{"head": HEAD}, sse("a"), sse("b"), {"end": True}]


async def test_a_new_generation_never_joins_one_the_agent_has_seen_part_of() -> None:
    edge = link()
    turn = edge.submit("anthropic-messages", "/v1/messages", REQUEST, {}, 10)
    edge._receive(out(turn, 0, head=HEAD, gen="resp_a"))
    edge._receive(out(turn, 1, **sse("a")))
    turn.delivered = True
    edge._receive(orjson.dumps(wire.refused_frame(turn.key, wire.TURN_NOT_FOUND, "no log")))
    edge._receive(out(turn, 0, head=HEAD, gen="resp_b"))
    edge._receive(out(turn, 1, **sse("x")))
    items = queued(turn)
    assert items[:2] == [{"head": HEAD}, sse("a")]
    assert isinstance(items[2], LinkUnavailableError)
    assert items[2].code == "generation_replaced"
    assert len(items) == 3


async def test_a_new_generation_replaces_one_the_agent_has_seen_nothing_of() -> None:
    edge = link()
    turn = edge.submit("anthropic-messages", "/v1/messages", REQUEST, {}, 10)
    edge._receive(out(turn, 0, head=HEAD, gen="resp_a"))
    edge._receive(orjson.dumps(wire.refused_frame(turn.key, wire.TURN_NOT_FOUND, "no log")))
    edge._receive(out(turn, 0, head=HEAD, gen="resp_b"))
    edge._receive(out(turn, 1, **sse("x")))
    edge._receive(out(turn, 2, end=True))
    assert queued(turn) == [{"head": HEAD}, {"head": HEAD}, sse("x"), {"end": True}]


async def test_an_error_naming_a_turn_ends_that_turn_only() -> None:
    """An error frame ended every turn in flight, so one agent's request over the gateway's limits failed every
    other agent's on the same edge; naming its turn, it ends that one, with the gateway's status and code."""
    edge = link()
    over = edge.submit("anthropic-messages", "/v1/messages", REQUEST, {}, 10)
    other = edge.submit("anthropic-messages", "/v1/messages", {**REQUEST, "model": "other"}, {}, 10)
    body = {"code": "too_many_json_values", "message": "too many", "type": "invalid_request_error"}
    error = {"type": "error", "status": 400, "turn": over.key, "error": body}
    edge._receive(orjson.dumps(error))
    [failure] = queued(over)
    assert isinstance(failure, LinkUnavailableError)
    assert (failure.status, failure.code, failure.message) == (400, "too_many_json_values", "too many")
    assert queued(other) == []
    edge._receive(orjson.dumps({key: value for key, value in error.items() if key != "turn"}))  # the link's
    assert isinstance(queued(other)[0], LinkUnavailableError)
