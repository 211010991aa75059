"""The upstream socket's steering bookkeeping in process: frames up, the upstream's answers matched to the steers."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from tether.protocol.steer import Steer, SteerErrorCode, read_steer
from tether.providers.base import Continuation
from tether.providers.responses_steering import SocketSteering
from tether.types import JSONObject


class Port:
    """Records what the provider reports (a SteeringPort without an engine)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Steer, object]] = []

    def take(self) -> Steer | None:
        raise AssertionError("not used here")

    def notify(self, wake: Callable[[], None] | None) -> None:
        raise AssertionError("not used here")

    def accepted(self, steer: Steer) -> None:
        self.calls.append(("accepted", steer, None))

    def failed(self, steer: Steer, code: SteerErrorCode, message: str) -> None:
        self.calls.append(("failed", steer, code))

    def pending(self, steer: Steer, reason: str, required_input: list[JSONObject]) -> None:
        self.calls.append(("pending", steer, required_input))

    def upstream_ended(self) -> None:
        """Not reported by the bookkeeping."""

    def succeeded_by(self, continuation: Continuation) -> None:
        raise AssertionError("not reported by the bookkeeping")


def steer(text: object) -> Steer:
    return Steer(read_steer({"type": "response.steer", "previous_response_id": "resp_t", "input": text}))


def test_the_frame_names_the_upstreams_response_and_carries_the_input_as_sent() -> None:
    steering, port = SocketSteering(), Port()
    parts = [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]
    frame = orjson.loads(steering.frame(steer(parts), port, "resp_up_1"))
    assert frame == {"type": "response.steer", "previous_response_id": "resp_up_1", "input": parts}
    assert steering.unresolved("resp_up_1")
    assert not steering.unresolved("resp_up_2")


def test_acceptances_go_in_order_and_later_answers_by_the_upstreams_id() -> None:
    steering, port = SocketSteering(), Port()
    first, second = steer("a"), steer("b")
    steering.frame(first, port, "resp_up_1")
    steering.frame(second, port, "resp_up_1")
    accepted = {"type": "response.steer.accepted", "sequence_number": 3}
    assert steering.read({**accepted, "steer": {"id": "steer_up_a", "previous_response_id": "resp_up_1"}})
    assert steering.read({**accepted, "steer": {"id": "steer_up_b", "previous_response_id": "resp_up_1"}})
    assert [(kind, s) for kind, s, _ in port.calls] == [("accepted", first), ("accepted", second)]
    failed = {
        "type": "response.steer.failed",
        "error": {"code": "successor_creation_failed", "message": "no", "type": "invalid_request_error"},
        "steer": {"id": "steer_up_b", "input": "b", "previous_response_id": "resp_up_1"},
    }
    assert steering.read(failed)
    assert port.calls[-1] == ("failed", second, "successor_creation_failed")
    stub = {"type": "function_call_output", "call_id": "call_1", "name": "lookup"}
    pending = {
        "type": "response.steer.pending",
        "reason": "waiting_for_required_input",
        "required_input": [stub],
        "steer": {"id": "steer_up_a", "previous_response_id": "resp_up_1"},
    }
    assert steering.read(pending)
    assert port.calls[3] == ("pending", first, [stub])
    assert steering.waiting == {"resp_up_1": 1}  # one item the upstream holds for resp_up_1's continuation
    assert not steering.unresolved("resp_up_1")
    assert steering.read({**failed, "steer": {"id": "steer_up_zzz", "previous_response_id": "resp_up_9"}})  # stray
    assert len(port.calls) == 4


def test_an_error_that_belongs_to_no_response_refuses_the_oldest_unanswered_steer() -> None:
    steering, port = SocketSteering(), Port()
    refused = steer("a")
    steering.frame(refused, port, "resp_up_1")
    in_stream = {"type": "error", "sequence_number": 7, "error": {"code": "server_error", "message": "boom"}}
    assert not steering.read(in_stream)  # the response's own failure
    protocol = {"type": "error", "status": 400, "error": {"code": "invalid_event_type", "message": "Unknown event."}}
    assert steering.read(protocol)
    assert port.calls == [("failed", refused, "steering_not_supported")]
    assert not steering.read(protocol)  # nothing left to refuse: an error like any other


def test_an_unknown_code_is_steering_not_supported_and_a_successor_commits_the_accepted() -> None:
    steering, port = SocketSteering(), Port()
    unknown, committed, unanswered = steer("a"), steer("b"), steer("c")
    for each in (unknown, committed, unanswered):
        steering.frame(each, port, "resp_up_1")
    steering.read({"type": "response.steer.failed", "error": {"code": "new_code", "message": "?"}, "steer": {}})
    assert port.calls[-1] == ("failed", unknown, "steering_not_supported")
    steering.read({"type": "response.steer.accepted", "steer": {"id": "s_b", "previous_response_id": "resp_up_1"}})
    steering.commit("resp_up_1")
    assert steering.unresolved("resp_up_1")  # "c" still waits for its answer
    steering.abandon("gone")
    assert port.calls[-1] == ("failed", unanswered, "response_not_active")
    assert not steering.unresolved("resp_up_1")


def test_events_of_the_response_are_not_taken() -> None:
    steering = SocketSteering()
    for event in ({"type": "response.output_text.delta", "delta": "x"}, {"type": "response.created"}):
        assert not steering.read(event)
