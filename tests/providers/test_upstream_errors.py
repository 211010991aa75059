"""Mapping upstream failures to the protocol errors clients see (pure)."""

from __future__ import annotations

import pytest

from tether.providers.upstream_errors import (
    UpstreamConnectionError,
    UpstreamReportedError,
    error_message,
    protocol_error,
    status_error,
    stream_error,
)

KEY = "sk-test-0123456789abcdefghij"


@pytest.mark.parametrize(
    ("status", "expected_status", "code", "error_type"),
    [
        (429, 429, "rate_limit_exceeded", "rate_limit_error"),
        (401, 502, "upstream_auth_error", "upstream_error"),
        (403, 502, "upstream_auth_error", "upstream_error"),
        (400, 400, "upstream_error", "upstream_error"),
        (413, 400, "upstream_error", "upstream_error"),
        (500, 502, "upstream_error", "upstream_error"),
        (529, 502, "upstream_error", "upstream_error"),
    ],
)
def test_status_mapping(status: int, expected_status: int, code: str, error_type: str) -> None:
    error = status_error("up", status, "Nope.", {})
    assert (error.status, error.code, str(error.error_type)) == (expected_status, code, error_type)
    assert error.message.endswith("Nope.")
    assert "'up'" in error.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"message": "openai style"}}', "openai style"),
        (b'{"type": "error", "error": {"type": "x", "message": "anthropic style"}}', "anthropic style"),
        (b'{"error": "ollama style"}', "ollama style"),
        (b'{"detail": "fastapi style"}', "fastapi style"),
        (b"plain   text\nbody", "plain text body"),
        (b'{"unknown": 1}', '{"unknown": 1}'),
        (b"x" * 2000, "x" * 499 + "…"),
    ],
)
def test_error_messages_in_every_common_shape(body: bytes, message: str) -> None:
    assert error_message(body) == message


def test_stream_errors_are_sanitised() -> None:
    error = stream_error("up", {"error": {"message": f"leaked {KEY}"}}, [KEY])
    assert KEY not in error.message


def test_an_in_stream_error_keeps_its_code_and_a_rate_limit_stays_a_429() -> None:
    failed = protocol_error("up", UpstreamReportedError(None, "server_error", "boom"))
    limited = protocol_error("up", UpstreamReportedError(None, "rate_limit_exceeded", "slow down"))
    assert (failed.status, failed.code, failed.message) == (
        502,
        "upstream_error",
        "Upstream 'up' failed: error in stream: server_error: boom.",
    )
    assert (limited.status, limited.code) == (429, "rate_limit_exceeded")


def test_a_timeout_is_a_504_and_a_broken_connection_a_502() -> None:
    assert protocol_error("up", UpstreamConnectionError("no answer", timeout=True)).status == 504
    assert protocol_error("up", UpstreamConnectionError("reset", mid_turn=True)).status == 502


def test_the_mapping_redacts_the_secrets_it_is_given() -> None:
    error = UpstreamReportedError(400, f"code-{KEY}", f"your header x-org=org-secret-value and key {KEY}")
    mapped = protocol_error("up", error, [KEY, "org-secret-value"])
    assert KEY not in mapped.message
    assert "org-secret-value" not in mapped.message
