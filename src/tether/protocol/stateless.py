"""The equivalent stateless request of a turn, and its size.

A turn that continues a chain sends only its new items and ``previous_response_id``. The *equivalent stateless
request* is the request a client would have sent to a stateless Responses server for the same answer: the turn's
forwarded parameters (model, instructions, tools, ...) without ``previous_response_id`` and ``tether:`` extensions,
and as ``input`` the whole context the model sampled from, serialized as compact JSON. ``tether_turn_bytes_saved``
and ``tether replay --as-request`` both use this definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from tether.protocol.request import CreateRequest
from tether.types import Item, JSONObject

CHAIN_FIELDS = ("previous_response_id",)


def stateless_request(params: JSONObject, context: Sequence[Item]) -> JSONObject:
    """The equivalent stateless request: ``params`` without chain fields, with ``input`` the whole context."""
    request = {key: value for key, value in params.items() if key not in CHAIN_FIELDS and not key.startswith("tether:")}
    request["input"] = list(context)
    return request


def sent_params(request: CreateRequest, params: JSONObject) -> JSONObject:
    """The forwarded ``params`` the client set itself (or inherited), without tether's defaults: what a stateless
    client would have sent, so the defaults are not counted as bytes saved."""
    chosen = request.model_fields_set | set(request.model_extra or ())
    return {key: value for key, value in params.items() if key in chosen}


def stateless_size(params: JSONObject, item_count: int, item_bytes: int) -> int:
    """The compact-JSON size of :func:`stateless_request` without building it.

    Args:
        params: the turn's forwarded parameters.
        item_count: how many items the context holds.
        item_bytes: the summed compact-JSON size of those items.
    """
    empty = len(orjson.dumps(stateless_request(params, ())))  # ends in "input":[]
    return empty + item_bytes + max(item_count - 1, 0)
