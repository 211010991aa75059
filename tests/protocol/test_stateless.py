"""The equivalent stateless request and its size: the size computed from item sizes is the size of the JSON itself."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.items import fingerprint
from tether.protocol.request import Transport, parse_create
from tether.protocol.stateless import sent_params, stateless_request, stateless_size

text = st.text(max_size=40)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
items = st.lists(st.dictionaries(text, json_value, max_size=5).map(lambda d: {"type": "message", **d}), max_size=8)
params = st.dictionaries(text, json_value, max_size=5).map(lambda d: {**d, "model": "m"})


@given(params, items)
def test_the_size_from_item_sizes_is_the_size_of_the_request(params: dict[str, Any], context: list[Any]) -> None:
    item_bytes = sum(fingerprint(item).size for item in context)
    assert stateless_size(params, len(context), item_bytes) == len(orjson.dumps(stateless_request(params, context)))


def test_chain_fields_and_extensions_are_not_part_of_it() -> None:
    request = stateless_request(
        {"model": "m", "previous_response_id": "resp_1", "tether:inherit_params": True, "temperature": 0.2}, []
    )
    assert request == {"model": "m", "temperature": 0.2, "input": []}


def test_only_the_parameters_the_client_set_count() -> None:
    create = parse_create({"model": "m", "input": "hi", "temperature": 0.5, "x_vendor": 1}, Transport.HTTP)
    chosen = sent_params(create, create.forwarded_params())
    assert chosen == {"model": "m", "temperature": 0.5, "x_vendor": 1}  # not store, tools, tool_choice, ...
