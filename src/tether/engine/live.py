"""Responses in flight: their stream logs, followers, resume tokens and idempotency keys.

Generation runs as a task owned by the engine, not by the connection that asked for it: every event goes into the
response's :class:`~tether.engine.stream_log.StreamLog`, so a client that drops can reattach, and a retried turn
(same idempotency key) follows the original instead of generating twice.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tether.engine.steering import SteeringInbox
from tether.engine.stream_log import StreamLog

# The expiry timer fires at most this often (however many responses finish, one timer is armed at a time).
MIN_SWEEP_INTERVAL_S = 0.05


@dataclass(slots=True)
class LiveResponse:
    """A response the engine is generating (or finished generating a short while ago)."""

    response_id: str
    tenant: str
    store: bool
    log: StreamLog
    resume_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    idempotency_key: str | None = None
    task: asyncio.Task[None] | None = None
    followers: int = 0
    background: bool = False
    cancel: Callable[[], bool] | None = None  # this node generates it: asks the turn to end as cancelled
    steering: SteeringInbox | None = None  # this node generates it and its provider relays response.steer
    # With steering: resolved once the turn is over, with the successor turn its steering started (or None).
    successor: asyncio.Future[LiveResponse | None] | None = None

    @property
    def done(self) -> bool:
        return self.log.closed

    def allows(self, tenant: str, resume_token: str | None) -> bool:
        """Whether a caller may follow this response: its tenant, and for ``store=false`` its resume token."""
        if tenant != self.tenant:
            return False
        if self.store:
            return True
        return resume_token is not None and secrets.compare_digest(resume_token, self.resume_token)


class LiveRegistry:
    """Live responses by id and by idempotency key; finished ones are forgotten after a grace period.

    Every lookup forgets what has expired, and a timer on the running loop does it too, so a node that goes quiet
    does not keep the logs (and, through their turns, the contexts) of its last busy minute.

    Args:
        grace_s: how long a finished response stays here.
        clock: monotonic seconds (tests move it instead of waiting out the grace period).
    """

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self.clock = clock
        self._by_id: dict[str, LiveResponse] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._expiring: deque[tuple[float, LiveResponse]] = deque()  # in the order they finished
        self._timer: asyncio.TimerHandle | None = None

    def add(self, live: LiveResponse) -> None:
        self._sweep()
        self._by_id[live.response_id] = live
        if live.idempotency_key is not None:
            self._by_key[(live.tenant, live.idempotency_key)] = live.response_id

    def get(self, response_id: str) -> LiveResponse | None:
        self._sweep()
        return self._by_id.get(response_id)

    def by_idempotency_key(self, tenant: str, key: str) -> LiveResponse | None:
        self._sweep()
        response_id = self._by_key.get((tenant, key))
        return self._by_id.get(response_id) if response_id is not None else None

    def finished(self, live: LiveResponse) -> None:
        """Forget ``live`` once the grace period is over."""
        self._expiring.append((self.clock() + self.grace_s, live))
        self._sweep()
        self._arm()

    def close(self) -> None:
        """Stop the timer (the engine is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is not None or not self._expiring:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous test): lookups still sweep
            return
        delay = max(self._expiring[0][0] - self.clock(), MIN_SWEEP_INTERVAL_S)
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._sweep()
        self._arm()

    def forget(self, response_id: str) -> None:
        """Stop answering ``response_id`` and its idempotency key now (it was deleted)."""
        live = self._by_id.get(response_id)
        if live is not None:
            self._forget(live)

    def release_key(self, live: LiveResponse) -> None:
        """Stop answering ``live``'s idempotency key with it (it was interrupted: a retry must generate anew)."""
        if live.idempotency_key is not None and self._by_key.get((live.tenant, live.idempotency_key)) == (
            live.response_id
        ):
            del self._by_key[(live.tenant, live.idempotency_key)]

    def _sweep(self) -> None:
        now = self.clock()
        while self._expiring and self._expiring[0][0] <= now:
            self._forget(self._expiring.popleft()[1])

    def _forget(self, live: LiveResponse) -> None:
        if self._by_id.get(live.response_id) is live:
            del self._by_id[live.response_id]
        self.release_key(live)

    def running(self) -> list[LiveResponse]:
        """The responses still being generated: their log is open, or their task has not ended (a steered turn
        starts its successor after its own log has closed)."""
        return [
            live for live in self._by_id.values() if not live.done or (live.task is not None and not live.task.done())
        ]
