"""Redacting upstream credentials from messages (pure)."""

from __future__ import annotations

import pytest

from tether.providers.redaction import StreamRedactor, sanitise, secrets_of

KEY = "sk-test-0123456789abcdefghij"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"bad key {KEY}!", "bad key [redacted]!"),
        ("Incorrect API key provided: sk-proj-****abcd.", "Incorrect API key provided: [redacted]"),
        ("header Bearer abc.def was refused", "header [redacted] was refused"),
        ("another sk-ant-api03-abcdefghijklmnop here", "another [redacted] here"),
        ("token " + "A1b2" * 12, "token [redacted]"),
        ("model 'qwen3-8b' not found; max_tokens too large", "model 'qwen3-8b' not found; max_tokens too large"),
    ],
)
def test_sanitise_removes_anything_shaped_like_a_key(text: str, expected: str) -> None:
    assert sanitise(text, [KEY]) == expected


def test_the_secrets_are_the_key_and_the_header_values_long_enough_to_be_credentials() -> None:
    headers = {"x-org-token": "org-0123456789", "x-version": "2"}
    assert secrets_of(KEY, headers) == (KEY, "org-0123456789")
    assert secrets_of(None, {}) == ()


def test_a_longer_secret_is_redacted_whole_even_when_it_contains_a_shorter_one() -> None:
    assert sanitise("got abcdefgh-and-more", ["abcdefgh", "abcdefgh-and-more"]) == "got [redacted]"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_a_stream_is_redacted_however_it_is_chunked(size: int) -> None:
    body = f"data: echo {KEY} and org_0123456789 end\n\n".encode() * 3
    redactor = StreamRedactor([KEY, "org_0123456789"])
    out = b"".join(redactor.feed(body[i : i + size]) for i in range(0, len(body), size)) + redactor.flush()
    assert out == b"data: echo [redacted] and [redacted] end\n\n" * 3


def test_a_stream_is_held_back_only_where_a_secret_could_begin() -> None:
    redactor = StreamRedactor([KEY])
    assert redactor.feed(b"data: {}\n\n") == b"data: {}\n\n"
    assert redactor.feed(b"data: sk-te") == b"data: "
    assert redactor.feed(b"st is not it") == b"sk-test is not it"
    assert redactor.flush() == b""
    assert StreamRedactor([]).redact(b"as it came") == b"as it came"
