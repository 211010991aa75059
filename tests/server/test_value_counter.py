"""The worker process that counts JSON values: started on first need, one at a time, replaced when it dies, gone
with the server; and a text is only counted there when the cheap bound says it might be over the limit."""

from __future__ import annotations

import asyncio
import os
import signal

import orjson
import pytest

from tether.protocol.errors import ProtocolError
from tether.server.value_counter import Excess, ValueCounter

LIMIT = 1_000
OVER = orjson.dumps({"stream_id": "lane", "input": [{}] * LIMIT})  # LIMIT + 3 values
# Far over the cheap bound (every comma and bracket is inside a string), and 7 values in truth.
WITHIN = orjson.dumps({"input": [{"type": "message", "role": "user", "content": "[x, {y}]," * LIMIT}]})


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_text_within_the_cheap_bound_starts_no_worker() -> None:
    counter = ValueCounter()
    assert await counter.excess(orjson.dumps([1] * (LIMIT - 1)), LIMIT) is None  # LIMIT values
    assert await counter.excess(b'{"input": "' + b"," * LIMIT + b'"}', 2 * LIMIT) is None  # (n + 1) / 2 suffices
    assert counter.pid is None
    await counter.aclose()


async def test_a_large_text_is_bounded_in_the_worker_not_on_the_loop() -> None:
    counter = ValueCounter()
    try:
        large = orjson.dumps({"input": "x" * (2 * 1024 * 1024)})  # 3 values: within by the bound, not by its length
        assert await counter.excess(large, LIMIT) is None
        assert counter.pid is not None
    finally:
        await counter.aclose()


async def test_texts_over_the_cheap_bound_are_counted_exactly_by_one_worker() -> None:
    counter = ValueCounter()
    try:
        assert await counter.excess(OVER, LIMIT) == Excess(LIMIT + 3, "lane")
        pid = counter.pid
        assert pid is not None
        assert await counter.excess(WITHIN, LIMIT) is None
        texts: list[bytes | str] = [OVER.decode(), WITHIN] * 4  # a WebSocket message is text, an HTTP body bytes
        results = await asyncio.gather(*(counter.excess(text, LIMIT) for text in texts))
        assert results == [Excess(LIMIT + 3, "lane"), None] * 4
        assert counter.pid == pid
    finally:
        await counter.aclose()
    assert counter.pid is None
    assert gone(pid)


async def test_a_worker_that_died_is_replaced() -> None:
    counter = ValueCounter()
    try:
        await counter.excess(OVER, LIMIT)
        first = counter.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert await counter.excess(OVER, LIMIT) == Excess(LIMIT + 3, "lane")
        assert counter.pid not in (None, first)
    finally:
        await counter.aclose()


async def test_a_count_cancelled_midway_leaves_no_stale_reply() -> None:
    counter = ValueCounter()
    big = orjson.dumps([{}] * 4_000_000)  # far more than a pipe holds: writing it waits for the worker to read
    try:
        await counter.excess(OVER, LIMIT)
        first = counter.pid
        counting = asyncio.create_task(counter.excess(big, LIMIT))
        await asyncio.sleep(0)  # the task runs up to its first wait: writing the text, the worker warm and idle
        counting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await counting
        # That worker's pipe held half a text: a new worker gives the next text its own answer.
        assert await counter.excess(OVER, LIMIT) == Excess(LIMIT + 3, "lane")
        assert counter.pid not in (None, first)
    finally:
        await counter.aclose()


async def test_after_close_a_text_over_the_bound_gets_a_503_and_no_worker() -> None:
    counter = ValueCounter()
    await counter.aclose()
    with pytest.raises(ProtocolError) as refused:
        await counter.excess(OVER, LIMIT)
    assert refused.value.status == 503
    assert counter.pid is None
