"""The per-credential socket pools of :mod:`tether.providers.responses_ws` (no socket is opened here)."""

from __future__ import annotations

from typing import cast

from tether.providers.responses_ws import PoolsByCredential, SocketPool, UpstreamSocket

A = {"authorization": "Bearer sk-agent-a-0123456789"}
B = {"authorization": "Bearer sk-agent-b-0123456789"}
C = {"authorization": "Bearer sk-agent-c-0123456789"}


def pools(max_pools: int) -> PoolsByCredential:
    def make(headers: dict[str, str]) -> SocketPool:
        return SocketPool("ws://127.0.0.1:9/v1/responses", {"x-configured": "1", **headers}, (), max_age_s=60.0)

    return PoolsByCredential(make, max_pools=max_pools)


async def test_each_credential_has_its_own_pool_and_keeps_it() -> None:
    by_credential = pools(4)
    a, b = by_credential.pool(A), by_credential.pool(B)
    assert a is not b
    assert by_credential.pool(dict(A)) is a
    assert a._headers == {"x-configured": "1", **A}
    assert b._headers == {"x-configured": "1", **B}
    assert all(A["authorization"] not in key for key in by_credential.pools)  # keyed by a hash, not the value
    await by_credential.aclose()


async def test_past_the_limit_the_oldest_idle_pool_goes_but_never_one_in_use() -> None:
    by_credential = pools(1)
    a = by_credential.pool(A)
    a.lent.append(cast(UpstreamSocket, object()))  # a turn holds one of its sockets (none is opened here)
    b = by_credential.pool(B)
    assert list(by_credential.pools.values()) == [a, b]  # over the limit rather than close a socket in use
    a.lent.clear()
    by_credential.pool(C)
    assert a not in by_credential.pools.values()
    assert b not in by_credential.pools.values()
    assert len(by_credential.pools) == 1
    await by_credential.aclose()
