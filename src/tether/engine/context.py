"""Materialised conversation contexts that extend in O(new items).

A :class:`Context` is a view of the first ``length`` entries of a shared, append-only :class:`_Buffer`. Extending
the context at the buffer's tip (the common case: continuing the latest response of a lane) appends in place;
extending anywhere else (a fork, or a retry after a failed turn) copies the prefix first. Alongside the items the
buffer keeps each item's content hash, cumulative token estimates and an index of function-call ids, so nothing on
the hot path walks the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from tether.protocol.compaction import expand_compaction
from tether.protocol.input_items import as_compaction, as_function_call
from tether.protocol.items import Fingerprint, fingerprint
from tether.types import Item


class _Buffer:
    __slots__ = ("call_positions", "cumulative_bytes", "cumulative_tokens", "hashes", "items")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.hashes: list[str] = []
        self.cumulative_tokens: list[int] = []
        self.cumulative_bytes: list[int] = []
        self.call_positions: dict[str, int] = {}

    def append(self, item: Item, print_: Fingerprint) -> None:
        position = len(self.items)
        previous = self.cumulative_tokens[-1] if self.cumulative_tokens else 0
        self.items.append(item)
        self.hashes.append(print_.digest)
        self.cumulative_tokens.append(previous + print_.tokens)
        self.cumulative_bytes.append((self.cumulative_bytes[-1] if self.cumulative_bytes else 0) + print_.size)
        if (call := as_function_call(item)) is not None:
            self.call_positions.setdefault(call["call_id"], position)
        elif (window := as_compaction(item)) is not None:
            # A tether compaction window holds the calls it replaced; their outputs may still follow it.
            for inner in expand_compaction(window) or ():
                if isinstance(inner, dict) and (inner_call := as_function_call(inner)) is not None:
                    self.call_positions.setdefault(inner_call["call_id"], position)

    def copy_prefix(self, length: int) -> _Buffer:
        buffer = _Buffer()
        buffer.items = self.items[:length]
        buffer.hashes = self.hashes[:length]
        buffer.cumulative_tokens = self.cumulative_tokens[:length]
        buffer.cumulative_bytes = self.cumulative_bytes[:length]
        buffer.call_positions = {cid: pos for cid, pos in self.call_positions.items() if pos < length}
        return buffer


class ItemsView(Sequence[Item]):
    """A read-only view of a context's items that never copies them."""

    __slots__ = ("_items", "_length")

    def __init__(self, items: list[Item], length: int) -> None:
        self._items = items
        self._length = length

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Item: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Item]: ...
    def __getitem__(self, index: int | slice) -> Item | Sequence[Item]:
        if isinstance(index, slice):
            # Only the slice's positions are visited: slicing the list first would copy the whole history.
            return [self._items[position] for position in range(self._length)[index]]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("context index out of range")
        return self._items[index]

    def __iter__(self) -> Iterator[Item]:
        for index in range(self._length):
            yield self._items[index]


class Context:
    """An immutable conversation context: items oldest first."""

    __slots__ = ("_buffer", "length")

    def __init__(self, buffer: _Buffer | None = None, length: int = 0) -> None:
        self._buffer = buffer if buffer is not None else _Buffer()
        self.length = length

    @classmethod
    def from_items(cls, items: Iterable[Item]) -> Context:
        """Build a context from items (e.g. rebuilt from the durable store)."""
        buffer = _Buffer()
        for item in items:
            buffer.append(item, fingerprint(item))
        return cls(buffer, len(buffer.items))

    def extend(self, items: Sequence[Item], prints: Sequence[Fingerprint]) -> Context:
        """Return this context followed by ``items``; O(len(items)) when this context is at its buffer's tip."""
        buffer = self._buffer
        if len(buffer.items) != self.length:
            buffer = buffer.copy_prefix(self.length)
        for item, print_ in zip(items, prints, strict=True):
            buffer.append(item, print_)
        return Context(buffer, len(buffer.items))

    @property
    def items(self) -> ItemsView:
        return ItemsView(self._buffer.items, self.length)

    @property
    def tokens(self) -> int:
        return self._buffer.cumulative_tokens[self.length - 1] if self.length else 0

    @property
    def json_bytes(self) -> int:
        """The summed compact-JSON size of the items (without the brackets and commas of a list of them)."""
        return self._buffer.cumulative_bytes[self.length - 1] if self.length else 0

    def has_function_call(self, call_id: str, before: int | None = None) -> bool:
        """Whether a ``function_call`` with ``call_id`` is in this context (at a position below ``before``)."""
        position = self._buffer.call_positions.get(call_id)
        limit = self.length if before is None else min(before, self.length)
        return position is not None and position < limit

    def hashes(self) -> list[str]:
        """The content hashes of every item, in order (O(n): used for snapshots only)."""
        return self._buffer.hashes[: self.length]

    def __len__(self) -> int:
        return self.length
