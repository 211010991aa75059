"""The read routes, in process: a deleted response is gone from every path that could still give it back."""

from __future__ import annotations

import pytest

from tether.engine.engine import Engine
from tether.protocol.errors import ProtocolError

from .support import TENANT, run


async def test_a_deleted_response_cannot_be_resumed(engine: Engine) -> None:
    """A finished response stays in memory for the resume grace; a delete must end that too."""
    events = await run(engine, input="a secret")
    response_id = events[0]["response"]["id"]
    await engine.delete_response(TENANT, response_id)
    for after in (None, 0):
        with pytest.raises(ProtocolError) as raised:
            await engine.attach(TENANT, response_id, after=after)
        assert raised.value.code == "response_not_found"


async def test_a_retry_after_a_delete_is_told_its_key_is_spent(engine: Engine) -> None:
    """The idempotency key of a deleted response no longer answers with the deleted one's events, nor with a 404
    naming a response id the request never mentioned: the key is spent, and the error says so."""
    first = await run(engine, input="hi", **{"tether:idempotency_key": "key-1"})
    await engine.delete_response(TENANT, first[0]["response"]["id"])
    with pytest.raises(ProtocolError) as refused:
        await run(engine, input="hi", **{"tether:idempotency_key": "key-1"})
    error = refused.value
    assert (error.status, error.code, error.param) == (400, "invalid_value", "tether:idempotency_key")
    assert "no longer exists" in error.message
    again = await run(engine, input="hi", **{"tether:idempotency_key": "key-2"})
    assert again[-1]["type"] == "response.completed"


async def test_another_tenants_delete_leaves_the_response_resumable(engine: Engine) -> None:
    events = await run(engine, input="hello")
    response_id = events[0]["response"]["id"]
    with pytest.raises(ProtocolError):
        await engine.delete_response("bob", response_id)
    live = await engine.attach(TENANT, response_id, after=0)
    assert live.response_id == response_id
