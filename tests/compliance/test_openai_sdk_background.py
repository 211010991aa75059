"""The official ``openai`` SDK, strict, using background mode against a real ``tether serve``: create, poll, cancel,
stream and resume by sequence number, and the terminal state surviving a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent

from tether.testing import ServeProcess, serve_subprocess

from .conftest import ANSI_ESCAPE, SERVER_FAULT

pytestmark = pytest.mark.compliance

# The scripted model echoes its input at this pace: a short reply takes milliseconds, a long one minutes (it is
# cancelled long before it would end), so nothing here depends on how fast the machine is.
PACE = {"TETHER_SCRIPTED__TOKENS_PER_SECOND": "200", "TETHER_LOG_LEVEL": "warning"}
MEDIUM = "Background responses go on while nobody listens, and resume by sequence number. " * 4
ENDLESS = "A reply too long to finish before it is cancelled. " * 2000
POLL_BOUND_S = 60.0
TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})


def sdk(server: ServeProcess) -> OpenAI:
    return OpenAI(api_key="unused", base_url=server.base_url, max_retries=0, _strict_response_validation=True)


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve_subprocess(tmp_path_factory.mktemp("background"), PACE) as server:
        yield server
    assert SERVER_FAULT.search(ANSI_ESCAPE.sub("", server.log())) is None, server.log()


@pytest.fixture
def client(paced_server: ServeProcess) -> Iterator[OpenAI]:
    with sdk(paced_server) as client:
        yield client


def poll(client: OpenAI, response_id: str, until: frozenset[str] = TERMINAL) -> Response:
    """Retrieve until the status is one of ``until`` (what a background client does), within a generous bound."""
    deadline = time.monotonic() + POLL_BOUND_S
    while True:
        response = client.responses.retrieve(response_id)
        if response.status in until:
            return response
        assert time.monotonic() < deadline, f"{response_id} stayed {response.status}"
        time.sleep(0.05)


def text_of(events: list[ResponseStreamEvent]) -> str:
    return "".join(event.delta for event in events if event.type == "response.output_text.delta")


def test_a_background_create_answers_queued_and_is_polled_to_completed(client: OpenAI) -> None:
    created = client.responses.create(model="echo", input="polled to the end", background=True)
    assert (created.status, created.background) == ("queued", True)
    assert created.output == []

    done = poll(client, created.id)
    assert (done.status, done.background, done.output_text) == ("completed", True, "polled to the end")


def test_a_background_stream_is_resumed_with_starting_after(client: OpenAI) -> None:
    head: list[ResponseStreamEvent] = []
    with client.responses.create(model="echo", input=MEDIUM, background=True, stream=True) as stream:
        for event in stream:
            head.append(event)
            if len(head) == 6:
                break  # the connection drops mid-generation
    assert head[0].type == "response.created"
    response_id = head[0].response.id
    assert head[0].response.background is True
    seen = head[-1].sequence_number

    with client.responses.retrieve(response_id, stream=True, starting_after=seen) as resumed:
        tail = list(resumed)
    events = head + tail
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    assert text_of(events) == MEDIUM

    with client.responses.retrieve(response_id, stream=True, starting_after=2) as replayed:  # after it ended
        again = list(replayed)
    assert [event.sequence_number for event in again] == list(range(3, len(events)))
    assert text_of(again) == text_of(events[3:])


def test_cancel_stops_a_running_background_response(client: OpenAI) -> None:
    created = client.responses.create(model="echo", input=ENDLESS, background=True)
    poll(client, created.id, frozenset({"in_progress"}))

    cancelled = client.responses.cancel(created.id)
    assert (cancelled.id, cancelled.status, cancelled.background) == (created.id, "cancelled", True)
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert client.responses.cancel(created.id).status == "cancelled"  # cancelling it again answers it again
    with client.responses.retrieve(created.id, stream=True, starting_after=0) as replayed:
        ending = list(replayed)[-1]
    assert ending.type == "response.failed"  # the API has no response.cancelled event
    assert ending.response.status == "cancelled"


def test_what_cannot_be_cancelled_is_refused_as_openai_does(client: OpenAI) -> None:
    synchronous = client.responses.create(model="echo", input="not in the background")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(synchronous.id)
    assert refused.value.message.endswith("Cannot cancel a synchronous response.")

    finished = poll(client, client.responses.create(model="echo", input="done", background=True).id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(finished.id)
    assert refused.value.message.endswith("Cannot cancel a completed response.")

    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_00000000000000000000000000000000")


def test_background_with_store_false_is_refused(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="echo", input="hi", background=True, store=False)
    assert (refused.value.param, refused.value.code, refused.value.type) == (
        "background",
        "invalid_value",  # background itself is supported: it is the combination with store: false that is not
        "invalid_request_error",
    )
    assert "'store': true" in refused.value.message


def test_the_terminal_state_is_committed_and_answered_after_a_restart(tmp_path: Path) -> None:
    with serve_subprocess(tmp_path, PACE) as first, sdk(first) as client:
        completed = poll(client, client.responses.create(model="echo", input="kept", background=True).id)
        running = client.responses.create(model="echo", input=ENDLESS, background=True)
        poll(client, running.id, frozenset({"in_progress"}))
        cancelled = client.responses.cancel(running.id)
    with serve_subprocess(tmp_path, PACE) as second, sdk(second) as client:
        assert client.responses.retrieve(completed.id).model_dump() == completed.model_dump()
        after = client.responses.retrieve(cancelled.id)
        assert (after.status, after.background) == ("cancelled", True)
