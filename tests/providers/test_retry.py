"""When to retry an upstream: backoff with jitter, honouring retry-after (pure, with a recorded sleep)."""

from __future__ import annotations

import email.utils
import time

import pytest

from tether.protocol.errors import ProtocolError
from tether.providers.retry import Backoff, parse_retry_after

FAILURE = ProtocolError(502, "upstream_error", "Upstream 'up' failed.")


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(headers) == seconds


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after({"retry-after": when})
    assert seconds is not None
    assert 25 <= seconds <= 31


def test_delays_double_with_jitter_and_stop_after_the_budget() -> None:
    backoff = Backoff("up", max_retries=3, backoff_s=1.0, max_retry_delay_s=30.0)
    delays = [backoff.delay(n) or 0.0 for n in range(3)]
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert 2.0 <= delays[2] <= 4.0
    assert backoff.delay(3) is None


def test_retry_after_is_honoured_unless_it_asks_for_too_long() -> None:
    backoff = Backoff("up", max_retries=3, backoff_s=0.1, max_retry_delay_s=5.0)
    assert backoff.delay(0, retry_after=2.0) == 2.0
    assert backoff.delay(0, retry_after=60.0) is None


async def test_wait_sleeps_the_delay_or_raises_the_failure() -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    backoff = Backoff("up", max_retries=1, backoff_s=0.2, max_retry_delay_s=5.0, sleep=sleep)
    await backoff.wait(0, FAILURE, {"retry-after": "1"})
    with pytest.raises(ProtocolError) as raised:
        await backoff.wait(1, FAILURE)
    with pytest.raises(ProtocolError):
        await Backoff("up", 2, 0.2, 5.0, sleep=sleep).wait(0, FAILURE, deadline=time.monotonic() - 1)
    assert slept == [1.0]
    assert raised.value is FAILURE
