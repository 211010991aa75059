"""The link's rules for a turn the gateway lost or whose generation was interrupted, driven frame by frame: every
piece reaches the agent once, a new generation never joins one the agent has seen part of."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve

from tether.client.retry import RetryPolicy
from tether.edge.chains import ChainBook
from tether.edge.link import CLOSE_MESSAGE_TOO_BIG, KEEPALIVE, GatewayLink, LinkOptions, LinkUnavailableError, Turn
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


async def test_a_1009_close_ends_the_turn_that_sent_the_large_frame_never_another() -> None:
    """The gateway closes the link with 1009 on a frame above what its WebSocket reads. The edge ended the
    unanswered turn whose last frame was largest, among the turns still in flight: when the turn that sent the
    large frame was gone (its agent gave up while the frame was on its way), that was another agent's turn, which
    the gateway had accepted and was generating, and its agent got a 413."""
    frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    close_now = asyncio.Event()
    connections = 0

    async def gateway(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        received = 0
        async for message in ws:
            frame = orjson.loads(message)
            received += 1
            await frames.put(frame)
            if connections == 1 and received == 2:  # the large frame
                await close_now.wait()
                await ws.close(CLOSE_MESSAGE_TOO_BIG, "message too big")
                return
            elif connections == 2:
                await ws.send(out_for(frame["turn"], 0, head=HEAD, gen="resp_a").decode())
                await ws.send(out_for(frame["turn"], 1, end=True).decode())

    async with serve(gateway, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        retry = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.05, max_attempts=1_000_000, max_elapsed_s=1e9)
        edge = GatewayLink(LinkOptions(f"ws://127.0.0.1:{port}/v1/tether/edge", retry=retry), ChainBook())
        await edge.start()
        try:
            accepted = edge.submit("chat-completions", "/v1/chat/completions", REQUEST, {}, 10)
            assert (await frames.get())["turn"] == accepted.key
            large = edge.submit("chat-completions", "/v1/chat/completions", {**REQUEST, "big": "x" * 50_000}, {}, 1)
            assert (await frames.get())["turn"] == large.key

            async def agent_gives_up() -> None:
                async for _ in edge.pieces(large):
                    pass

            abandoned = asyncio.create_task(agent_gives_up())
            await asyncio.sleep(0)  # the agent's read starts (one step of the loop), then the agent goes
            abandoned.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await abandoned
            assert edge.stats.connects == 1
            assert large.key not in edge._turns
            close_now.set()
            answer = [piece async for piece in edge.pieces(accepted) if piece is not KEEPALIVE]
        finally:
            await edge.aclose()
    assert answer == [{"head": HEAD}, {"end": True}]


def out_for(turn: str, seq: int, **piece: Any) -> bytes:
    return orjson.dumps({"type": wire.OUT, "turn": turn, "seq": seq, **piece})
