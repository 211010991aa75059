from types import MappingProxyType

import pytest

from tether.protocol.response import PARAM_DEFAULTS, response_object, thaw
from tether.types import JSONObject


def new_response(params: JSONObject | None = None) -> JSONObject:
    return dict(response_object(response_id="resp_1", created_at=0, status="completed", model="m", params=params or {},
                           output=[], previous_response_id=None, store=True))  # fmt: skip


def test_every_response_gets_its_own_copy_of_each_default() -> None:
    first, second = new_response(), new_response()
    first["tools"].append({"type": "function", "name": "f"})
    first["metadata"]["k"] = "v"
    first["text"]["format"]["type"] = "json_object"
    assert (second["tools"], second["metadata"], second["text"]) == ([], {}, {"format": {"type": "text"}})
    assert new_response()["reasoning"] == {"effort": None, "summary": None}


def test_the_defaults_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        PARAM_DEFAULTS["tools"] = []  # type: ignore[index]
    with pytest.raises(TypeError):
        PARAM_DEFAULTS["metadata"]["k"] = "v"
    with pytest.raises(AttributeError):
        PARAM_DEFAULTS["tools"].append({})


def test_sent_parameters_win_and_a_null_takes_the_default() -> None:
    response = new_response({"temperature": 0.2, "top_p": None, "custom": 1})
    assert (response["temperature"], response["top_p"], response["custom"]) == (0.2, 1.0, 1)


def test_thaw_turns_frozen_json_into_fresh_json() -> None:
    frozen = MappingProxyType({"a": (1, MappingProxyType({"b": ()})), "c": None})
    assert thaw(frozen) == {"a": [1, {"b": []}], "c": None}
    assert type(thaw(frozen)["a"][1]) is dict
