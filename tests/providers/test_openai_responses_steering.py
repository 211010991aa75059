"""The openai-responses provider relays a turn's steering over its upstream socket (a scripted WebSocket upstream on
127.0.0.1, no engine): the steer goes up under the upstream's id, and an upstream that never says what became of an
accepted steer costs the socket, not the turn, and the steer fails ``response_not_active``. A turn that could be
steered but is not costs no task (the steers are pushed to the provider as they arrive)."""

from __future__ import annotations

import asyncio

import orjson
from websockets.asyncio.server import ServerConnection, serve

from tether.engine.steering import SteeringInbox
from tether.protocol.model_events import Finish, ModelEvent, TextDelta
from tether.protocol.steer import SteerAnswer, read_steer
from tether.providers.base import ProviderRequest
from tether.providers.fakes.openai_responses import FakeResponsesUpstream
from tether.providers.http_upstream import UpstreamOptions
from tether.providers.openai_responses import OpenAIResponsesProvider
from tether.types import JSONObject


def event(kind: str, **fields: object) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()


class SilentAfterAccepting:
    """Accepts the first steer, completes the response, then says nothing more."""

    def __init__(self) -> None:
        self.frames: list[JSONObject] = []
        self.connections = 0

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        async for message in ws:
            frame = orjson.loads(message)
            self.frames.append(frame)
            if frame["type"] == "response.create":
                response = {"id": "resp_up_1", "object": "response", "status": "in_progress", "output": []}
                await ws.send(event("response.created", sequence_number=0, response=response))
            elif frame["type"] == "response.steer":
                await ws.send(
                    event(
                        "response.steer.accepted",
                        sequence_number=0,
                        steer={"id": "s1", "previous_response_id": "resp_up_1"},
                    )
                )
                done = {**response, "status": "completed", "usage": {"input_tokens": 1, "output_tokens": 0}}
                await ws.send(event("response.completed", sequence_number=1, response=done))


async def test_an_upstream_silent_about_an_accepted_steer_costs_the_socket_not_the_turn() -> None:
    upstream = SilentAfterAccepting()
    async with serve(upstream.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        provider = OpenAIResponsesProvider(
            "up",
            UpstreamOptions(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0),
            transport="websocket",
            steer_answer_grace_s=0.2,
        )
        inbox = SteeringInbox("resp_t", "main")
        answers: list[SteerAnswer] = []
        inbox.submit(
            read_steer({"type": "response.steer", "previous_response_id": "resp_t", "input": "x"}), answers.append
        )
        request = ProviderRequest(
            model="m",
            instructions=None,
            context=[{"type": "message", "role": "user", "content": "hi"}],
            new_items=[{"type": "message", "role": "user", "content": "hi"}],
            tools=[],
            tool_choice="auto",
            context_tokens=1,
            cached_tokens=0,
            previous_response_id=None,
            response_id="resp_t",
            lane_key="conn/main",
            steering=inbox,
        )
        events: list[ModelEvent] = [event async for event in provider.stream(request)]
        assert isinstance(events[-1], Finish)
        assert events[-1].reason == "stop"
        inbox.close()
        inbox.release()
        assert [answer["type"] for answer in answers] == ["response.steer.accepted", "response.steer.failed"]
        assert answers[1]["error"]["code"] == "response_not_active"  # type: ignore[typeddict-item]
        steer = upstream.frames[1]
        assert steer == {"type": "response.steer", "previous_response_id": "resp_up_1", "input": "x"}
        assert provider.pool is not None
        assert provider.pool.lanes == {}  # the socket was not kept for the lane's next turn
        await provider.aclose()


def turn(response_id: str, steering: SteeringInbox | None) -> ProviderRequest:
    hello: list[JSONObject] = [{"type": "message", "role": "user", "content": "a few words to stream"}]
    return ProviderRequest(
        model="m",
        instructions=None,
        context=hello,
        new_items=hello,
        tools=[],
        tool_choice="auto",
        context_tokens=1,
        cached_tokens=0,
        previous_response_id=None,
        response_id=response_id,
        lane_key="conn/main",
        steering=steering,
    )


async def tasks_mid_stream(provider: OpenAIResponsesProvider, request: ProviderRequest) -> int:
    """How many tasks the loop runs while the turn streams (at its first delta); the turn is then read to its end."""
    count = None
    async for model_event in provider.stream(request):
        if count is None and isinstance(model_event, TextDelta):
            count = len(asyncio.all_tasks())
    assert count is not None
    return count


async def test_a_turn_that_can_be_steered_costs_no_task_until_a_steer_arrives() -> None:
    with FakeResponsesUpstream(chunk_size=2, event_delay_s=0.005) as fake:
        provider = OpenAIResponsesProvider(
            "up", UpstreamOptions(base_url=fake.base_url, max_retries=0), transport="websocket"
        )
        try:
            await tasks_mid_stream(provider, turn("resp_warm", None))  # the lane's socket is open from here on
            plain = await tasks_mid_stream(provider, turn("resp_plain", None))
            for n in range(20):
                inbox = SteeringInbox(f"resp_{n}", "main")
                assert await tasks_mid_stream(provider, turn(f"resp_{n}", inbox)) == plain
                inbox.close()
        finally:
            await provider.aclose()
        assert fake.connections == 1
