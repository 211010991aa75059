"""Keeping upstream credentials out of every message a client or a log can see.

One rule for every provider and transport: the configured API key, the values of the configured extra headers (they
may carry credentials: an organisation token, a gateway key), and anything shaped like a credential are replaced by
``[redacted]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
# Shorter header values (versions, flags) are not credentials, and redacting them would garble ordinary text.
MIN_HEADER_SECRET_CHARS = 8
# Things that look like credentials even when they are not the configured key (another key, a masked echo of it).
_SECRET_LIKE = re.compile(
    r"(?i)\bbearer\s+\S+"
    r"|\b(?:sk|pk|rk)[-_][\w\-*.]{12,}"
    r"|\S*\*{3,}\S*"
    r"|\b[A-Za-z0-9_\-]{40,}\b"
)


def secrets_of(api_key: str | None, headers: Mapping[str, str]) -> tuple[str, ...]:
    """What must never appear in a message: the key, and the values of the headers sent with it."""
    extra = (value for value in headers.values() if len(value) >= MIN_HEADER_SECRET_CHARS)
    return tuple(dict.fromkeys(secret for secret in (api_key, *extra) if secret))


def sanitise(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove the given secrets, and anything shaped like a credential, from a message."""
    for secret in sorted(secrets, key=len, reverse=True):  # a longer secret may contain a shorter one
        if secret:
            text = text.replace(secret, REDACTED)
    return _SECRET_LIKE.sub(REDACTED, text)
