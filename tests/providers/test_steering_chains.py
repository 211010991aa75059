"""Steering chains through a real tether server, the fake Responses upstream over WebSocket and the official
``openai`` SDK: a successor steered again, several steers before one boundary, a client that leaves between the
steered response's end and its successor's, the ordering the SDK's lanes rely on, and that steering costs ordinary
turns nothing (no task left behind)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx2 as httpx
import pytest
from openai import AsyncOpenAI
from steering_support import LONG, TERMINALS, created, events_until, is_terminal

from tether.audit.log import AuditLog
from tether.providers.fakes.openai_responses import FakeResponsesUpstream
from tether.providers.openai_responses import OpenAIResponsesProvider
from tether.providers.router import RoutedProvider
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings
from tether.testing import settled

# A second long text (the fake echoes the latest user message): a successor that streams long enough to be steered.
LONG_B = " ".join(f"again{n}" for n in range(50))
LONGER = " ".join(f"more{n}" for n in range(150))  # about 10 s of stream


def settings(fake: FakeResponsesUpstream, tmp_path: Path, **extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "store_url": f"sqlite:///{tmp_path / 'tether.db'}",
            "log_level": "warning",
            "providers": {"up": {"kind": "openai-responses", "base_url": fake.base_url, "transport": "websocket"}},
            "routes": [{"model": "up-*", "provider": "up"}],
            **extra,
        }
    )


@pytest.fixture
def fake() -> Iterator[FakeResponsesUpstream]:
    with FakeResponsesUpstream(chunk_size=2, event_delay_s=0.02) as upstream:
        yield upstream


@pytest.fixture
def gateway(fake: FakeResponsesUpstream, tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(settings(fake, tmp_path)) as server:
        yield server


def check_order(events: list[Any], current: str | None = None) -> None:
    """One created and one terminal per response, and each response's sequence numbers strictly increasing
    (``current``: the response streaming before the first event)."""
    seen: dict[str, list[int]] = {}
    for event in events:
        if event.type.startswith("response.steer"):
            continue
        response: Any = getattr(event, "response", None)
        if event.type == "response.created":
            assert current is None, f"{response.id} created while {current} streams"
            current = response.id
        assert current is not None, event.type
        seen.setdefault(current, []).append(event.sequence_number)
        if event.type in TERMINALS:
            assert response.id == current
            current = None
    for numbers in seen.values():
        assert numbers == sorted(set(numbers)), numbers


async def test_a_successor_steered_again_is_followed_by_another(
    gateway: RunningServer, fake: FakeResponsesUpstream, tmp_path: Path
) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        first = await created(connection, model="up-6", input=LONG, stream_id="main")
        await connection.response.steer(previous_response_id=first, input=LONG_B)
        events = await events_until(connection, lambda event: event.type == "response.incomplete")
        more = await events_until(connection, lambda event: event.type == "response.created")
        events += more
        second = more[-1].response.id
        assert more[-1].response.previous_response_id == first
        await connection.response.steer(previous_response_id=second, input="the end")
        tail = await events_until(connection, lambda event: event.type == "response.incomplete")
        tail += await events_until(connection, lambda event: event.type in ("response.completed", "response.failed"))
        events += tail
        third = tail[-1].response
        assert tail[-1].type == "response.completed"
        assert third.previous_response_id == second
        assert third.output_text == "the end"
        assert {event.stream_id for event in events} == {"main"}
        check_order(events, first)
        accepted = [event for event in events if event.type == "response.steer.accepted"]
        assert [event.steer.previous_response_id for event in accepted] == [first, second]

        # The chain goes on from the last successor, on the same socket.
        later = await created(connection, model="up-6", previous_response_id=third.id, input="more")
        assert (await events_until(connection, is_terminal))[-1].response.output_text == "more"

    with httpx.Client(base_url=gateway.base_url) as http:
        records = {rid: http.get(f"/responses/{rid}").json() for rid in (first, second, third.id, later)}
        assert [records[rid]["status"] for rid in (first, second, third.id, later)] == [
            "incomplete",
            "incomplete",
            "completed",
            "completed",
        ]
        assert records[second]["incomplete_details"] == {"reason": "steered"}
        assert records[second]["previous_response_id"] == first
        items = http.get(f"/responses/{third.id}/input_items").json()["data"]
        assert [item["content"][0]["text"] for item in items] == ["the end"]
        # Continued over HTTP too: its context is the whole chain.
        answer = http.post("/responses", json={"model": "up-6", "previous_response_id": third.id, "input": "http"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"][0]["content"][0]["text"] == "http"
    audited = [e for e in AuditLog(tmp_path / "audit").entries("tenant:default") if e["kind"] == "turn"]
    assert [entry["response_id"] for entry in audited] == [first, second, third.id, later, answer.json()["id"]]
    creates = [r for r in fake.requests if r.body.get("type") == "response.create"]
    assert len(creates) == 3  # first, later and the HTTP turn: both successors were the upstream's own


async def test_several_steers_before_one_boundary_go_into_one_successor_in_order(gateway: RunningServer) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        first = await created(connection, model="up-6", input=LONG)
        for text in ("one", "two", "three"):
            await connection.response.steer(previous_response_id=first, input=text)
        events = await events_until(connection, lambda event: event.type == "response.completed")
        check_order(events, first)
        answers = [event for event in events if event.type.startswith("response.steer")]
        # Each steer is either in the successor (accepted, and committed by its response.created) or failed.
        assert all(event.type == "response.steer.accepted" for event in answers), [e.type for e in answers]
        successor = events[-1].response
        assert successor.previous_response_id == first
    with httpx.Client(base_url=gateway.base_url) as http:
        items = http.get(f"/responses/{successor.id}/input_items", params={"order": "asc"}).json()["data"]
    assert [item["content"][0]["text"] for item in items] == ["one", "two", "three"][: len(answers)]
    assert len(answers) >= 1


async def test_a_client_that_leaves_before_the_successor_ends_still_gets_it_generated_once_and_stored(
    gateway: RunningServer, fake: FakeResponsesUpstream
) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        first = await created(connection, model="up-6", input=LONG)
        await connection.response.steer(previous_response_id=first, input=LONG_B)
        await events_until(connection, lambda event: event.type == "response.incomplete")
        successor = (await events_until(connection, lambda event: event.type == "response.created"))[-1].response.id
    # The client has gone while its successor streams; it is generated to its end and kept.
    with httpx.Client(base_url=gateway.base_url) as http:
        for _ in range(1200):  # up to a minute on a loaded machine
            record = http.get(f"/responses/{successor}").json()
            if record.get("status") == "completed":
                break
            await asyncio.sleep(0.05)
        assert record["status"] == "completed", record
        assert record["output"][0]["content"][0]["text"] == LONG_B
    assert len(fake.stored_ids) == 2


async def test_without_continue_on_disconnect_a_successor_whose_client_has_left_is_cancelled(
    fake: FakeResponsesUpstream, tmp_path: Path
) -> None:
    # The steering connection leaves once its steer is accepted; a second one (an idempotent retry) keeps following
    # the steered response, so it is generated to its end, and its successor starts with nobody left to read it.
    key = {"tether:idempotency_key": "steer-key-3"}
    create = cast(Any, {"type": "response.create", "model": "up-6", "input": LONG, **key})
    with serve_in_thread(settings(fake, tmp_path, continue_on_disconnect=False)) as gateway:
        async with (
            AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
            sdk.responses.connect() as retry,
        ):
            async with sdk.responses.connect() as original:
                await original.send(create)
                target = (await events_until(original, lambda event: event.type == "response.created"))[-1].response.id
                await retry.send(create)
                assert (await events_until(retry, lambda event: event.type == "response.created"))[
                    -1
                ].response.id == target
                await original.response.steer(previous_response_id=target, input=LONGER)
                await events_until(original, lambda event: event.type == "response.steer.accepted")
            steered = (await events_until(retry, is_terminal))[-1]
            assert steered.type == "response.incomplete"
            assert steered.response.incomplete_details.reason == "steered"
        await settled(gateway)  # the successor's turn too
        audited = [e for e in AuditLog(tmp_path / "audit").entries("tenant:default") if e["kind"] == "turn"]
        assert [entry["response_id"] for entry in audited] == [target]  # the successor was not kept...
        assert len(fake.stored_ids) == 1  # ...nor generated to its end upstream
        assert fake.wait_all_closed(30.0)  # the socket it streamed on was closed: the upstream stops too


def server_tasks(gateway: RunningServer) -> set[str]:
    async def names() -> set[str]:
        return {f"{task.get_name()} {task.get_coro()!r}" for task in asyncio.all_tasks()}

    assert gateway.loop is not None
    future: concurrent.futures.Future[set[str]] = asyncio.run_coroutine_threadsafe(names(), gateway.loop)
    return future.result(timeout=10)


async def test_turns_on_a_steering_lane_leave_no_task_behind(gateway: RunningServer) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        await created(connection, model="up-6", input="warm")
        await events_until(connection, is_terminal)
        await asyncio.sleep(0.2)
        baseline = server_tasks(gateway)
        previous = None
        for n in range(20):
            previous = await created(connection, model="up-6", input=f"turn {n}", previous_response_id=previous)
            assert (await events_until(connection, is_terminal))[-1].type == "response.completed"
        for _ in range(3):  # and steered ones, each followed by its successor
            previous = await created(connection, model="up-6", input=LONG, previous_response_id=previous)
            await connection.response.steer(previous_response_id=previous, input="short")
            await events_until(connection, lambda event: event.type == "response.incomplete")
            previous = (await events_until(connection, is_terminal))[-1].response.id
        after = set()
        for _ in range(50):
            after = server_tasks(gateway)
            if len(after) <= len(baseline):
                break
            await asyncio.sleep(0.1)
        assert len(after) <= len(baseline), sorted(after - baseline)
        routed = gateway.engine.router.resolve("up-6")
        assert isinstance(routed, RoutedProvider)
        provider = routed.chain[0]
        assert isinstance(provider, OpenAIResponsesProvider)
        assert provider.pool is not None
        assert provider.pool.borrowed == 0  # every successor gave its upstream socket back


@pytest.mark.parametrize("after", [1, 12])
async def test_an_upstream_socket_that_dies_mid_successor_ends_it_and_the_lane_goes_on(
    gateway: RunningServer, fake: FakeResponsesUpstream, after: int
) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        first = await created(connection, model="up-6", input=LONG, stream_id="main")
        # The upstream streams the first response (its drop decided): the next one, the successor, breaks.
        events = await events_until(connection, lambda event: event.type == "response.output_text.delta")
        fake.drop_after(after)
        await connection.response.steer(previous_response_id=first, input=LONG_B)
        events += await events_until(connection, lambda event: event.type == "response.incomplete")
        events += await events_until(connection, lambda event: event.type in ("response.completed", "response.failed"))
        check_order(events, first)
        successor = events[-1].response
        assert successor.previous_response_id == first
        assert {event.stream_id for event in events} == {"main"}
        if after == 1:  # nothing of it reached the client: generated again, from the steered response
            assert events[-1].type == "response.completed", events[-1]
            assert successor.output_text == LONG_B
        else:
            assert events[-1].type == "response.failed", events[-1]
        # The lane goes on from the steered response.
        await created(connection, model="up-6", previous_response_id=first, input="again", stream_id="main")
        done = await events_until(connection, is_terminal)
        assert done[-1].type == "response.completed", done[-1]
        assert done[-1].response.output_text == "again"


async def test_a_store_false_steered_chain_is_continuable_on_its_socket_only(gateway: RunningServer) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        first = await created(connection, model="up-6", input=LONG, store=False)
        await connection.response.steer(previous_response_id=first, input="short")
        await events_until(connection, lambda event: event.type == "response.incomplete")
        successor = (await events_until(connection, is_terminal))[-1].response
        assert successor.previous_response_id == first
        assert successor.store is False
        await created(connection, model="up-6", previous_response_id=successor.id, input="on", store=False)
        assert (await events_until(connection, is_terminal))[-1].response.output_text == "on"
        with httpx.Client(base_url=gateway.base_url) as http:
            for rid in (first, successor.id):
                assert http.get(f"/responses/{rid}").status_code == 404
            answer = http.post("/responses", json={"model": "up-6", "previous_response_id": successor.id, "input": "x"})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "previous_response_not_found"
        async with sdk.responses.connect() as other:
            await other.response.create(model="up-6", previous_response_id=successor.id, input="x", store=False)
            events = await events_until(other, is_terminal)
            assert events[-1].type == "error"
            assert events[-1].error.code == "previous_response_not_found"


async def test_a_retried_steered_create_replays_the_steered_response_and_generates_nothing(
    gateway: RunningServer, fake: FakeResponsesUpstream
) -> None:
    key = {"tether:idempotency_key": "steer-key-1"}
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        await connection.send(cast(Any, {"type": "response.create", "model": "up-6", "input": LONG, **key}))
        first = (await events_until(connection, lambda event: event.type == "response.created"))[-1].response.id
        await connection.response.steer(previous_response_id=first, input="short")
        await events_until(connection, lambda event: event.type == "response.incomplete")
        successor = (await events_until(connection, is_terminal))[-1].response
        creates = len(fake.requests)
        await connection.send(cast(Any, {"type": "response.create", "model": "up-6", "input": LONG, **key}))
        replay = await events_until(connection, is_terminal)
        assert replay[0].type == "response.created"
        assert replay[0].response.id == first
        assert replay[-1].type == "response.incomplete"
        ids = {event.response.id for event in replay if getattr(event, "response", None) is not None}
        assert ids == {first}
        assert successor.id not in ids
        check_order(replay)
        # One response per create: the next create's answer is its own, not the successor replayed.
        after = await created(connection, model="up-6", input="next")
        assert after != successor.id
        assert (await events_until(connection, is_terminal))[-1].response.id == after
    assert len(fake.requests) == creates + 1  # nothing generated again (but the new create)


@pytest.mark.parametrize("text", ["a", "tiny", "a few words"])
async def test_a_steer_racing_the_natural_end_gets_one_final_answer_and_the_lane_goes_on(
    gateway: RunningServer, text: str
) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        first = await created(connection, model="up-6", input=text)  # a few deltas: the steer meets its end
        await connection.response.steer(previous_response_id=first, input="late")
        events = await events_until(connection, lambda event: event.type in TERMINALS)
        rest = await events_until(
            connection, lambda event: event.type in ("response.steer.failed", "response.steer.pending", *TERMINALS)
        )
        events += rest
        # Exactly one final answer: failed (the upstream had ended), or committed by a successor's response.created.
        finals = [event for event in events if event.type in ("response.steer.failed", "response.steer.pending")]
        finals += [event for event in events[1:] if event.type == "response.created"]
        assert len(finals) == 1, [event.type for event in events]
        if finals[0].type == "response.steer.failed":
            assert finals[0].error.code == "response_already_completed"
        check_order(events, first)
        await created(connection, model="up-6", previous_response_id=first, input="go")
        assert (await events_until(connection, is_terminal))[-1].response.output_text == "go"


async def test_a_client_that_leaves_once_its_steer_is_accepted_still_gets_the_successor_stored(
    gateway: RunningServer, fake: FakeResponsesUpstream, tmp_path: Path
) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        first = await created(connection, model="up-6", input=LONG)
        await connection.response.steer(previous_response_id=first, input="short")
        await events_until(connection, lambda event: event.type == "response.steer.accepted")
    audited: list[Any] = []
    for _ in range(1200):  # up to a minute on a loaded machine
        audited = [e for e in AuditLog(tmp_path / "audit").entries("tenant:default") if e["kind"] == "turn"]
        if len(audited) == 2:
            break
        await asyncio.sleep(0.05)
    assert [entry["response_id"] for entry in audited][:1] == [first]
    assert len(audited) == 2, audited
    with httpx.Client(base_url=gateway.base_url) as http:
        steered = http.get(f"/responses/{first}").json()
        successor = http.get(f"/responses/{audited[1]['response_id']}").json()
    assert steered["incomplete_details"] == {"reason": "steered"}
    assert successor["status"] == "completed", successor
    assert successor["previous_response_id"] == first
    assert successor["output"][0]["content"][0]["text"] == "short"
    assert len(fake.stored_ids) == 2


async def test_a_connection_following_another_ones_turn_after_a_retry_cannot_steer_it(
    gateway: RunningServer, fake: FakeResponsesUpstream
) -> None:
    key = {"tether:idempotency_key": "steer-key-2"}
    create = cast(Any, {"type": "response.create", "model": "up-6", "input": LONG, "stream_id": "a", **key})
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as original,
        sdk.responses.connect() as retry,
    ):
        await original.send(create)
        target = (await events_until(original, lambda event: event.type == "response.created"))[-1].response.id
        await retry.send(cast(Any, {**create, "stream_id": "b"}))
        assert (await events_until(retry, lambda event: event.type == "response.created"))[-1].response.id == target
        # The retrying connection follows the turn but does not run it: its successor would be read elsewhere.
        await retry.response.steer(previous_response_id=target, input="from the retry")
        events = await events_until(retry, is_terminal)
        failed = [event for event in events if event.type == "response.steer.failed"]
        assert [event.error.code for event in failed] == ["steering_not_supported"]
        assert failed[0].stream_id == "b"
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == LONG
        # The original connection's response was not steered.
        done = await events_until(original, is_terminal)
        assert done[-1].type == "response.completed"
        assert [event.type for event in done if event.type.startswith("response.steer")] == []
    assert fake.steers == []


async def test_a_chain_of_successors_continues_over_websocket_after_a_restart(
    fake: FakeResponsesUpstream, tmp_path: Path
) -> None:
    with serve_in_thread(settings(fake, tmp_path)) as first_server:
        async with (
            AsyncOpenAI(api_key="unused", base_url=first_server.base_url, max_retries=0) as sdk,
            sdk.responses.connect() as connection,
        ):
            first = await created(connection, model="up-6", input=LONG)
            await connection.response.steer(previous_response_id=first, input=LONG_B)
            await events_until(connection, lambda event: event.type == "response.incomplete")
            second = (await events_until(connection, lambda event: event.type == "response.created"))[-1].response.id
            await connection.response.steer(previous_response_id=second, input="the end")
            await events_until(connection, lambda event: event.type == "response.incomplete")
            third = (await events_until(connection, is_terminal))[-1].response
            assert third.previous_response_id == second
    fake.forget_all()  # a new upstream connection: only tether's store can rebuild the context
    with serve_in_thread(settings(fake, tmp_path)) as second_server:
        async with (
            AsyncOpenAI(api_key="unused", base_url=second_server.base_url, max_retries=0) as sdk,
            sdk.responses.connect() as connection,
        ):
            await created(connection, model="up-6", previous_response_id=third.id, input="go on")
            done = (await events_until(connection, is_terminal))[-1]
    assert done.type == "response.completed", done
    assert done.response.output_text == "go on"
    assert done.response.previous_response_id == third.id
    resent = fake.requests[-1]
    assert resent.previous_response_id is None  # sent whole, from tether's store
    users = [item["content"] for item in resent.input if item.get("role") == "user"]
    assert users == [LONG, LONG_B, "the end", "go on"]


async def test_two_lanes_steered_at_once_each_get_their_own_answers_and_successor(gateway: RunningServer) -> None:
    async with (
        AsyncOpenAI(api_key="unused", base_url=gateway.base_url, max_retries=0) as sdk,
        sdk.responses.connect() as connection,
    ):
        await connection.response.create(model="up-6", input=LONG, stream_id="a")
        await connection.response.create(model="up-6", input=LONG_B, stream_id="b")
        targets: dict[str, str] = {}
        events: list[Any] = []
        async for event in connection:
            events.append(event)
            if event.type == "response.created":
                targets.setdefault(str(event.stream_id), event.response.id)
            if len(targets) == 2:
                break
        for lane, text in (("a", "for a"), ("b", "for b")):
            await connection.response.steer(previous_response_id=targets[lane], input=text)
        completed: dict[str, Any] = {}
        async for event in connection:
            events.append(event)
            if event.type == "response.completed":
                completed[str(event.stream_id)] = event.response
            if len(completed) == 2:
                break
    for lane in ("a", "b"):
        mine = [event for event in events if event.stream_id == lane]
        check_order(mine)
        accepted = [event for event in mine if event.type == "response.steer.accepted"]
        assert [event.steer.previous_response_id for event in accepted] == [targets[lane]]
        assert completed[lane].previous_response_id == targets[lane]
        assert completed[lane].output_text == f"for {lane}"
