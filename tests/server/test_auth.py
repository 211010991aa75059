"""API keys → tenants: the Authenticator alone, then the same rules at the HTTP edge."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from tether.protocol.errors import ErrorType, ProtocolError
from tether.server.auth import ANONYMOUS_TENANT, Authenticator
from tether.server.runner import RunningServer

from .wire import ServerFactory, expect_http_error, http_client

KEYS = {"key-a": "alice", "key-b": "bob", "key-b2": "bob"}


def tenant_of(auth: Authenticator, **headers: str) -> str:
    return auth.tenant(Headers(headers=headers))


def refused(auth: Authenticator, **headers: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        tenant_of(auth, **headers)
    return caught.value


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer anything"}, {"x-api-key": "whatever"}, {"Authorization": "Basic Zm9vOmJhcg=="}],
)
def test_open_mode_puts_every_request_in_one_tenant(headers: dict[str, str]) -> None:
    auth = Authenticator({})
    assert auth.open
    assert tenant_of(auth, **headers) == ANONYMOUS_TENANT


@pytest.mark.parametrize(
    ("headers", "tenant"),
    [
        ({"Authorization": "Bearer key-a"}, "alice"),
        ({"authorization": "bearer key-b"}, "bob"),
        ({"AUTHORIZATION": "BEARER key-b2"}, "bob"),
        ({"Authorization": "Bearer   key-a  "}, "alice"),
        ({"x-api-key": "key-a"}, "alice"),
        ({"X-Api-Key": " key-b "}, "bob"),
        ({"api-key": "key-a"}, "alice"),
        ({"Authorization": "Basic a2V5LWE=", "x-api-key": "key-b"}, "bob"),
    ],
    ids=[
        "bearer",
        "lowercase",
        "uppercase",
        "padded",
        "x-api-key",
        "x-api-key-padded",
        "api-key",
        "basic-then-x-api-key",
    ],
)
def test_valid_key_maps_to_its_tenant(headers: dict[str, str], tenant: str) -> None:
    auth = Authenticator(KEYS)
    assert not auth.open
    assert tenant_of(auth, **headers) == tenant


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer key"},
        {"Authorization": "Bearer key-a-longer"},
        {"Authorization": "Bearer KEY-A"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer"},
        {"Authorization": "key-a"},
        {"Authorization": "Token key-a"},
        {"x-api-key": ""},
        {"x-api-key": "   "},
        {"x-api-key": "alice"},
        {"Authorization": "Bearer wrong", "x-api-key": "key-a"},
        {"Authorization": "Bearer clé"},
    ],
    ids=[
        "none",
        "wrong",
        "prefix",
        "longer",
        "case",
        "empty-bearer",
        "bare-scheme",
        "no-scheme",
        "other-scheme",
        "empty-x-api-key",
        "blank-x-api-key",
        "tenant-name-not-key",
        "bearer-wins-over-x-api-key",
        "non-ascii",
    ],
)
def test_missing_or_wrong_key_is_401_invalid_api_key(headers: dict[str, str]) -> None:
    error = refused(Authenticator(KEYS), **headers)
    assert error.status == 401
    assert error.code == "invalid_api_key"
    assert error.error_type is ErrorType.AUTHENTICATION
    assert error.param is None
    assert "wrong" not in error.message
    assert "key-a" not in error.message
    assert error.http_body() == {
        "error": {"message": error.message, "type": "authentication_error", "param": None, "code": "invalid_api_key"}
    }
    ws_event = error.ws_event()
    assert ws_event["status"] == 401
    assert ws_event["error"]["code"] == "invalid_api_key"


def test_keys_are_copied_at_construction() -> None:
    keys = {"key-a": "alice"}
    auth = Authenticator(keys)
    keys["key-z"] = "zed"
    del keys["key-a"]
    assert tenant_of(auth, authorization="Bearer key-a") == "alice"
    refused(auth, authorization="Bearer key-z")


def test_plain_dict_headers_are_read_by_lowercase_name() -> None:
    auth = Authenticator(KEYS)
    assert auth.tenant({"authorization": "Bearer key-a"}) == "alice"
    assert auth.tenant({"x-api-key": "key-b"}) == "bob"


# -- at the HTTP edge ---------------------------------------------------------------------------------------------


async def test_http_requests_need_a_key_when_keys_are_configured(make_server: ServerFactory) -> None:
    server: RunningServer = make_server(api_keys=KEYS)
    async with http_client(server) as client:
        error = expect_http_error(await client.post("/responses", json={"model": "x", "input": "hi"}), 401)
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "authentication_error"
        expect_http_error(await client.get("/responses/resp_x"), 401, "invalid_api_key")
        expect_http_error(await client.get("/models"), 401, "invalid_api_key")
        wrong = await client.post("/responses", json={"model": "x"}, headers={"Authorization": "Bearer nope"})
        expect_http_error(wrong, 401, "invalid_api_key")

    async with http_client(server, authorization="Bearer key-a") as client:
        reply = await client.post("/responses", json={"model": "x", "input": "hi"})
        assert reply.status_code == 200, reply.text
    async with http_client(server, **{"x-api-key": "key-b"}) as client:
        assert (await client.get("/models")).status_code == 200


async def test_auth_is_checked_before_the_body_is_parsed(make_server: ServerFactory) -> None:
    server: RunningServer = make_server(api_keys=KEYS)
    async with http_client(server) as client:
        reply = await client.post("/responses", content=b"{not json", headers={"content-type": "application/json"})
    expect_http_error(reply, 401, "invalid_api_key")


async def test_same_tenant_shares_responses_across_its_keys(make_server: ServerFactory) -> None:
    server: RunningServer = make_server(api_keys=KEYS)
    async with http_client(server, authorization="Bearer key-b") as client:
        reply = await client.post("/responses", json={"model": "x", "input": "hi"})
        response_id = reply.json()["id"]
    async with http_client(server, authorization="Bearer key-b2") as client:
        assert (await client.get(f"/responses/{response_id}")).status_code == 200
    async with http_client(server, authorization="Bearer key-a") as client:
        expect_http_error(await client.get(f"/responses/{response_id}"), 404, "response_not_found")


async def test_health_is_open(make_server: ServerFactory) -> None:
    server: RunningServer = make_server(api_keys=KEYS)
    async with http_client(server) as client:
        reply = await client.get(f"http://{server.host}:{server.port}/health")
    assert reply.status_code == 200


def test_a_blank_x_api_key_presents_no_key_even_to_an_empty_configured_one() -> None:
    """Authenticator takes what it is given (Settings refuses an empty key); a blank header still matches nothing."""
    assert refused(Authenticator({"": "nobody"}), **{"x-api-key": "  "}).code == "invalid_api_key"
