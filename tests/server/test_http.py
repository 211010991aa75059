"""The HTTP surface (JSON and SSE) over real sockets, checking exact status codes, headers and bytes."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.server.runner import RunningServer
from tether.types import JSONObject

from .wire import (
    ERROR_KEYS,
    RECEIVE_TIMEOUT_S,
    RESPONSE_KEYS,
    WEATHER_TOOL,
    ServerFactory,
    expect_http_error,
    function_calls,
    http_client,
    output_text,
    parse_sse,
    sse_events,
    user,
)

ERROR_STATUSES = frozenset({400, 404, 405, 413, 422})


def without_extensions(body: JSONObject) -> JSONObject:
    """The body without tether's own ``tether:`` keys (live-stream details that a stored copy need not carry)."""
    return {key: value for key, value in body.items() if not key.startswith("tether:")}


async def create(client: httpx.AsyncClient, **body: Any) -> JSONObject:
    """POST a turn that must complete; return the response object."""
    reply = await client.post("/responses", json={"model": "gpt-test", **body})
    assert reply.status_code == 200, reply.text
    response: JSONObject = reply.json()
    assert response["status"] == "completed", response
    return response


async def stream(client: httpx.AsyncClient, **body: Any) -> tuple[httpx.Response, bytes]:
    """POST a streaming turn; return the response (headers) and the raw body."""
    async with client.stream("POST", "/responses", json={"model": "gpt-test", "stream": True, **body}) as reply:
        raw = await reply.aread()
    return reply, raw


# -- turns --------------------------------------------------------------------------------------------------------


async def test_json_turn(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        reply = await client.post("/responses", json={"model": "gpt-test", "input": "Say hello."})
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/json"
        response = reply.json()
        assert set(response) >= RESPONSE_KEYS
        assert response["object"] == "response"
        assert response["status"] == "completed"
        assert response["store"] is True
        assert output_text(response)

        fetched = await client.get(f"/responses/{response['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == without_extensions(response)


async def test_a_blank_idempotency_key_header_is_no_key(shared_server: RunningServer) -> None:
    """It was a key like any other: every request with a blank header was answered with the first one's response."""
    async with http_client(shared_server) as client:
        first = await client.post("/responses", json={"model": "echo", "input": "one"}, headers={"Idempotency-Key": ""})
        second = await client.post(
            "/responses", json={"model": "echo", "input": "two"}, headers={"Idempotency-Key": ""}
        )
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] != second.json()["id"]
    assert output_text(second.json()) == "two"


async def test_an_idempotency_key_header_past_256_characters_is_a_400(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        refused = await client.post(
            "/responses", json={"model": "echo", "input": "one"}, headers={"Idempotency-Key": "k" * 100_000}
        )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "Idempotency-Key")
    assert "100,000 characters" in error["message"]


async def test_json_tool_loop(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        first = await create(client, input="Weather in Paris?", tools=[WEATHER_TOOL])
        [call] = function_calls(first)
        second = await create(
            client,
            previous_response_id=first["id"],
            input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}],
            tools=[WEATHER_TOOL],
        )
    assert second["previous_response_id"] == first["id"]
    assert output_text(second)


async def test_sse_turn_raw_framing(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        reply, raw = await stream(client, input="Say hello.")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-cache"
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b"\nid:" not in raw
    assert not raw.startswith(b"id:")

    events = sse_events(raw)
    types = [event["type"] for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert all("stream_id" not in event for event in events)
    response = events[-1]["response"]
    assert set(response) >= RESPONSE_KEYS
    assert output_text(response) == "".join(event["delta"] for event in events[4:-4])


async def test_sse_mid_stream_error_is_flat_and_followed_by_response_failed(make_server: ServerFactory) -> None:
    # An upstream nobody listens on fails after the response has started (model names are checked before).
    dead = {"kind": "chat-completions", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    server = make_server(providers={"dead": dead}, routes=[{"model": "dead-*", "provider": "dead"}])
    async with http_client(server) as client:
        reply, raw = await stream(client, model="dead-model", input="hi")
    assert reply.status_code == 200
    events = sse_events(raw)
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert [event["sequence_number"] for event in events] == [0, 1, 2, 3]
    error = events[2]
    assert set(error) == {"type", "code", "message", "param", "sequence_number"}
    assert "error" not in error
    assert error["code"] == "upstream_error"
    failed = events[3]["response"]
    assert failed["status"] == "failed"
    assert set(failed["error"]) >= {"code", "message"}


async def test_sse_request_refused_before_streaming_is_a_json_error(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        reply, _ = await stream(client, previous_response_id="resp_missing", input="hi")
        assert reply.status_code == 400
        assert reply.headers["content-type"] == "application/json"
        assert reply.json()["error"]["code"] == "previous_response_not_found"


async def test_json_turn_that_fails_is_an_error_envelope(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        reply = await client.post("/responses", json={"model": "script:missing", "input": "hi"})
    error = expect_http_error(reply, 400, "model_not_found")
    assert error["param"] == "model"


async def test_unstored_response_is_not_retrievable_or_continuable(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        response = await create(client, store=False, input="secret")
        assert response["store"] is False
        expect_http_error(await client.get(f"/responses/{response['id']}"), 404, "response_not_found")
        replay = await client.get(f"/responses/{response['id']}", params={"stream": "true"})
        expect_http_error(replay, 404, "response_not_found")
        items = await client.get(f"/responses/{response['id']}/input_items")
        expect_http_error(items, 404, "response_not_found")
        reply = await client.post(
            "/responses", json={"model": "x", "previous_response_id": response["id"], "input": "more"}
        )
        expect_http_error(reply, 400, "previous_response_not_found")


# -- request errors -----------------------------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, bytes, str, str | None]] = [
    ("malformed-json", b'{"model": "x",', "invalid_json", None),
    ("empty-body", b"", "invalid_json", None),
    ("not-utf8", b'{"model": "\xff"}', "invalid_json", None),
    ("array", b'[{"model": "x"}]', "invalid_json", None),
    ("string", b'"hello"', "invalid_json", None),
    ("number", b"1", "invalid_json", None),
    ("missing-model", b'{"input": "hi"}', "missing_required_parameter", "model"),
    ("null-model", b'{"model": null, "input": "hi"}', "missing_required_parameter", "model"),
    ("model-number", b'{"model": 5}', "invalid_type", "model"),
    ("input-number", b'{"model": "x", "input": 5}', "invalid_type", "input"),
    ("input-object", b'{"model": "x", "input": {"role": "user"}}', "invalid_type", "input"),
    ("item-no-type", b'{"model": "x", "input": [{"content": "hi"}]}', "missing_required_parameter", "input[0].type"),
    ("store-string", b'{"model": "x", "store": "yes"}', "invalid_type", "store"),
    ("stream-string", b'{"model": "x", "stream": "yes"}', "invalid_type", "stream"),
    ("tools-object", b'{"model": "x", "tools": {}}', "invalid_type", "tools"),
    ("instructions-list", b'{"model": "x", "instructions": ["a"]}', "invalid_type", "instructions"),
    ("metadata-list", b'{"model": "x", "metadata": []}', "invalid_type", "metadata"),
    ("max-output-zero", b'{"model": "x", "max_output_tokens": 0}', "invalid_value", "max_output_tokens"),
    ("truncation", b'{"model": "x", "truncation": "sometimes"}', "invalid_value", "truncation"),
    ("background-store-false", b'{"model": "x", "background": true, "store": false}', "invalid_value", "background"),
    ("background-string", b'{"model": "x", "background": "yes"}', "invalid_type", "background"),
    ("conversation", b'{"model": "x", "conversation": "conv_1"}', "unsupported_parameter", "conversation"),
    ("stream-id", b'{"model": "x", "input": "hi", "stream_id": "a"}', "unsupported_parameter", "stream_id"),
    ("unknown-prev", b'{"model": "x", "previous_response_id": "resp_nope"}', "previous_response_not_found", None),
    (
        "orphan-call-id",
        b'{"model": "x", "input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}',
        "function_call_not_found",
        "input[0].call_id",
    ),
]


@pytest.mark.parametrize(("body", "code", "param"), [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
async def test_bad_create_body_is_400_with_the_right_code_and_param(
    shared_server: RunningServer, body: bytes, code: str, param: str | None
) -> None:
    async with http_client(shared_server) as client:
        reply = await client.post("/responses", content=body, headers={"content-type": "application/json"})
    error = expect_http_error(reply, 400, code)
    assert error["type"] == "invalid_request_error"
    if code == "previous_response_not_found":
        param = "previous_response_id"
    assert error["param"] == param


@pytest.mark.parametrize(
    ("field", "value"),
    [("tool_choice", 5), ("temperature", "hot"), ("top_p", []), ("temperature", True), ("max_output_tokens", 1.5)],
)
async def test_wrong_type_of_union_field_names_the_field(
    shared_server: RunningServer, field: str, value: object
) -> None:
    async with http_client(shared_server) as client:
        reply = await client.post("/responses", json={"model": "x", field: value})
    error = expect_http_error(reply, 400, "invalid_type")
    assert error["param"] == field


async def test_body_at_the_limit_is_accepted(make_server: ServerFactory) -> None:
    server = make_server(max_body_bytes=4096)
    skeleton = json.dumps({"model": "echo", "input": ""})
    body = json.dumps({"model": "echo", "input": "x" * (4096 - len(skeleton))}).encode()
    assert len(body) == 4096
    async with http_client(server) as client:
        reply = await client.post("/responses", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("path", ["/responses", "/responses/compact", "/responses/input_tokens"])
async def test_oversized_body_is_413(make_server: ServerFactory, path: str) -> None:
    server = make_server(max_body_bytes=4096)
    body = json.dumps({"model": "x", "input": "x" * 10_000}).encode()
    async with http_client(server) as client:
        reply = await client.post(path, content=body, headers={"content-type": "application/json"})
    error = expect_http_error(reply, 413, "request_too_large")
    assert "4096" in error["message"]


async def test_oversized_chunked_body_is_413(make_server: ServerFactory) -> None:
    server = make_server(max_body_bytes=4096)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "x", "input": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    async with http_client(server) as client:
        request = client.build_request(
            "POST", "/responses", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        reply = await client.send(request)
        expect_http_error(reply, 413, "request_too_large")
        # The connection is still usable (or transparently replaced) and the server healthy.
        assert (await client.post("/responses", json={"model": "x", "input": "hi"})).status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "br", "gzip, identity", "x-unknown"])
async def test_a_compressed_body_is_415_naming_the_encoding(shared_server: RunningServer, encoding: str) -> None:
    """A gzip body was read as JSON and refused as 400 invalid_json, which hid what the client got wrong."""
    body = gzip.compress(json.dumps({"model": "echo", "input": "hi"}).encode())
    headers = {"content-type": "application/json", "content-encoding": encoding}
    async with http_client(shared_server) as client:
        for path in ("/responses", "/responses/compact", "/responses/input_tokens"):
            reply = await client.post(path, content=body, headers=headers)
            error = expect_http_error(reply, 415, "unsupported_media_type")
            assert f"Content-Encoding '{encoding.split(',')[0]}'" in error["message"]
            assert reply.headers["connection"] == "close"
        plain = json.dumps({"model": "echo", "input": "hi"}).encode()
        identity = {"content-type": "application/json", "content-encoding": "identity"}
        assert (await client.post("/responses", content=plain, headers=identity)).status_code == 200


async def test_small_chunked_body_is_accepted(shared_server: RunningServer) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "echo", '
        yield b'"input": "chunked"}'

    async with http_client(shared_server) as client:
        reply = await client.post("/responses", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    assert output_text(reply.json()) == "chunked"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("POST", "/v2/responses", 404, "not_found"),
        ("GET", "/v1/responses/a/b/c", 404, "not_found"),
        ("PUT", "/v1/responses", 405, "method_not_allowed"),
        ("PATCH", "/v1/responses/resp_x", 405, "method_not_allowed"),
        ("POST", "/v1/responses/resp_x", 405, "method_not_allowed"),
        ("DELETE", "/health", 405, "method_not_allowed"),
        ("GET", "/v1/responses/input_tokens/x/y", 404, "not_found"),
        # A trailing slash is an unknown route, never Starlette's 307 with an empty body:
        ("GET", "/v1/responses/", 404, "not_found"),
        ("DELETE", "/v1/responses/", 404, "not_found"),
        ("POST", "/v1/responses/", 404, "not_found"),
        ("GET", "/v1/responses/resp_x/", 404, "not_found"),
        ("POST", "/v1/responses/compact/", 404, "not_found"),
        ("GET", "/v1/models/", 404, "not_found"),
        ("GET", "/health/", 404, "not_found"),
        ("GET", "/metrics/", 404, "not_found"),
    ],
)
async def test_unknown_routes_and_methods_get_json_envelopes(
    shared_server: RunningServer, method: str, path: str, status: int, code: str
) -> None:
    base = f"http://{shared_server.host}:{shared_server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=RECEIVE_TIMEOUT_S) as client:
        reply = await client.request(method, path)
    expect_http_error(reply, status, code)


# -- reads --------------------------------------------------------------------------------------------------------


async def test_get_unknown_response_is_404(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        error = expect_http_error(await client.get("/responses/resp_unknown"), 404, "response_not_found")
        assert error["param"] == "response_id"
        expect_http_error(await client.get("/responses/resp_unknown/input_items"), 404, "response_not_found")
        expect_http_error(await client.get("/responses/resp_unknown?stream=true"), 404, "response_not_found")


async def test_delete_twice(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        response = await create(client, input="to delete")
        first = await client.delete(f"/responses/{response['id']}")
        assert first.status_code == 200
        assert first.json() == {"id": response["id"], "object": "response.deleted", "deleted": True}
        expect_http_error(await client.delete(f"/responses/{response['id']}"), 404, "response_not_found")
        expect_http_error(await client.get(f"/responses/{response['id']}"), 404, "response_not_found")
        reply = await client.post("/responses", json={"model": "x", "previous_response_id": response["id"]})
        expect_http_error(reply, 400, "previous_response_not_found")


async def test_input_items_paging(shared_server: RunningServer) -> None:
    words = ["one", "two", "three", "four", "five"]
    async with http_client(shared_server) as client:
        response = await create(client, input=[user(word) for word in words])
        path = f"/responses/{response['id']}/input_items"

        default = (await client.get(path)).json()
        assert default["object"] == "list"
        assert [item["content"][0]["text"] for item in default["data"]] == words[::-1]
        assert default["has_more"] is False
        assert default["first_id"] == default["data"][0]["id"]
        assert default["last_id"] == default["data"][-1]["id"]
        for item in default["data"]:
            assert item["type"] == "message"
            assert item["status"] == "completed"
            assert item["content"] == [{"type": "input_text", "text": item["content"][0]["text"]}]
        ids_desc = [item["id"] for item in default["data"]]
        assert len(set(ids_desc)) == 5

        asc = (await client.get(path, params={"order": "asc"})).json()
        assert [item["id"] for item in asc["data"]] == ids_desc[::-1]

        pages: list[JSONObject] = []
        params: dict[str, str | int] = {"order": "asc", "limit": 2}
        while True:
            page = (await client.get(path, params=params)).json()
            pages.append(page)
            if not page["has_more"]:
                break
            params["after"] = page["last_id"]
        assert [[item["content"][0]["text"] for item in page["data"]] for page in pages] == [
            ["one", "two"],
            ["three", "four"],
            ["five"],
        ]
        assert [page["has_more"] for page in pages] == [True, True, False]
        assert all(page["first_id"] == page["data"][0]["id"] for page in pages)
        assert all(page["last_id"] == page["data"][-1]["id"] for page in pages)

        desc_page = (await client.get(path, params={"limit": 2, "after": ids_desc[1]})).json()
        assert [item["id"] for item in desc_page["data"]] == ids_desc[2:4]
        assert desc_page["has_more"] is True

        past_end = (await client.get(path, params={"after": ids_desc[-1]})).json()
        assert past_end["data"] == []
        assert past_end["first_id"] is None
        assert past_end["last_id"] is None
        assert past_end["has_more"] is False

        assert len((await client.get(path, params={"limit": 100})).json()["data"]) == 5
        assert len((await client.get(path, params={"limit": 1})).json()["data"]) == 1
        for bad, param in (
            ({"limit": 0}, "limit"),
            ({"limit": 101}, "limit"),
            ({"limit": -1}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"order": "sideways"}, "order"),
            ({"after": "msg_unknown"}, "after"),
        ):
            error = expect_http_error(await client.get(path, params=bad), 400)
            assert error["param"] == param


async def test_stream_replay_after_a_sequence_number(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        _reply, raw = await stream(client, input="Say hello.")
        original = sse_events(raw)
        response_id = original[-1]["response"]["id"]
        last = original[-1]["sequence_number"]
        path = f"/responses/{response_id}"

        for starting_after in (None, -1, 0, 3, last - 1):
            params = {"stream": "true"}
            if starting_after is not None:
                params["starting_after"] = str(starting_after)
            async with client.stream("GET", path, params=params) as replay:
                assert replay.status_code == 200
                assert replay.headers["content-type"].startswith("text/event-stream")
                replayed = sse_events(await replay.aread())
            cut = -1 if starting_after is None else starting_after
            assert replayed == [event for event in original if event["sequence_number"] > cut]

        error = expect_http_error(await client.get(path, params={"stream": "true", "starting_after": "x"}), 400)
        assert error["param"] == "starting_after"
        # the one resume rule (tether.engine.resume): nothing after the end of a finished response is an error
        error = expect_http_error(await client.get(path, params={"stream": "true", "starting_after": last}), 400)
        assert (error["code"], error["param"]) == ("nothing_to_resume", "starting_after")


async def test_stream_replay_of_a_failed_response_keeps_the_flat_error(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        _, raw = await stream(client, model="fail", input="hi")
        original = sse_events(raw)
        response_id = original[0]["response"]["id"]
        async with client.stream("GET", f"/responses/{response_id}", params={"stream": "true"}) as replay:
            replayed = sse_events(await replay.aread())
    assert replayed == original


async def test_health(shared_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://{shared_server.host}:{shared_server.port}") as client:
        reply = await client.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


# -- compaction and token counting ---------------------------------------------------------------------------------


async def test_compact_then_start_a_new_chain_from_the_window(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        first = await create(client, input="The code word is cobalt.")
        reply = await client.post(
            "/responses/compact",
            json={
                "model": "gpt-test",
                "previous_response_id": first["id"],
                "input": [user("Keep it in mind.")],
                "prompt_cache_key": "session-1",
            },
        )
        assert reply.status_code == 200, reply.text
        compacted = reply.json()
        assert compacted["object"] == "response.compaction"
        assert isinstance(compacted["id"], str)
        assert isinstance(compacted["created_at"], int)
        assert any(item["type"] == "compaction" for item in compacted["output"])
        for item in compacted["output"]:
            if item["type"] == "compaction":
                assert isinstance(item["encrypted_content"], str)
        assert compacted["usage"]["input_tokens"] > 0

        window = compacted["output"]
        chained = await create(client, input=[*window, user("What was the code word?")])
        assert chained["previous_response_id"] is None
        assert output_text(chained)
        continued = await create(client, previous_response_id=chained["id"], input=[user("Thanks.")])
        assert continued["previous_response_id"] == chained["id"]


async def test_tool_output_after_a_compacted_window_holding_its_call(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        first = await create(client, input="Weather in Paris?", tools=[WEATHER_TOOL])
        [call] = function_calls(first)
        compacted = await client.post(
            "/responses/compact", json={"model": "gpt-test", "previous_response_id": first["id"]}
        )
        window = compacted.json()["output"]
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
        reply = await client.post("/responses", json={"model": "gpt-test", "input": [*window, output]})
    assert reply.status_code == 200, reply.text


async def test_compact_errors(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        error = expect_http_error(
            await client.post("/responses/compact", json={"input": "hi"}), 400, "missing_required_parameter"
        )
        assert error["param"] == "model"
        expect_http_error(await client.post("/responses/compact", content=b"{"), 400, "invalid_json")
        reply = await client.post("/responses/compact", json={"model": "x", "previous_response_id": "resp_missing"})
        expect_http_error(reply, 400, "previous_response_not_found")


async def test_input_tokens(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        short = await client.post("/responses/input_tokens", json={"input": "hi"})
        assert short.status_code == 200
        assert set(short.json()) == {"object", "input_tokens"}
        assert short.json()["object"] == "response.input_tokens"
        small = short.json()["input_tokens"]
        assert small > 0

        long = (await client.post("/responses/input_tokens", json={"model": "x", "input": "hi " * 200})).json()
        assert long["input_tokens"] > small
        instructed = await client.post(
            "/responses/input_tokens", json={"input": "hi", "instructions": "Be brief. " * 50}
        )
        assert instructed.json()["input_tokens"] > small

        parent = await create(client, input="hi " * 200)
        chained = await client.post(
            "/responses/input_tokens", json={"previous_response_id": parent["id"], "input": "hi"}
        )
        assert chained.json()["input_tokens"] > long["input_tokens"]

        expect_http_error(await client.post("/responses/input_tokens", content=b"[]"), 400, "invalid_json")
        reply = await client.post("/responses/input_tokens", json={"input": 5})
        assert expect_http_error(reply, 400, "invalid_type")["param"] == "input"


# -- never a 500 --------------------------------------------------------------------------------------------------

MALFORMED: list[tuple[str, str, bytes | None]] = [
    ("POST", "/responses", b"{"),
    ("POST", "/responses", b"\x00\x01\x02"),
    ("POST", "/responses", b"[]"),
    ("POST", "/responses", b"true"),
    ("POST", "/responses", b'{"model": {}}'),
    ("POST", "/responses", b'{"model": "x", "input": [null]}'),
    ("POST", "/responses", b'{"model": "x", "input": [{"type": 5}]}'),
    ("POST", "/responses", b'{"model": "x", "input": [{"type": "message", "role": "user", "content": 5}]}'),
    ("POST", "/responses", b'{"model": "x", "input": [{"type": "message", "role": "user", "content": [5]}]}'),
    ("POST", "/responses", b'{"model": "x", "input": [{"type": "function_call", "call_id": 1}]}'),
    ("POST", "/responses", b'{"model": "x", "input": [{"type": "function_call_output", "call_id": "c"}]}'),
    ("POST", "/responses", b'{"model": "x", "input": [{"type": "item_reference"}]}'),
    ("POST", "/responses", b'{"model": "x", "tools": [5]}'),
    ("POST", "/responses", b'{"model": "x", "tool_choice": []}'),
    ("POST", "/responses", b'{"model": "x", "metadata": {"a": 1}}'),
    ("POST", "/responses", b'{"model": "x", "temperature": 1e400}'),
    ("POST", "/responses", b'{"model": "x", "max_output_tokens": 1e30}'),
    ("POST", "/responses", b'{"model": "x", "input": "\\ud800"}'),
    ("POST", "/responses", b'{"model": "x", "prompt_cache_key": "' + b"k" * 1025 + b'"}'),
    ("POST", "/responses", b'{"model": "x", "include": "all"}'),
    ("POST", "/responses", b'{"model": "x", "tether:idempotency_key": 5}'),
    ("POST", "/responses", b"[" * 5000 + b"]" * 5000),
    ("POST", "/responses/compact", b"{}"),
    ("POST", "/responses/compact", b'{"model": "x", "input": 5}'),
    ("POST", "/responses/input_tokens", b'{"input": [{"type": "message", "role": "nobody"}]}'),
    ("GET", "/responses/resp_x/input_items?limit=1.5", None),
    ("GET", "/responses/resp_x/input_items?order=up", None),
    ("GET", "/responses/resp_x?stream=true&starting_after=", None),
    ("GET", "/responses/%00", None),
    ("DELETE", "/responses/resp_never", None),
    ("OPTIONS", "/responses", None),
    ("PUT", "/responses/compact", b"{}"),
]


def check_error_envelope(reply: httpx.Response) -> None:
    assert reply.status_code in ERROR_STATUSES, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= ERROR_KEYS, body


async def test_a_batch_of_malformed_requests_never_gets_a_500(shared_server: RunningServer) -> None:
    async with http_client(shared_server) as client:
        for method, path, body in MALFORMED:
            headers = {"content-type": "application/json"} if body is not None else {}
            reply = await client.request(method, path, content=body, headers=headers)
            try:
                check_error_envelope(reply)
            except AssertionError as failure:
                raise AssertionError(f"{method} {path} {body!r:.80}: {failure}") from None


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "model",
    "input",
    "instructions",
    "previous_response_id",
    "store",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "max_output_tokens",
    "temperature",
    "reasoning",
    "text",
    "include",
    "truncation",
    "stream_id",
    "background",
    "generate",
]
BODIES = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=5).map(
    lambda body: {"model": "gpt-test", **body} if "model" not in body else body
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=BODIES, path=st.sampled_from(["/responses", "/responses/compact", "/responses/input_tokens"]))
def test_arbitrary_json_bodies_never_get_a_500(shared_server: RunningServer, body: JSONObject, path: str) -> None:
    payload = json.dumps(body, allow_nan=False).encode()
    with httpx.Client(base_url=shared_server.base_url, timeout=RECEIVE_TIMEOUT_S) as client:
        reply = client.post(path, content=payload, headers={"content-type": "application/json"})
    if reply.status_code == 200:
        if body.get("stream") is True and path == "/responses":
            assert reply.headers["content-type"].startswith("text/event-stream")
            assert parse_sse(reply.content)[-1].data == "[DONE]"
        else:
            assert isinstance(reply.json(), dict)
    else:
        check_error_envelope(reply)
