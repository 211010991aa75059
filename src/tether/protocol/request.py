"""Parsing and validation of ``response.create`` / ``POST /v1/responses`` bodies.

A light pydantic model covers the fields tether reads; every other field is kept (``model_extra``) and forwarded,
so newer clients keep working. Parsing never raises anything but :class:`ProtocolError`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from tether.protocol.errors import ProtocolError, invalid
from tether.protocol.input_items import MESSAGE_ROLES
from tether.protocol.json_depth import MAX_JSON_DEPTH, too_deep
from tether.protocol.vocabulary import IDEMPOTENCY_KEY, INHERIT_PARAMS
from tether.types import Item, JSONObject

STREAM_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,256}")


# Parameters a continuation may inherit from its parent with ``tether:inherit_params`` (field name → JSON key).
INHERITABLE_PARAMS = {
    name: name
    for name in (
        "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "text", "max_output_tokens",
        "max_tool_calls", "temperature", "top_p", "top_logprobs", "truncation", "include", "service_tier",
        "prompt_cache_key", "safety_identifier",
    )
}  # fmt: skip


class Transport(StrEnum):
    HTTP = "http"
    WEBSOCKET = "websocket"


MAX_IDEMPOTENCY_KEY_CHARS = 256
"""The longest idempotency key (a UUID is 36): each is kept with its response and looked up on every retry."""


def header_idempotency_key(value: str) -> str | None:
    """The ``Idempotency-Key`` header's key: ``None`` when blank (no key).

    Raises:
        ProtocolError: ``invalid_value`` past :data:`MAX_IDEMPOTENCY_KEY_CHARS`, as for the body's key.
    """
    key = value.strip()
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise invalid(
            "invalid_value",
            f"The Idempotency-Key header is {len(key):,} characters long; "
            f"at most {MAX_IDEMPOTENCY_KEY_CHARS} are allowed.",
            "Idempotency-Key",
        )
    return key or None


class CreateRequest(BaseModel):
    """The fields of a create request that tether reads. Unknown fields are kept in ``model_extra``."""

    model_config = ConfigDict(extra="allow", frozen=False)

    model: StrictStr
    input: list[Item] = Field(default_factory=list)
    instructions: StrictStr | None = None
    previous_response_id: StrictStr | None = None
    store: StrictBool = True
    stream: StrictBool = False
    background: StrictBool = False
    generate: StrictBool = True
    stream_id: StrictStr | None = None
    tools: list[JSONObject] = Field(default_factory=list)
    tool_choice: StrictStr | JSONObject = "auto"
    parallel_tool_calls: StrictBool = True
    metadata: dict[str, StrictStr] | None = None
    max_output_tokens: StrictInt | None = Field(default=None, ge=1)
    max_tool_calls: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=1)
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    reasoning: JSONObject | None = None
    text: JSONObject | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[StrictStr] | None = None
    service_tier: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    user: StrictStr | None = None
    idempotency_key: StrictStr | None = Field(
        default=None, alias=IDEMPOTENCY_KEY, min_length=1, max_length=MAX_IDEMPOTENCY_KEY_CHARS
    )  # "" is no key
    inherit_params: StrictBool = Field(default=False, alias=INHERIT_PARAMS)

    def inheriting(self, parent_params: JSONObject) -> CreateRequest:
        """This request with every inheritable parameter it did not send taken from its parent's parameters."""
        inherited = {
            field: parent_params[key]
            for field, key in INHERITABLE_PARAMS.items()
            if field not in self.model_fields_set and key in parent_params
        }
        return self.model_copy(update=inherited) if inherited else self

    def forwarded_params(self) -> JSONObject:
        """Request parameters other than ``input`` and transport fields, as the client sent them."""
        params = self.model_dump(
            exclude={"input", "stream", "generate", "stream_id", "background", "idempotency_key", "inherit_params"},
            exclude_none=True,
            by_alias=True,
        )
        params.pop("type", None)
        params.pop("stream_options", None)
        if self.background:  # kept with the response (its object says so); never forwarded upstream
            params["background"] = True
        return params


def decode_json_object(raw: bytes | str) -> JSONObject:
    """Decode one JSON object or raise the protocol's ``invalid_json`` (or ``json_too_deep``) error."""
    value = decode_any_json_object(raw)
    check_json_depth(value)
    return value


def decode_any_json_object(raw: bytes | str) -> JSONObject:
    """Decode one JSON object, however deep (:func:`check_json_depth` is the caller's), or raise ``invalid_json``."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid("invalid_json", f"The body is not valid JSON: {exc.msg} (at position {exc.pos}).") from exc
    if not isinstance(value, dict):
        raise invalid("invalid_json", f"The body must be a JSON object, not {_json_kind(value)}.")
    return value


def check_json_depth(value: JSONObject) -> None:
    """Raises: ProtocolError: ``json_too_deep`` for a value nested deeper than :data:`MAX_JSON_DEPTH`."""
    if too_deep(value):
        raise too_deep_json()


MAX_INPUT_ITEMS = 10_000


def check_input_items(body: JSONObject, max_items: int = MAX_INPUT_ITEMS) -> None:
    """Refuse a request with more than ``max_items`` input items before any of them is looked at.

    Raises:
        ProtocolError: ``too_many_input_items`` (400, ``param: "input"``).
    """
    value = body.get("input")
    if isinstance(value, list) and len(value) > max_items:
        raise invalid(
            "too_many_input_items", f"'input' has {len(value)} items; at most {max_items} are allowed.", "input"
        )


def unsupported_content_encoding(header: str | None, headers: dict[str, str] | None = None) -> ProtocolError | None:
    """The ``415 unsupported_media_type`` for a body sent with a ``Content-Encoding`` other than ``identity`` (its
    ``headers``, if any), else ``None``. Bodies are read as sent: a decoded size could not be bounded before
    decoding, and a refusal must not cost a decompression."""
    if header is None:
        return None
    codings = [coding.strip().lower() for coding in header.split(",")]
    unsupported = [coding for coding in codings if coding not in ("", "identity")]
    if not unsupported:
        return None
    return ProtocolError(
        415,
        "unsupported_media_type",
        f"Content-Encoding '{', '.join(unsupported)}' is not supported: send the request body uncompressed "
        "(tether does not decode request bodies).",
        headers=headers,
    )


def too_many_json_values(values: int | None, limit: int) -> ProtocolError:
    """The answer to a request holding more than ``limit`` JSON values (see :mod:`tether.protocol.json_values`):
    ``values`` of them, or ``None`` when counting stopped past the limit."""
    held = f"more than {limit}" if values is None else str(values)
    return invalid(
        "too_many_json_values",
        f"The request holds {held} JSON values; at most {limit} are allowed (every object, array, string, number, "
        "true, false and null counts; keys do not).",
    )


def too_deep_json() -> ProtocolError:
    """The answer to a request nested deeper than :data:`~tether.protocol.json_depth.MAX_JSON_DEPTH` levels."""
    return invalid("json_too_deep", f"The body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels.")


def parse_create(body: JSONObject, transport: Transport) -> CreateRequest:
    """Validate a create request body for the given transport.

    Args:
        body: the decoded JSON object (on WebSocket, the whole ``response.create`` event).
        transport: which transport it came on; some fields are allowed on one only.

    Returns:
        The validated request, with ``input`` normalised to a list of items.

    Raises:
        ProtocolError: for any invalid field, with ``param`` naming it.
    """
    body = dict(body)
    if transport is Transport.WEBSOCKET:
        # Real clients send ``stream``/``stream_options`` on WebSocket too; the transport streams anyway.
        body.pop("stream", None)
        body.pop("stream_options", None)
        if body.get("background") is True:
            raise invalid("unsupported_parameter", "'background' is not supported in WebSocket mode.", "background")
        if "stream_id" in body:
            check_stream_id(body["stream_id"])
    elif "stream_id" in body:
        raise invalid("unsupported_parameter", "'stream_id' is only allowed in WebSocket mode.", "stream_id")
    if "conversation" in body and body["conversation"] is not None:
        raise invalid("unsupported_parameter", "'conversation' is not supported by this gateway.", "conversation")
    if "model" not in body or body["model"] is None:
        raise invalid("missing_required_parameter", "Missing required parameter: 'model'.", "model")
    body["input"] = normalise_input(body.get("input"))
    try:
        request = CreateRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    if request.background and not request.store:
        raise invalid(
            "invalid_value",
            "'background' mode needs 'store': true: a background response is kept on the server to be polled, so it "
            "is not compatible with zero data retention.",
            "background",
        )
    if request.prompt_cache_key is not None and len(request.prompt_cache_key) > 1024:
        raise invalid(
            "string_above_max_length",
            "'prompt_cache_key' is longer than 1024 characters.",
            "prompt_cache_key",
        )
    return request


def normalise_input(value: object) -> list[Item]:
    """Turn the ``input`` field into a list of typed items, checking each item's shape."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise invalid(
            "invalid_type",
            f"'input' must be a string or an array of items, not {_json_kind(value)}.",
            "input",
        )
    items: list[Item] = []
    for index, item in enumerate(value):
        items.append(_check_item(item, f"input[{index}]"))
    return items


TEXT_PARTS = frozenset({"input_text", "output_text"})


def _check_item(value: object, param: str) -> Item:
    if not isinstance(value, dict):
        raise invalid("invalid_type", f"'{param}' must be an object, not {_json_kind(value)}.", param)
    item: Item = value
    kind = item.get("type")
    if kind is None and "role" in item:
        item = {"type": "message", **item}
        kind = "message"
    if not isinstance(kind, str):
        raise invalid("missing_required_parameter", f"'{param}.type' is required.", f"{param}.type")
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise invalid("invalid_value", f"'{param}.role' must be one of {sorted(MESSAGE_ROLES)}.", f"{param}.role")
        content = item.get("content")
        if not isinstance(content, (str, list)):
            raise invalid("invalid_type", f"'{param}.content' must be a string or an array.", f"{param}.content")
        if isinstance(content, list):
            for part_index, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise invalid(
                        "invalid_type",
                        f"'{param}.content[{part_index}]' must be a typed object.",
                        f"{param}.content[{part_index}]",
                    )
                if part["type"] in TEXT_PARTS:  # every provider reads their text as a string
                    _require_str(part, "text", f"{param}.content[{part_index}]")
    elif kind == "function_call_output":
        _require_str(item, "call_id", param)
        if not isinstance(item.get("output"), (str, list)):
            raise invalid("invalid_type", f"'{param}.output' must be a string or an array.", f"{param}.output")
    elif kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            _require_str(item, field, param)
    elif kind == "item_reference":
        _require_str(item, "id", param)
    return item


def _require_str(item: Item, field: str, param: str) -> None:
    if not isinstance(item.get(field), str):
        raise invalid("invalid_type", f"'{param}.{field}' must be a string.", f"{param}.{field}")


def _param_name(loc: tuple[int | str, ...]) -> str | None:
    """The request field an error location names: ``tools[2]``, not pydantic's union tags (``temperature.float``)."""
    if not loc:
        return None
    name = str(loc[0])
    for part in loc[1:]:
        if not isinstance(part, int):
            break
        name += f"[{part}]"
    return name


def check_stream_id(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or STREAM_ID_PATTERN.fullmatch(value) is None:
        raise invalid(
            "invalid_stream_id",
            "Invalid 'stream_id': must be a non-empty string with at most 256 characters and may only contain "
            "letters, numbers, underscores, hyphens, and periods.",
            "stream_id",
        )


def validation_error(exc: ValidationError) -> ProtocolError:
    first = exc.errors()[0]
    param = _param_name(first["loc"])
    if first["type"] == "missing":
        return invalid("missing_required_parameter", f"Missing required parameter: '{param}'.", param)
    return invalid(
        "invalid_type" if "type" in first["type"] else "invalid_value",
        f"Invalid value for '{param}': {first['msg']}.",
        param,
    )


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
