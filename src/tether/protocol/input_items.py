"""The typed shapes of the conversation items tether reads: messages, function calls and their outputs, reasoning,
compaction windows and item references.

An item travels as an open JSON object (:data:`~tether.types.Item`): tether stores and forwards every field, the
ones it reads and the ones it does not, and keeps item types it does not know. The TypedDicts here are *views* of
that object for the fields tether reads, so ``mypy --strict`` catches a misspelt key. A view is got through a
narrowing helper (``as_function_call_output(item)`` and the like) that checks the ``type`` and the types of the
fields the view requires, and returns the same object typed, or ``None``; :func:`known_item` returns whichever view
fits, for a ``match`` on ``type``. Unknown fields stay on the object, so a view forwards them too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, Literal, Required, TypeAlias, TypedDict, cast

from tether.types import Item, JSONObject

MessageRole = Literal["user", "assistant", "system", "developer"]
MESSAGE_ROLES: Final[frozenset[str]] = frozenset({"user", "assistant", "system", "developer"})

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class InputMessage(TypedDict, total=False):
    """A ``message`` item; ``content`` is a string or a list of typed content parts (kept as JSON objects).

    ``type`` may be left out (the API's "easy" input message): an item with a ``role`` and no ``type`` is a message.
    """

    type: Literal["message"]
    role: Required[MessageRole]
    content: Required[str | list[JSONObject]]
    id: str
    status: ItemStatus
    phase: Literal["commentary", "final_answer"]


class InputFunctionCall(TypedDict, total=False):
    """A ``function_call`` item, as the model made it and the client sends it back."""

    type: Required[Literal["function_call"]]
    call_id: Required[str]
    name: Required[str]
    arguments: Required[str]
    id: str
    status: ItemStatus


class FunctionCallOutput(TypedDict, total=False):
    """A ``function_call_output`` item: the client's answer to the ``function_call`` with the same ``call_id``."""

    type: Required[Literal["function_call_output"]]
    call_id: Required[str]
    output: Required[str | list[JSONObject]]
    id: str
    status: ItemStatus


class InputReasoning(TypedDict, total=False):
    """A ``reasoning`` item; an upstream takes it back only with the ``encrypted_content`` it made."""

    type: Required[Literal["reasoning"]]
    id: str
    summary: list[JSONObject]
    content: list[JSONObject]
    encrypted_content: str | None


class Compaction(TypedDict, total=False):
    """A ``compaction`` item: a window of items in an envelope (tether's own, or another producer's, opaque)."""

    type: Required[Literal["compaction"]]
    encrypted_content: Required[str]
    id: str


class ItemReference(TypedDict, total=False):
    """An ``item_reference``: an item named by its id instead of sent again."""

    type: Required[Literal["item_reference"]]
    id: Required[str]


KnownItem: TypeAlias = (
    InputMessage | InputFunctionCall | FunctionCallOutput | InputReasoning | Compaction | ItemReference
)
"""An item of a type tether reads, as its typed view. Any other item is kept and forwarded as JSON."""


def _all_str(item: Mapping[str, object], *fields: str) -> bool:
    return all(isinstance(item.get(field), str) for field in fields)


def as_message(item: Item) -> InputMessage | None:
    """``item`` typed as a message, or ``None`` if it is not a well-formed one."""
    if (
        item.get("type", "message") == "message"
        and item.get("role") in MESSAGE_ROLES
        and isinstance(item.get("content"), (str, list))
    ):
        return cast(InputMessage, item)
    return None


def as_function_call(item: Item) -> InputFunctionCall | None:
    """``item`` typed as a function call, or ``None`` if it is not a well-formed one."""
    if item.get("type") == "function_call" and _all_str(item, "call_id", "name", "arguments"):
        return cast(InputFunctionCall, item)
    return None


def as_function_call_output(item: Item) -> FunctionCallOutput | None:
    """``item`` typed as a function call output, or ``None`` if it is not a well-formed one."""
    if (
        item.get("type") == "function_call_output"
        and _all_str(item, "call_id")
        and isinstance(item.get("output"), (str, list))
    ):
        return cast(FunctionCallOutput, item)
    return None


def as_reasoning(item: Item) -> InputReasoning | None:
    """``item`` typed as a reasoning item, or ``None``."""
    if item.get("type") == "reasoning":
        return cast(InputReasoning, item)
    return None


def as_compaction(item: Item) -> Compaction | None:
    """``item`` typed as a compaction item, or ``None`` if it is not one with an envelope."""
    if item.get("type") == "compaction" and _all_str(item, "encrypted_content"):
        return cast(Compaction, item)
    return None


def as_item_reference(item: Item) -> ItemReference | None:
    """``item`` typed as an item reference, or ``None`` if it names no id."""
    if item.get("type") == "item_reference" and _all_str(item, "id"):
        return cast(ItemReference, item)
    return None


_VIEWS: Final[Mapping[str, Callable[[Item], KnownItem | None]]] = MappingProxyType(
    {
        "message": as_message,
        "function_call": as_function_call,
        "function_call_output": as_function_call_output,
        "reasoning": as_reasoning,
        "compaction": as_compaction,
        "item_reference": as_item_reference,
    }
)


def known_item(item: Item) -> KnownItem | None:
    """The typed view of ``item`` if it is a well-formed item of a type tether reads, else ``None`` (kept as JSON)."""
    kind = item.get("type", "message")
    view = _VIEWS.get(kind) if isinstance(kind, str) else None
    return view(item) if view is not None else None
