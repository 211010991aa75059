import asyncio

import pytest

from tether.engine.stream_log import StreamLog
from tether.protocol.events import OutputTextDelta, StreamEvent


def event(n: int) -> StreamEvent:
    return OutputTextDelta(type="response.output_text.delta", sequence_number=n, item_id="msg_1", output_index=0,
                           content_index=0, delta=str(n), logprobs=[])  # fmt: skip


async def collect(log: StreamLog, after: int) -> list[object]:
    return [e["sequence_number"] async for e in log.follow(after)]


async def test_follow_yields_events_after_n_and_waits_for_new_ones_until_closed() -> None:
    log = StreamLog()
    log.append(event(0))
    log.append(event(1))
    follower = asyncio.create_task(collect(log, 0))
    await asyncio.sleep(0.01)
    assert not follower.done()
    log.append(event(2))
    log.close()
    assert await asyncio.wait_for(follower, 1) == [1, 2]


async def test_followers_joining_at_any_point_see_exactly_the_tail() -> None:
    log = StreamLog([event(n) for n in range(5)], closed=True)
    for after in range(-1, 6):
        assert await collect(log, after) == list(range(after + 1, 5))


async def test_many_followers_each_get_every_event_once() -> None:
    log = StreamLog()
    followers = [asyncio.create_task(collect(log, -1)) for _ in range(5)]
    for n in range(50):
        log.append(event(n))
        if n % 7 == 0:
            await asyncio.sleep(0)
    log.close()
    results = await asyncio.wait_for(asyncio.gather(*followers), 1)
    assert all(result == list(range(50)) for result in results)


@pytest.mark.parametrize("after", [-5, -1])
async def test_negative_after_means_from_the_start(after: int) -> None:
    log = StreamLog([event(0), event(1)], closed=True)
    assert await collect(log, after) == [0, 1]
