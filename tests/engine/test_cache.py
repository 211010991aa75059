"""The hot cache is bounded by entries and by bytes of context JSON."""

from __future__ import annotations

from tether.engine.cache import CachedResponse, HotCache
from tether.engine.context import Context


def entry(response_id: str, text: str) -> CachedResponse:
    context = Context.from_items([{"type": "message", "role": "user", "content": text}])
    return CachedResponse(response_id, context, depth=1, store=True)


def test_bytes_bound_evicts_least_recently_used() -> None:
    size = entry("r", "x" * 1000).context.json_bytes
    cache = HotCache(capacity=100, max_bytes=3 * size)
    for name in ("a", "b", "c"):
        cache.put("t", entry(name, "x" * 1000))
    assert cache.get("t", "a") is not None  # now the most recently used
    cache.put("t", entry("d", "x" * 1000))
    assert cache.get("t", "b") is None
    assert {name for name in "acd" if cache.get("t", name) is not None} == set("acd")
    assert cache.bytes == 3 * size


def test_an_entry_larger_than_the_bound_is_not_kept() -> None:
    cache = HotCache(capacity=100, max_bytes=500)
    cache.put("t", entry("big", "x" * 1000))
    assert cache.get("t", "big") is None
    assert cache.bytes == 0


def test_replacing_and_discarding_keep_the_count_exact() -> None:
    cache = HotCache(capacity=100, max_bytes=10**6)
    cache.put("t", entry("a", "one"))
    cache.put("t", entry("a", "one"))
    cache.discard("t", "a")
    assert cache.bytes == 0
    assert len(cache) == 0
