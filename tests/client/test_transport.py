"""Transport helpers: URL derivation, error parsing."""

from __future__ import annotations

import pytest

from tether.client.errors import api_error_from_http, api_error_from_ws
from tether.client.transport import responses_url, websocket_url


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8000/v1", "ws://127.0.0.1:8000/v1/responses"),
        ("https://api.openai.com/v1/", "wss://api.openai.com/v1/responses"),
        ("wss://gateway.example/v1", "wss://gateway.example/v1/responses"),
    ],
)
def test_websocket_url_follows_the_sdks(base: str, expected: str) -> None:
    assert websocket_url(base) == expected


def test_a_base_url_needs_a_scheme() -> None:
    assert responses_url("http://h/v1/") == "http://h/v1/responses"
    with pytest.raises(ValueError, match="http"):
        websocket_url("ftp://h/v1")


def test_errors_of_both_shapes() -> None:
    http = api_error_from_http(429, b'{"error": {"code": "rate_limit", "message": "slow down"}}', {"retry-after": "2"})
    assert (http.status, http.code, http.retry_after_s, http.retryable) == (429, "rate_limit", 2.0, True)
    garbage = api_error_from_http(502, b"<html>bad gateway</html>", {})
    assert garbage.message == "<html>bad gateway</html>"
    assert garbage.code is None
    ws = api_error_from_ws(
        {
            "type": "error",
            "status": 429,
            "error": {"code": "websocket_queue_full", "message": "m", "headers": {"retry-after": "x"}},
        }
    )
    assert (ws.status, ws.code, ws.retry_after_s) == (429, "websocket_queue_full", None)
