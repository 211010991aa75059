"""``TurnStream``: the deltas of one turn as an async iterator, and its result once it ends."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from types import TracebackType

from tether.client.results import Delta, TurnResult


class TurnStream:
    """The deltas of a turn, each delivered once; :attr:`result` once iteration ends.

    Nothing is sent before the first ``__anext__``. Close it (``async with`` or :meth:`aclose`) when stopping
    early: the turn then stays pending in the journal, and the server keeps generating it, so
    ``AsyncSession.recover()`` can still collect it.
    """

    def __init__(self, start: Callable[[TurnStream], AsyncGenerator[Delta, None]]) -> None:
        self._start = start
        self._deltas: AsyncGenerator[Delta, None] | None = None
        self._result: TurnResult | None = None
        self._closed = False

    @property
    def result(self) -> TurnResult:
        """The finished turn.

        Raises:
            RuntimeError: if the turn has not finished (iterate to the end first).
        """
        if self._result is None:
            raise RuntimeError("the turn has not finished: iterate the stream to its end first")
        return self._result

    def set_result(self, result: TurnResult) -> None:
        self._result = result

    def __aiter__(self) -> TurnStream:
        return self

    async def __anext__(self) -> Delta:
        if self._closed:
            raise StopAsyncIteration
        if self._deltas is None:
            self._deltas = self._start(self)
        return await anext(self._deltas)

    async def collect(self) -> TurnResult:
        """Run the turn to its end, dropping the deltas, and return its result."""
        async with self:
            async for _ in self:
                pass
        return self.result

    async def aclose(self) -> None:
        """Stop iterating (the turn stays pending unless it had finished)."""
        self._closed = True
        deltas, self._deltas = self._deltas, None
        if deltas is not None:
            await deltas.aclose()

    async def __aenter__(self) -> TurnStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
