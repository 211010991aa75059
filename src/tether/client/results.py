"""What a turn delivers to the caller: deltas while it streams, a :class:`TurnResult` when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

from tether.types import Item, JSONObject


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text (``response.output_text.delta``)."""

    text: str
    item_id: str
    output_index: int
    sequence_number: int


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of a reasoning summary or reasoning text."""

    text: str
    item_id: str
    output_index: int
    sequence_number: int


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A complete function call the model made (delivered once, when its item is done).

    Attributes:
        call_id: the id the ``function_call_output`` must carry.
        name: the function.
        arguments: its arguments, JSON text.
        item: the whole ``function_call`` item.
    """

    call_id: str
    name: str
    arguments: str
    item: Item = field(repr=False)

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON.

        Raises:
            ValueError: if the model produced arguments that are not JSON.
        """
        return orjson.loads(self.arguments)

    def output(self, output: str) -> Item:
        """The ``function_call_output`` item that answers this call.

        Args:
            output: the tool's result, as text.

        Returns:
            An input item to send in the next turn.
        """
        return {"type": "function_call_output", "call_id": self.call_id, "output": output}


@dataclass(frozen=True, slots=True)
class TurnReset:
    """The turn was generated again as a new response: discard the partial output delivered so far for this turn.

    It happens when a dropped turn has to be sent again and the server cannot replay the original: without
    tether's extensions (over WebSocket), or when the server lost a ``store=false`` response (a restart).
    """

    response_id: str
    reason: str


Delta: TypeAlias = TextDelta | ReasoningDelta | FunctionCall | TurnReset


@dataclass(frozen=True, slots=True)
class TurnResult:
    """A finished turn.

    Attributes:
        response_id: the response, the next turn's ``previous_response_id``.
        status: ``completed`` or ``incomplete``.
        output: the output items.
        response: the final response object.
        healed: whether the turn re-sent the full context after ``previous_response_not_found``.
    """

    response_id: str
    status: str
    output: list[Item]
    response: JSONObject = field(repr=False)
    healed: bool = False

    @property
    def text(self) -> str:
        """The concatenated ``output_text`` of the output's messages."""
        return "".join(
            part.get("text", "")
            for item in self.output
            if item.get("type") == "message"
            for part in item.get("content") or []
            if isinstance(part, dict) and part.get("type") == "output_text"
        )

    @property
    def function_calls(self) -> list[FunctionCall]:
        """The function calls of the output, in order."""
        return [function_call(item) for item in self.output if item.get("type") == "function_call"]

    @property
    def usage(self) -> JSONObject | None:
        usage = self.response.get("usage")
        return usage if isinstance(usage, dict) else None


def function_call(item: Item) -> FunctionCall:
    return FunctionCall(str(item.get("call_id")), str(item.get("name")), str(item.get("arguments", "")), item)
