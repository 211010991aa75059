"""Which errors a retry can fix, said to HTTP clients with ``x-should-retry`` (the ``openai`` SDKs honour it).

The SDKs retry 408, 409, 429 and every 5xx by default. A request tether refused as invalid fails the same way again,
and so does a 502 ``upstream_auth_error`` (tether's upstream credentials are wrong: the client's retry cannot fix
them), so those carry ``x-should-retry: false``.
"""

from __future__ import annotations

SHOULD_RETRY_HEADER = "x-should-retry"
RETRYABLE_4XX = frozenset({408, 409, 429})
PERMANENT_5XX_CODES = frozenset({"upstream_auth_error"})


def retry_can_fix(status: int, code: str | None) -> bool:
    if 400 <= status < 500:
        return status in RETRYABLE_4XX
    return code not in PERMANENT_5XX_CODES


def retry_headers(status: int, code: str | None) -> dict[str, str]:
    """``{"x-should-retry": "false"}`` for an error a retry cannot fix; no header otherwise (the SDK decides)."""
    return {} if retry_can_fix(status, code) else {SHOULD_RETRY_HEADER: "false"}
