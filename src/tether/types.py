"""Small type aliases shared across tether's layers.

``JSONObject``, ``Item`` and ``Event`` are plain JSON objects, checked by nothing. The events, response object and
output items tether builds and reads are typed in :mod:`tether.protocol.events` (TypedDicts, checked by
``mypy --strict``). These aliases remain for JSON no type describes:

- ``Item``: a conversation item. Tether validates the fields it reads when it parses a request
  (:func:`tether.protocol.request.normalise_input`), and forwards the rest untouched.
- ``Event``: an event as JSON from outside the engine. That is an event received over a socket (the client SDK, an
  upstream) or kept by a store, which treats events as opaque.
"""

from typing import Any, TypeAlias

JSON: TypeAlias = Any
JSONObject: TypeAlias = dict[str, Any]
Item: TypeAlias = dict[str, Any]
Event: TypeAlias = dict[str, Any]
TenantId: TypeAlias = str
ResponseId: TypeAlias = str
