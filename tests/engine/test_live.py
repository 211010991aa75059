import asyncio
import weakref

from tether.engine.live import LiveRegistry, LiveResponse
from tether.engine.stream_log import StreamLog


def test_store_false_responses_need_their_resume_token_and_tenant() -> None:
    live = LiveResponse("resp_1", "alice", store=False, log=StreamLog())
    assert live.allows("alice", live.resume_token)
    assert not live.allows("alice", None)
    assert not live.allows("alice", "wrong")
    assert not live.allows("bob", live.resume_token)
    stored = LiveResponse("resp_2", "alice", store=True, log=StreamLog())
    assert stored.allows("alice", None)
    assert not stored.allows("bob", None)


def test_registry_forgets_finished_responses_after_the_grace_period() -> None:
    now = [100.0]
    registry = LiveRegistry(grace_s=5.0, clock=lambda: now[0])
    live = LiveResponse("resp_1", "alice", store=True, log=StreamLog(), idempotency_key="k1")
    registry.add(live)
    assert registry.get("resp_1") is live
    assert registry.by_idempotency_key("alice", "k1") is live
    assert registry.by_idempotency_key("bob", "k1") is None
    assert registry.running() == [live]
    live.log.close()
    assert registry.running() == []
    registry.finished(live)
    now[0] += 4.9
    assert registry.get("resp_1") is live  # still within the grace period
    now[0] += 0.1
    assert registry.get("resp_1") is None
    assert registry.by_idempotency_key("alice", "k1") is None


async def test_a_quiet_registry_still_forgets_finished_responses() -> None:
    # Forgetting used to happen only on the next lookup, so a node that went quiet kept the logs (and, through
    # their turns, the contexts) of everything that finished in its last grace period, for good.
    registry = LiveRegistry(grace_s=0.01)
    live = LiveResponse("resp_1", "alice", store=False, log=StreamLog(), idempotency_key="k1")
    registry.add(live)
    live.log.close()
    registry.finished(live)
    freed = asyncio.Event()
    log = weakref.ref(live.log, lambda _: freed.set())
    del live
    async with asyncio.timeout(10):  # a bound on a hang, not a measurement: the timer frees it long before
        await freed.wait()
    assert log() is None
    registry.close()
