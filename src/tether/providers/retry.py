"""When to try an upstream again: exponential backoff with jitter, honouring ``retry-after``; one rule for all.

Every provider retries only before anything of the answer reached the client (a connection error, a timeout, a 429
or a 5xx before the first event), so a turn is never generated twice; this module decides how long to wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog

from tether.protocol.errors import ProtocolError

_log = structlog.get_logger("tether.providers")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Backoff:
    """The retry budget of one provider.

    Attributes:
        provider: the provider's name, for the log.
        max_retries: retries allowed after the first try.
        backoff_s: the first delay; it doubles on each retry, with jitter (between half and all of it).
        max_retry_delay_s: the longest wait; a ``retry-after`` asking for more ends the retries.
        sleep: how to wait (tests pass a recorder).
    """

    provider: str
    max_retries: int
    backoff_s: float
    max_retry_delay_s: float
    sleep: Sleep = asyncio.sleep
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, retries: int, retry_after: float | None = None) -> float | None:
        """The wait before retry number ``retries + 1``, or ``None`` when there is to be none."""
        if retries >= self.max_retries:
            return None
        base = self.backoff_s * (1 << retries)
        jittered = base / 2 + self._random.uniform(0, base / 2)
        if retry_after is not None:
            if retry_after > self.max_retry_delay_s:
                return None
            return max(retry_after, jittered)
        return min(jittered, self.max_retry_delay_s)

    async def wait(
        self,
        retries: int,
        failure: ProtocolError,
        headers: Mapping[str, str] | None = None,
        *,
        deadline: float | None = None,
    ) -> None:
        """Wait before retry number ``retries + 1``.

        Raises:
            ProtocolError: ``failure``, when no retry is left, the upstream asks to wait too long, or the wait would
                end after ``deadline`` (``time.monotonic()``).
        """
        delay = self.delay(retries, parse_retry_after(headers or {}))
        if delay is None or (deadline is not None and time.monotonic() + delay > deadline):
            raise failure
        _log.warning("upstream.retry", provider=self.provider, code=failure.code, attempt=retries + 1, delay_s=delay)
        await self.sleep(delay)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if present and sane."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(raw_ms) / 1000)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(raw))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(raw)
        return max(0.0, when.timestamp() - time.time())
    return None
