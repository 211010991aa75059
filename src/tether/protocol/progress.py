"""A response as far as its events have gone: what ``GET /v1/responses/{id}`` answers while it is in flight."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from tether.protocol.events import ResponseObject
from tether.protocol.vocabulary import RESUME_TOKEN
from tether.types import Item

IN_FLIGHT_STATUSES = frozenset({"queued", "in_progress"})


def response_so_far(events: Iterable[Mapping[str, Any]]) -> ResponseObject | None:
    """The response object a stream log's events describe, or ``None`` before its ``response.created``.

    It is the ``response`` of the last event that carries one (created, in progress, or terminal: then it is
    whole). While the response is in flight, its output is the items finished so far (``output_item.done``); an
    item still streaming is not in it yet. The resume token of ``response.created`` is not part of the answer.
    """
    latest: Mapping[str, Any] | None = None
    finished: dict[int, Item] = {}
    for event in events:
        response = event.get("response")
        if isinstance(response, Mapping):
            latest = response
        elif event.get("type") == "response.output_item.done":
            finished[event["output_index"]] = event["item"]
    if latest is None:
        return None
    snapshot = dict(latest)
    snapshot.pop(RESUME_TOKEN, None)
    if snapshot.get("status") in IN_FLIGHT_STATUSES:
        snapshot["output"] = [finished[index] for index in sorted(finished)]
    return cast(ResponseObject, snapshot)
