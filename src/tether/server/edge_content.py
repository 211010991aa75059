"""What the gateway holds for its edges: every request it rebuilt, and every large part of it, by content hash.

Values are kept as the parsed JSON trees the deltas rebuilt: a request shares the unchanged subtrees of its base,
so a chain of requests costs memory for its new content only. Bounded by bytes, least recently used first; an
evicted value costs the edge one heal (a whole request), never a wrong answer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from tether.protocol.delta import large_values, value_hash


class EdgeContent:
    """Content-addressed values per tenant.

    Args:
        max_bytes: the serialised size held before the least recently used values go.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._values: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()

    def get(self, tenant: str, digest: str) -> Any:
        """The value of ``digest``.

        Raises:
            KeyError: the gateway does not hold it.
        """
        key = (tenant, digest)
        value, _ = self._values[key]
        self._values.move_to_end(key)
        return value

    def hold(self, tenant: str, request: Any) -> str:
        """Keep a rebuilt request and its large parts; returns the request's hash."""
        root = value_hash(request)
        self._put((tenant, root), request, 0)
        for digest, value, size in large_values(request):
            self._put((tenant, digest), value, size)
        while self.size > self.max_bytes and len(self._values) > 1:
            _, (_, size) = self._values.popitem(last=False)
            self.size -= size
        return root

    def _put(self, key: tuple[str, str], value: Any, size: int) -> None:
        held = self._values.get(key)
        if held is not None:
            self._values.move_to_end(key)
            return
        self._values[key] = (value, size)
        self.size += size
