"""``Session``: the blocking face of :class:`~tether.client.session.AsyncSession`, for code without an event loop.

An event loop runs in a private thread; each method hands a coroutine to it and waits for the answer. Callbacks
(``on_event``, ``on_request``) run on that thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from tether.client.events import ClientStats
from tether.client.journal import JournalItem, TurnRecord
from tether.client.results import Delta, TurnResult
from tether.client.session import AsyncSession, Input
from tether.client.stream import TurnStream
from tether.types import Item, JSONObject

T = TypeVar("T")


class SyncTurnStream:
    """The deltas of a turn as a blocking iterator; :attr:`result` once it is exhausted."""

    def __init__(self, session: Session, stream: TurnStream) -> None:
        self._session = session
        self._stream = stream

    def __iter__(self) -> Iterator[Delta]:
        try:
            while True:
                delta = self._session._call(_next(self._stream))
                if delta is None:
                    return
                yield delta
        finally:
            self._session._call(self._stream.aclose())

    @property
    def result(self) -> TurnResult:
        """The finished turn (see :attr:`TurnStream.result <tether.client.stream.TurnStream.result>`)."""
        return self._stream.result


class Session:
    """A blocking session; use it as ``with Session(base_url, model=...) as session``.

    Args:
        base_url: the API base, as for :class:`~tether.client.session.AsyncSession`.
        **options: every keyword argument of :class:`~tether.client.session.AsyncSession`.
    """

    def __init__(self, base_url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tether-client", daemon=True)
        self._thread.start()
        try:
            self._session = self._call(_make(base_url, options))
        except BaseException:
            self._stop()
            raise

    def __enter__(self) -> Self:
        self._call(self._session.open())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and stop its thread. Closing twice is harmless."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._session.aclose())
        finally:
            self._stop()

    @property
    def stats(self) -> ClientStats:
        return self._session.stats

    @property
    def pending(self) -> TurnRecord | None:
        return self._session.pending

    @property
    def last_response_id(self) -> str | None:
        return self._session.last_response_id

    def send(
        self,
        items: Input,
        *,
        tools: Sequence[JSONObject] | None = None,
        instructions: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> TurnResult:
        """Run one turn (see :meth:`AsyncSession.stream <tether.client.session.AsyncSession.stream>`)."""
        return self._call(self._session.send(items, tools=tools, instructions=instructions, params=params))

    def stream(
        self,
        items: Input,
        *,
        tools: Sequence[JSONObject] | None = None,
        instructions: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> SyncTurnStream:
        """Start a turn; iterate the result for its deltas."""
        return SyncTurnStream(self, self._session.stream(items, tools=tools, instructions=instructions, params=params))

    def recover(self) -> TurnResult | None:
        """Finish the pending turn, if any."""
        return self._call(self._session.recover())

    def discard_pending(self) -> None:
        """Give up the pending turn."""
        self._call(self._session.discard_pending())

    def context(self) -> list[Item]:
        """The whole conversation from the journal."""
        return self._call(self._session.context())

    def history(self) -> list[JournalItem]:
        """Every journaled item of the session."""
        return self._call(self._session.history())

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        try:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()


async def _make(base_url: str, options: dict[str, Any]) -> AsyncSession:
    return AsyncSession(base_url, **options)


async def _next(stream: TurnStream) -> Delta | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None
