"""The stream log: a response's events in order, followed by any number of readers.

Generation writes every event of a response into its log; transports only *follow* logs. So a client that drops can
reattach and receive exactly the events after the last ``sequence_number`` it saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import cast

from tether.protocol.events import StreamEvent
from tether.types import JSONObject


class StreamLog:
    """The events of one response in order. An event's ``sequence_number`` is its index in the log."""

    def __init__(self, events: Iterable[StreamEvent] = (), *, closed: bool = False) -> None:
        self.events: list[StreamEvent] = list(events)
        self.closed = closed
        self._changed = asyncio.Event()

    @property
    def last_sequence_number(self) -> int:
        """The sequence number of the last event so far (``-1`` for an empty log)."""
        return len(self.events) - 1

    def append(self, event: StreamEvent) -> None:
        self.events.append(event)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def started(self) -> None:
        """Wait until the log has its first event (or closes without one)."""
        while not self.events and not self.closed:
            await self._changed.wait()

    async def ended(self) -> None:
        """Wait until the log closes."""
        while not self.closed:
            await self._changed.wait()

    async def follow(self, after: int = -1) -> AsyncIterator[StreamEvent]:
        """Yield every event with a sequence number above ``after``, waiting for new ones until the log closes."""
        index = max(after + 1, 0)
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.closed:
                return
            changed = self._changed
            await changed.wait()


# The store keeps a response's events as opaque JSON objects (it reads nothing in them but ``sequence_number``);
# what it returns is what the engine wrote, so these two casts are the whole of the boundary.


def to_stored(events: list[StreamEvent]) -> list[JSONObject]:
    """A log's events as the store keeps them."""
    return cast(list[JSONObject], events)


def from_stored(events: list[JSONObject]) -> list[StreamEvent]:
    """Events the store kept for a response, as the engine wrote them."""
    return cast(list[StreamEvent], events)
