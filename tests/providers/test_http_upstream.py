"""UpstreamHTTP's request URLs: parsed once per path, and the same URL httpx would merge from the base."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from tether.providers.http_upstream import UpstreamHTTP, UpstreamOptions


@pytest.mark.parametrize(
    ("base_url", "path"),
    [
        ("http://127.0.0.1:8000/v1", "/responses"),
        ("http://127.0.0.1:8000/v1/", "responses"),
        ("https://api.example.com", "/v1/chat/completions"),
        ("https://api.example.com/openai/deployments/x", "/chat/completions"),
    ],
)
async def test_the_cached_url_is_the_one_httpx_merges(base_url: str, path: str) -> None:
    upstream = UpstreamHTTP(UpstreamOptions(base_url=base_url), {})
    try:
        with httpx.Client(base_url=base_url) as reference:
            expected = reference.build_request("POST", path).url
        assert upstream._url(path) == expected
        assert upstream._url(path) is upstream._url(path)  # parsed once, then reused
    finally:
        await upstream.aclose()
