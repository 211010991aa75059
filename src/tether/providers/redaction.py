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


def sanitise(text: str, secrets: Iterable[str] = (), *, shapes: bool = True) -> str:
    """Remove the given secrets, and (with ``shapes``) anything shaped like a credential, from a message."""
    for secret in sorted(secrets, key=len, reverse=True):  # a longer secret may contain a shorter one
        if secret:
            text = text.replace(secret, REDACTED)
    return _SECRET_LIKE.sub(REDACTED, text) if shapes else text


class StreamRedactor:
    """Replaces the given secrets in a byte stream, however it is chunked (for bodies relayed as they came).

    Only the exact secrets are replaced (not the credential shapes :func:`sanitise` also removes: a relayed body
    is the upstream's, changed as little as possible). A chunk's end is held back only while it could be the start
    of a secret, so a stream is not delayed in the usual case.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({secret.encode() for secret in secrets if secret}, key=len, reverse=True)
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The part of ``chunk`` (and of what was held back) that is safe to send now."""
        data = self._held + chunk
        for secret in self._secrets:
            data = data.replace(secret, REDACTED.encode())
        held = self._partial(data)
        self._held = data[len(data) - held :] if held else b""
        return data[: len(data) - held]

    def flush(self) -> bytes:
        """What is left at the end of the stream (an unfinished secret is no secret)."""
        held, self._held = self._held, b""
        return held

    def redact(self, body: bytes) -> bytes:
        """A whole body, redacted."""
        return self.feed(body) + self.flush()

    def _partial(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that begins a secret."""
        longest = max((len(secret) for secret in self._secrets), default=0)
        for size in range(min(len(data), longest - 1), 0, -1):
            tail = data[-size:]
            if any(secret.startswith(tail) for secret in self._secrets):
                return size
        return 0
