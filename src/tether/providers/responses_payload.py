"""What tether sends an OpenAI Responses upstream (sans-I/O): a delta or the full context, and the id map deciding.

A turn whose parent tether response maps to an upstream response is sent as that upstream id plus the turn's new
items; any other turn is sent whole, as the context tether holds, with no ``previous_response_id``. The map lives
in memory only: after a restart every chain's next turn is sent whole once, which is always correct.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from tether.protocol.compaction import expand_compaction
from tether.protocol.input_items import as_compaction, as_reasoning
from tether.providers.anthropic_thinking import is_anthropic_reasoning
from tether.providers.base import ProviderRequest
from tether.types import Item, JSONObject

# Fields tether owns (the body's shape, its chain, its extensions) or that name tether-side state upstream.
_NOT_FORWARDED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "previous_response_id",
        "conversation",
        "stream",
        "stream_options",
        "background",
        "generate",
        "stream_id",
        "type",
    }
)
# Items whose ``id`` is optional upstream: tether's ids (or a client's) mean nothing to the upstream.
_ID_OPTIONAL = frozenset({"message", "function_call", "function_call_output"})


@dataclass(frozen=True, slots=True)
class UpstreamRef:
    """The upstream's response behind one of tether's.

    Attributes:
        upstream_id: the upstream's response id.
        stored: it was created with ``store=true``, so the upstream can continue it from any connection; otherwise
            only the WebSocket connection whose most recent response it is can.
    """

    upstream_id: str
    stored: bool


class ResponseIdMap:
    """tether response id → upstream response, the most recently used ``capacity`` of them."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._refs: OrderedDict[str, UpstreamRef] = OrderedDict()

    def __len__(self) -> int:
        return len(self._refs)

    def get(self, response_id: str) -> UpstreamRef | None:
        ref = self._refs.get(response_id)
        if ref is not None:
            self._refs.move_to_end(response_id)
        return ref

    def put(self, response_id: str, ref: UpstreamRef) -> None:
        self._refs[response_id] = ref
        self._refs.move_to_end(response_id)
        while len(self._refs) > self.capacity:
            self._refs.popitem(last=False)

    def drop(self, response_id: str) -> None:
        self._refs.pop(response_id, None)


def stores_upstream(request: ProviderRequest) -> bool:
    """Whether the upstream keeps this turn's response (the client's ``store``, default true)."""
    return request.params.get("store") is not False


def continuation_of(
    request: ProviderRequest, ids: ResponseIdMap, *, held_by_connection: str | None = None
) -> str | None:
    """The upstream id to continue from, or ``None`` to send the full context.

    Args:
        request: the turn.
        ids: the id map.
        held_by_connection: the upstream response the WebSocket about to carry the turn holds in its
            connection-local cache (``None`` over HTTP); a ``store=false`` parent is continued only from there.
    """
    if request.previous_response_id is None:
        return None
    ref = ids.get(request.previous_response_id)
    if ref is None:
        return None
    if ref.stored or ref.upstream_id == held_by_connection:
        return ref.upstream_id
    return None


def create_body(request: ProviderRequest, previous_upstream_id: str | None, *, stateless: bool = False) -> JSONObject:
    """The ``POST /responses`` body (without ``stream``) for a turn.

    Args:
        request: the turn.
        previous_upstream_id: continue this upstream response with the new items only; ``None`` sends the whole
            context.
        stateless: the upstream keeps nothing (see :func:`upstream_items`).
    """
    body: JSONObject = {
        key: value
        for key, value in request.params.items()
        if key not in _NOT_FORWARDED and not key.startswith("tether:")
    }
    body["model"] = request.model
    if request.instructions is not None:
        body["instructions"] = request.instructions
    if request.tools:
        body["tools"] = list(request.tools)
        body["tool_choice"] = request.tool_choice
    if previous_upstream_id is None:
        body["input"] = upstream_items(request.context, stateless=stateless)
    else:
        body["previous_response_id"] = previous_upstream_id
        body["input"] = upstream_items(request.new_items, stateless=stateless)
    return body


def upstream_items(items: Iterable[Item], *, stateless: bool = False) -> list[Item]:
    """Items as the upstream takes them.

    tether's compaction items are expanded into the items they hold; ids the upstream does not need are dropped
    (they are tether's or a client's, not the upstream's). Reasoning items go up as they came (with the upstream's
    id and ``encrypted_content``), except one that holds an Anthropic thinking block (no OpenAI upstream reads it)
    and one with neither ``encrypted_content`` nor raw reasoning ``content``: OpenAI could only look that up by id
    in a store (a full-context turn cannot count on it, and refuses it with ``store: false``; a delta reaches it
    through ``previous_response_id``). A stateless upstream (vLLM, SGLang) gets its reasoning items back with their
    ``content``, the reasoning text it wrote.
    """
    result: list[Item] = []
    for item in items:
        kind = item.get("type", "message")
        window = as_compaction(item)
        if window is not None:
            expanded = expand_compaction(window)
            if expanded is not None:
                result.extend(upstream_items(expanded, stateless=stateless))
                continue
        reasoning = as_reasoning(item)
        if reasoning is not None:
            sealed = reasoning.get("encrypted_content")
            readable = sealed or (stateless and reasoning.get("content"))
            if is_anthropic_reasoning(sealed) or not readable:
                continue
        if kind in _ID_OPTIONAL and "id" in item:
            item = {key: value for key, value in item.items() if key != "id"}
        result.append(item)
    return result
