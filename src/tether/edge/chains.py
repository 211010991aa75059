"""Finding the chain a request continues, by content, and building its delta (sans-I/O).

Agents that speak stateless APIs send their whole history every turn, with no id that says which conversation it
is. The edge keeps the recent requests it sent and picks, for each new one, the request whose message list shares
the longest prefix with it (messages compared without ``cache_control`` and with a string content equal to its
one-text-block form, since agents move breakpoints and switch forms between turns). Several agents at once keep
separate chains because their histories differ. The delta against that base carries only what changed; large parts
the gateway already holds (from any chain: the same tools and system prompt of the previous task) cross as
references.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tether.protocol.delta import MISSING, Node, diff, dumps, large_values, value_hash
from tether.protocol.edge_wire import API

MESSAGE_FIELDS: dict[str, str] = {
    "anthropic-messages": "messages",
    "chat-completions": "messages",
    "responses": "input",
}


def _normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _normalised(child) for key, child in value.items() if key != "cache_control"}
    if isinstance(value, list):
        return [_normalised(child) for child in value]
    return value


def message_keys(api: API, request: dict[str, Any]) -> list[bytes]:
    """The messages of a request as compared for chain finding."""
    messages = request.get(MESSAGE_FIELDS[api])
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list):
        return []
    keys = []
    for message in messages:
        normal = _normalised(message)
        if isinstance(normal, dict) and isinstance(normal.get("content"), str):
            normal = {**normal, "content": [{"type": "text", "text": normal["content"]}]}
        keys.append(dumps(normal))
    return keys


@dataclass(frozen=True, slots=True)
class Sent:
    """A request the gateway rebuilt: a possible base for the next delta."""

    digest: str
    api: API
    path: str
    request: dict[str, Any]
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Delta:
    """What crosses the link for one request."""

    digest: str
    base: str | None
    patch: Node
    shared: int
    """How many leading messages the base shares (0 for a new chain)."""


def _shared_prefix(a: tuple[bytes, ...], b: list[bytes]) -> int:
    count = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        count += 1
    return count


class ChainBook:
    """The recent requests the gateway holds, and the content hashes it is known to hold.

    Args:
        max_chains: requests kept as bases (least recently used go first).
        max_known: content hashes remembered.
    """

    def __init__(self, max_chains: int = 256, max_known: int = 200_000) -> None:
        self.max_chains = max_chains
        self.max_known = max_known
        self._sent: OrderedDict[str, Sent] = OrderedDict()
        self._known: OrderedDict[str, None] = OrderedDict()

    @property
    def known(self) -> OrderedDict[str, None]:
        return self._known

    def sent(self) -> list[Sent]:
        return list(self._sent.values())

    def delta(self, api: API, path: str, request: dict[str, Any]) -> Delta:
        """The delta of ``request`` against the best base the gateway holds."""
        keys = message_keys(api, request)
        best: Sent | None = None
        best_shared = -1
        for candidate in reversed(self._sent.values()):  # newest first, so ties go to the most recent
            if candidate.api != api or candidate.path != path:
                continue
            shared = _shared_prefix(candidate.keys, keys)
            if shared > best_shared:
                best, best_shared = candidate, shared
        digest = value_hash(request)
        if best is None:
            return Delta(digest, None, diff(MISSING, request, self._known), 0)
        return Delta(digest, best.digest, diff(best.request, request, self._known), best_shared)

    def whole(self, request: dict[str, Any]) -> Delta:
        """The request with no base and no references (a heal)."""
        return Delta(value_hash(request), None, diff(MISSING, request), 0)

    def accepted(self, api: API, path: str, request: dict[str, Any]) -> Sent:
        """The gateway rebuilt ``request``: it is a base from now on, and its large parts are known."""
        sent = Sent(value_hash(request), api, path, request, tuple(message_keys(api, request)))
        self.remember(sent)
        self.learn(digest for digest, _, _ in large_values(request))
        return sent

    def remember(self, sent: Sent) -> None:
        self._sent[sent.digest] = sent
        self._sent.move_to_end(sent.digest)
        while len(self._sent) > self.max_chains:
            self._sent.popitem(last=False)

    def learn(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self._known[digest] = None
            self._known.move_to_end(digest)
        while len(self._known) > self.max_known:
            self._known.popitem(last=False)

    def forget(self) -> None:
        """The gateway lost what it held (a restart, an eviction): the next deltas refer to nothing."""
        self._sent.clear()
        self._known.clear()
