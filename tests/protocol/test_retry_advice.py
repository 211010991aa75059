"""x-should-retry: false exactly on the errors a retry cannot fix."""

from __future__ import annotations

import pytest

from tether.protocol.retry import retry_headers


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_json"),
        (401, "invalid_api_key"),
        (404, "response_not_found"),
        (413, "request_too_large"),
        (502, "upstream_auth_error"),
    ],
)
def test_permanent_errors_say_do_not_retry(status: int, code: str) -> None:
    assert retry_headers(status, code) == {"x-should-retry": "false"}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (408, "request_timeout"),
        (409, "conflict"),
        (429, "rate_limit_exceeded"),
        (500, "server_error"),
        (502, "upstream_error"),
        (503, "server_shutting_down"),
    ],
)
def test_retryable_errors_leave_it_to_the_client(status: int, code: str) -> None:
    assert retry_headers(status, code) == {}
