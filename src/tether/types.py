"""Small type aliases shared across tether's layers."""

from typing import Any, TypeAlias

JSON: TypeAlias = Any
JSONObject: TypeAlias = dict[str, Any]
Item: TypeAlias = dict[str, Any]
Event: TypeAlias = dict[str, Any]
TenantId: TypeAlias = str
ResponseId: TypeAlias = str
