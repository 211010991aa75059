"""The gateway follows each turn of an edge link once: a frame refused for a turn it already follows leaves that
follower alone, a repeated turn replaces it, and the link's close ends every follower. Over real sockets, with a raw
edge and an upstream held mid-answer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tether.protocol.delta import value_hash
from tether.providers.fakes import FakeChatCompletions, FakeTurn
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings
from tether.types import JSONObject

from .wire import edge_link_url, edge_turn_frame, expect_edge_turn_error, receive

REQUEST = {"model": "gpt-held", "messages": [{"role": "user", "content": "hello there"}], "stream": True}


class HeldChat(FakeChatCompletions):
    """A Chat Completions upstream that answers with its status at once and its stream once released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    async def _frames(self, body: JSONObject, turn: FakeTurn, cut: bool) -> AsyncIterator[bytes]:
        await asyncio.to_thread(self.release.wait, 60)
        async for frame in super()._frames(body, turn, cut):
            yield frame


@pytest.fixture
def upstream() -> Iterator[HeldChat]:
    with HeldChat() as fake:
        yield fake


@pytest.fixture
def gateway(upstream: HeldChat, tmp_path: Path) -> Iterator[RunningServer]:
    settings = Settings.model_validate({
        "store_url": f"sqlite:///{tmp_path / 'tether.db'}", "log_level": "warning", "max_body_bytes": 4096,
        "providers": {"chat": {"kind": "chat-completions", "base_url": upstream.base_url}},
        "routes": [{"model": "gpt-*", "provider": "chat"}],
    })  # fmt: skip
    with serve_in_thread(settings) as running:
        yield running


def chat_turn(turn: str, headers: dict[str, str] | None = None) -> str:
    frame: JSONObject = {"type": "tether:edge.turn", "turn": turn, "api": "chat-completions",
                         "path": "/v1/chat/completions", "id": value_hash(REQUEST), "base": None,
                         "patch": ["v", REQUEST]}  # fmt: skip
    if headers is not None:
        frame["headers"] = ["v", headers]
    return json.dumps(frame)


async def frames_until_refused(ws: ClientConnection, sentinel: str) -> list[JSONObject]:
    """Every frame up to the refusal of ``sentinel`` (a resume of a turn the gateway has no log of)."""
    await ws.send(json.dumps({"type": "tether:edge.resume", "turn": sentinel, "after": 0}))
    seen = []
    while (frame := await receive(ws))["turn"] != sentinel:
        seen.append(frame)
    assert frame["code"] == "turn_not_found", frame
    return seen


async def test_a_refused_repeat_of_a_followed_turn_does_not_leave_a_second_follower(
    upstream: HeldChat, gateway: RunningServer
) -> None:
    """A turn frame refused (headers_unknown) for a turn the gateway already followed took that follower's place
    without cancelling it: the follower went on, and when the edge sent the turn again with whole headers a second
    one started, so every piece from then on crossed the link twice, the end included (and the first follower
    outlived the link). Now the refusal leaves the follower alone and the repeat replaces it: one end."""
    async with connect(edge_link_url(gateway)) as ws:
        await ws.send(chat_turn("held", headers={}))
        head = await receive(ws)
        assert (head["turn"], head["seq"], head["head"]["status"]) == ("held", 0, 200), head
        await ws.send(edge_turn_frame("big", {"model": "gpt-held", "input": "x" * 6000}))
        expect_edge_turn_error(await receive(ws), "big", "frame_too_large", 413)
        await ws.send(chat_turn("held"))  # relies on headers the gateway never read
        refused = await receive(ws)
        assert (refused["turn"], refused["code"]) == ("held", "headers_unknown"), refused
        await ws.send(chat_turn("held", headers={}))
        replayed = await receive(ws)
        assert (replayed["turn"], replayed["seq"]) == ("held", 0), replayed  # answered from the turn's log
        upstream.release.set()
        frames = [replayed]
        while not frames[-1].get("end"):
            frames.append(await receive(ws))
        frames += await frames_until_refused(ws, "sentinel")
    seqs = [frame["seq"] for frame in frames]
    assert sum(1 for frame in frames if frame.get("end")) == 1, seqs
    assert seqs == list(range(len(frames))), seqs
