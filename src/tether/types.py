"""Small type aliases shared across tether's layers.

``JSON`` and ``JSONObject`` are plain JSON, checked by nothing. The shapes tether builds and reads are typed in
:mod:`tether.protocol`: the response object, its stream events and output items in :mod:`tether.protocol.events`,
the input items tether reads in :mod:`tether.protocol.input_items`. JSON no type describes stays ``JSONObject``:
an event kept by a store (stores treat events as opaque), an event decoded off a socket that no one has validated
(the client SDK, an upstream), another API's event.

``Item`` is a conversation item as it travels and is stored: an open JSON object, because tether keeps and forwards
every field and item type, including those it does not read. The fields it reads are typed through the views of
:mod:`tether.protocol.input_items` (``as_function_call_output(item)`` and the like).
"""

from typing import Any, TypeAlias

JSON: TypeAlias = Any
JSONObject: TypeAlias = dict[str, Any]
Item: TypeAlias = dict[str, Any]
TenantId: TypeAlias = str
ResponseId: TypeAlias = str
