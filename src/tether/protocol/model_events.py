"""What a model produces, independent of any provider's wire format.

Providers translate their upstream's stream into these small values; :class:`tether.protocol.stream.ResponseStream`
turns them into Responses API events. Items are sequential: a delta of another kind (or another call) closes the
item that is open.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from tether.protocol.events import UsageJSON


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    phase: Literal["commentary", "final_answer"] | None = None


@dataclass(frozen=True, slots=True)
class ReasoningStart:
    """Opens a reasoning item under the upstream's own item id (``rs_…``), so a client that sends the item back
    (with its ``encrypted_content``) hands the upstream an id it issued. A summary delta with no reasoning item open
    opens one under an id of tether's."""

    item_id: str


@dataclass(frozen=True, slots=True)
class ReasoningSummaryDelta:
    """A piece of the summary part ``summary_index`` of the open reasoning item (a higher index starts a new part;
    an empty ``text`` only opens it)."""

    text: str
    summary_index: int = 0


@dataclass(frozen=True, slots=True)
class ReasoningEnd:
    """Closes the open reasoning item, adding what only its end carries (``encrypted_content``, ``content``,
    ``status``) as the upstream sent it; ``id``, ``type`` and ``summary`` are tether's to set and are ignored."""

    fields: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a function call's arguments; the first one for a ``call_id`` opens the call."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def to_json(self) -> UsageJSON:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            },
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of generation. Any reason but ``stop`` makes the response ``incomplete``: ``steered`` when a
    ``response.steer`` ended it at a safe boundary (its successor continues it with the steering input)."""

    usage: Usage
    reason: Literal["stop", "max_output_tokens", "content_filter", "steered"] = "stop"


ModelEvent: TypeAlias = TextDelta | ReasoningStart | ReasoningSummaryDelta | ReasoningEnd | ToolCallDelta | Finish
