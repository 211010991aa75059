"""Nothing lost: mid-stream resume (HTTP and WebSocket), idempotent turns, generation that outlives its client,
graceful shutdown. Generations are counted in the engine, so "never twice" is checked, not assumed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
from websockets.asyncio.client import connect

from tether.engine.engine import Engine
from tether.protocol.sse import SSEDecoder
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import ScriptedSettings, Settings
from tether.store.sqlite import SQLiteStore
from tether.testing import settled

from .wire import MODEL, TERMINAL_EVENTS, ServerFactory, receive, send_create, send_json

SLOW = {"ttft_s": 0.05, "tokens_per_second": 300.0}  # a reply takes ~0.3 s: long enough to cut in the middle
LONG_TEXT = "Please repeat back this sentence about resumable streams. " * 3


def engine_of(server: RunningServer) -> Engine:
    return server.engine


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    decoder = SSEDecoder()
    async for chunk in response.aiter_bytes():
        for message in decoder.decode(chunk):
            if message.data != "[DONE]":
                yield orjson.loads(message.data)


async def read_until(response: httpx.Response, last: int) -> list[dict[str, Any]]:
    events = []
    async for event in sse(response):
        events.append(event)
        if event["sequence_number"] >= last:
            break
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def assert_gapless(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] in TERMINAL_EVENTS


async def test_http_stream_cut_midway_resumes_exactly_after_the_last_event_seen(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        body = {"model": "echo", "input": LONG_TEXT, "stream": True}
        async with client.stream("POST", "/responses", json=body) as response:
            head = await read_until(response, 5)
        response_id = head[0]["response"]["id"]
        url = f"/responses/{response_id}?stream=true&starting_after={head[-1]['sequence_number']}"
        async with client.stream("GET", url) as resumed:
            tail = [event async for event in sse(resumed)]
        stored = (await client.get(f"/responses/{response_id}")).json()
    events = head + tail
    assert_gapless(events)
    assert text_of(events) == LONG_TEXT == stored["output"][0]["content"][0]["text"]
    assert engine_of(server).stats.generations == 1


async def test_websocket_cut_midway_resumes_on_a_new_socket(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW)
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input=LONG_TEXT, stream_id="lane-a")
        head = [await receive(ws) for _ in range(6)]
    token = head[0]["response"]["tether:resume_token"]
    async with connect(server.ws_url) as ws:
        await send_json(ws, {"type": "tether:response.resume", "response_id": head[0]["response"]["id"],
                             "starting_after": head[-1]["sequence_number"], "resume_token": token,
                             "stream_id": "lane-b"})  # fmt: skip
        tail: list[dict[str, Any]] = []
        while not tail or tail[-1]["type"] not in TERMINAL_EVENTS:
            tail.append(await receive(ws))
    assert_gapless(head + tail)
    assert text_of(head + tail) == LONG_TEXT
    assert all(e["stream_id"] == "lane-a" for e in head)
    assert all(e["stream_id"] == "lane-b" for e in tail)  # labelled for the lane the client resumed on
    assert engine_of(server).stats.generations == 1


async def test_store_false_resume_needs_the_token_and_ends_with_the_grace_period(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW, resume_grace_s=0.5)
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input=LONG_TEXT, store=False)
        created = await receive(ws)
    response_id = created["response"]["id"]
    token = created["response"]["tether:resume_token"]
    async with connect(server.ws_url) as ws:
        await send_json(ws, {"type": "tether:response.resume", "response_id": response_id})
        refused = await receive(ws)
        assert refused["type"] == "error"
        assert refused["error"]["code"] == "response_not_found"
        await send_json(ws, {"type": "tether:response.resume", "response_id": response_id, "resume_token": token})
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in TERMINAL_EVENTS:
            events.append(await receive(ws))
    assert_gapless(events)
    await settled(server)  # the turn has ended and started its grace period
    registry = engine_of(server).live
    registry.clock = lambda: time.monotonic() + 0.5  # past the grace period a store=false response is gone for good
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        params = {"stream": "true", "tether:resume_token": token}
        gone = await client.get(f"/responses/{response_id}", params=params)
    assert gone.status_code == 404


async def test_a_retried_turn_with_the_same_idempotency_key_is_never_generated_twice(
    make_server: ServerFactory,
) -> None:
    server = make_server(scripted=SLOW)
    body = {"model": "echo", "input": LONG_TEXT, "tether:idempotency_key": "turn-7"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        concurrent = await asyncio.gather(*(client.post("/responses", json=body) for _ in range(3)))
        later = await client.post("/responses", json=body)
        by_header = await client.post("/responses", json={"model": "echo", "input": "x"},
                                      headers={"Idempotency-Key": "turn-7"})  # fmt: skip
    ids = {reply.json()["id"] for reply in [*concurrent, later, by_header]}
    assert len(ids) == 1
    async with connect(server.ws_url) as ws:
        await send_create(ws, **body)
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in TERMINAL_EVENTS:
            events.append(await receive(ws))
    assert events[-1]["response"]["id"] in ids
    assert_gapless(events)
    assert engine_of(server).stats.generations == 1
    assert engine_of(server).stats.idempotent_replays == 5


async def test_idempotency_keys_are_per_tenant(make_server: ServerFactory) -> None:
    server = make_server(api_keys={"key-a": "alice", "key-b": "bob"})
    body = {"model": MODEL, "input": "hi", "tether:idempotency_key": "same"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        alice = await client.post("/responses", json=body, headers={"Authorization": "Bearer key-a"})
        bob = await client.post("/responses", json=body, headers={"Authorization": "Bearer key-b"})
    assert alice.json()["id"] != bob.json()["id"]
    assert engine_of(server).stats.generations == 2


async def test_generation_goes_on_when_the_client_disconnects(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW)
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input=LONG_TEXT)
        response_id = (await receive(ws))["response"]["id"]
    await settled(server)  # the generation the client left has ended
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        reply = await client.get(f"/responses/{response_id}")
    assert reply.json()["status"] == "completed"
    assert reply.json()["output"][0]["content"][0]["text"] == LONG_TEXT


async def test_generation_stops_with_the_last_client_when_configured(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW, continue_on_disconnect=False)
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input=LONG_TEXT)
        response_id = (await receive(ws))["response"]["id"]
    await settled(server)  # the socket's handler has ended, and with it the generation it was the last to follow
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        reply = await client.get(f"/responses/{response_id}")
    assert reply.status_code == 404  # cancelled before it finished: nothing was committed


def test_graceful_shutdown_lets_the_in_flight_turn_finish_and_commit(tmp_path: Path) -> None:
    database = tmp_path / "tether.db"
    settings = Settings(store_url=f"sqlite:///{database}", scripted=ScriptedSettings(ttft_s=0.5), log_level="warning")

    async def start_turn(server: RunningServer) -> str:
        body = {"model": "echo", "input": "bye", "stream": True}
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
            client.stream("POST", "/responses", json=body) as reply,
        ):
            async for event in sse(reply):
                return str(event["response"]["id"])
        raise AssertionError("no event")

    with serve_in_thread(settings) as server:
        response_id = asyncio.run(start_turn(server))
        server.server.should_exit = True  # SIGTERM-like: stop while the model is still thinking

    async def stored_status() -> str | None:
        async with await SQLiteStore.open(database) as store:
            record = await store.get("default", response_id)
        return record.status if record else None

    assert asyncio.run(stored_status()) == "completed"


async def test_max_connection_age_lets_a_running_resume_finish(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW, websocket={"max_connection_age_s": 0.4})
    async with connect(server.ws_url) as first:
        await send_create(first, model="echo", input=LONG_TEXT)
        created = await receive(first)
    response = created["response"]
    types: list[str] = []
    async with connect(server.ws_url) as second:
        await send_json(second, {"type": "tether:response.resume", "response_id": response["id"],
                                 "starting_after": 0, "resume_token": response["tether:resume_token"]})  # fmt: skip
        while not types or types[-1] != "websocket_connection_limit_reached":
            event = await receive(second)
            types.append(event["type"] if event["type"] != "error" else event["error"]["code"])
    # in-flight work (a resume too) finishes before the age limit closes the connection
    assert types[-2:] == ["response.completed", "websocket_connection_limit_reached"]


async def test_a_resume_past_the_end_says_so_instead_of_waiting(make_server: ServerFactory) -> None:
    server = make_server()
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input="short")
        events = [await receive(ws)]
        while events[-1]["type"] not in TERMINAL_EVENTS:
            events.append(await receive(ws))
        last = events[-1]["sequence_number"]
        await send_json(ws, {"type": "tether:response.resume", "response_id": events[0]["response"]["id"],
                             "starting_after": last})  # fmt: skip
        answer = await receive(ws)
    assert answer["type"] == "error"
    assert answer["error"]["code"] == "nothing_to_resume"
    assert answer["error"]["param"] == "starting_after"


async def test_a_resume_past_the_end_is_the_same_error_over_http(make_server: ServerFactory) -> None:
    server = make_server()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        reply = await client.post("/responses", json={"model": "echo", "input": "short"})
        response = reply.json()
        path = f"/responses/{response['id']}"
        async with client.stream("GET", path, params={"stream": "true"}) as replay:
            last = [event async for event in sse(replay)][-1]["sequence_number"]
        for after in (last, last + 10):
            answer = await client.get(path, params={"stream": "true", "starting_after": after})
            assert answer.status_code == 400
            assert answer.json()["error"]["code"] == "nothing_to_resume"
            assert answer.json()["error"]["param"] == "starting_after"


async def test_a_starting_after_below_minus_one_is_the_same_error_on_both_transports(
    make_server: ServerFactory,
) -> None:
    """HTTP read it with int(): -2 replayed everything where WebSocket refused it, and '1_0', '+3' or ' 3' (or
    Arabic-Indic digits) were numbers; the query parameter is now the JSON integer the WebSocket event carries."""
    server = make_server()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        response = (await client.post("/responses", json={"model": "echo", "input": "short"})).json()
        path = f"/responses/{response['id']}"
        http_answer = await client.get(path, params={"stream": "true", "starting_after": "-2"})
        not_numbers = [
            await client.get(path, params={"stream": "true", "starting_after": text})
            for text in ("1_0", "+3", " 3", "\u0663", "3.0")
        ]
    async with connect(server.ws_url) as ws:
        await send_json(ws, {"type": "tether:response.resume", "response_id": response["id"], "starting_after": -2})
        ws_answer = await receive(ws)
    assert http_answer.status_code == ws_answer["status"] == 400
    assert http_answer.json()["error"] == {key: ws_answer["error"][key] for key in ("message", "type", "param", "code")}
    assert http_answer.json()["error"]["code"] == "invalid_value"
    for answer in not_numbers:
        assert answer.status_code == 400
        assert (answer.json()["error"]["code"], answer.json()["error"]["param"]) == ("invalid_type", "starting_after")


async def test_a_resume_past_the_end_of_a_live_response_ends_in_the_error(make_server: ServerFactory) -> None:
    server = make_server(scripted=SLOW)
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input=LONG_TEXT)
        created = await receive(ws)
    response = created["response"]
    async with connect(server.ws_url) as ws:
        # whether the response is still running when this arrives or has ended, the answer is the same
        await send_json(ws, {"type": "tether:response.resume", "response_id": response["id"],
                             "starting_after": 10_000, "resume_token": response["tether:resume_token"],
                             "stream_id": "lane-r"})  # fmt: skip
        answer = await receive(ws)
    assert answer["type"] == "error"
    assert (answer["error"]["code"], answer["stream_id"]) == ("nothing_to_resume", "lane-r")


async def test_deleting_a_response_evicts_it_from_open_connections(make_server: ServerFactory) -> None:
    server = make_server()
    async with connect(server.ws_url) as ws:
        await send_create(ws, model="echo", input="remember me")
        events = [await receive(ws)]
        while events[-1]["type"] not in TERMINAL_EVENTS:
            events.append(await receive(ws))
        response_id = events[-1]["response"]["id"]
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            assert (await client.delete(f"/responses/{response_id}")).status_code == 200
        await send_create(ws, model="echo", input="and now?", previous_response_id=response_id)
        answer = await receive(ws)
    assert answer["type"] == "error"
    assert answer["error"]["code"] == "previous_response_not_found"
