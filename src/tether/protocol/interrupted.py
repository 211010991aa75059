"""``generation_interrupted``: the terminal events of a turn whose generating node stopped before it finished.

In a cluster the node that generates a ``store=true`` turn holds a lease. If it dies (or loses the lease), a node
following the turn ends it with these events: an ``error`` event and a ``response.failed`` whose error code is
``generation_interrupted``. Nothing of the interrupted generation is kept; its idempotency key is released, so
retrying the turn with the same key generates it exactly once more (the tether client SDK does so by itself).
"""

from __future__ import annotations

from collections.abc import Mapping

from tether.protocol.errors import ErrorType, ProtocolError
from tether.protocol.stream import response_error, response_error_code
from tether.types import JSONObject

GENERATION_INTERRUPTED = "generation_interrupted"


def generation_interrupted(response_id: str) -> ProtocolError:
    return ProtocolError(
        503,
        GENERATION_INTERRUPTED,
        f"The node generating response '{response_id}' stopped before it finished; nothing of it was kept. Retry the "
        "turn (with the same idempotency key): it is generated once more.",
        error_type=ErrorType.SERVER,
        headers={"retry-after": "0"},
    )


def interrupted_events(response_id: str, created: JSONObject | None, sequence_number: int) -> list[JSONObject]:
    """The ``error`` and ``response.failed`` events that end an interrupted turn, numbered from ``sequence_number``.

    Args:
        created: the response object of the turn's ``response.created`` event, if it was seen.
    """
    error = generation_interrupted(response_id)
    response: JSONObject = dict(created) if created is not None else {"id": response_id, "object": "response"}
    response.update(status="failed", output=[], error=response_error(GENERATION_INTERRUPTED, error.message))
    return [
        dict(error.ws_event(sequence_number=sequence_number)),
        {"type": "response.failed", "sequence_number": sequence_number + 1, "response": response},
    ]


def is_interrupted(event: JSONObject) -> bool:
    """Whether ``event`` is the ``response.failed`` of an interrupted turn."""
    if event.get("type") != "response.failed":
        return False
    error = event.get("response", {}).get("error") or {}
    return response_error_code(error) == GENERATION_INTERRUPTED


def is_interrupted_error(event: Mapping[str, object]) -> bool:
    """Whether ``event`` is the ``error`` event that starts the end of an interrupted turn."""
    if event.get("type") != "error":
        return False
    inner = event.get("error")
    return isinstance(inner, dict) and inner.get("code") == GENERATION_INTERRUPTED
