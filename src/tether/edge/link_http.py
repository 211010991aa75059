"""The link's HTTP fallback, for an edge whose WebSocket is refused (a proxy that blocks upgrades): each turn is
one ``POST /v1/tether/edge`` whose answer streams the downlink frames as SSE, resumed by another ``POST`` after
the last piece seen when the connection drops."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import orjson

from tether.client.retry import Backoff, RetryPolicy
from tether.protocol.sse import SSEDecoder


class HTTPCarrier:
    """Carries turns over plain HTTP requests.

    Args:
        url: the gateway's ``/v1/tether/edge`` URL (``http(s)://``).
        key: the gateway's API key.
        retry: the backoff between attempts of one turn.
        connect_timeout_s: to open a connection.
        read_timeout_s: the longest silence inside an answer before it counts as dropped.
    """

    def __init__(
        self, url: str, key: str | None, retry: RetryPolicy, connect_timeout_s: float, read_timeout_s: float
    ) -> None:
        self.url = url
        self.retry = retry
        self._headers = {"authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._client = httpx.AsyncClient(timeout=timeout)

    async def carry(
        self,
        frame: Callable[[], dict[str, Any]],
        receive: Callable[[bytes], None],
        done: Callable[[], bool],
        sent: Callable[[int], None],
    ) -> None:
        """Post ``frame()`` and feed every answering frame to ``receive`` until ``done()``, retrying drops."""
        backoff = Backoff(self.retry, random.Random())
        while not done():
            posted = frame()
            body = orjson.dumps(posted)
            try:
                async with self._client.stream("POST", self.url, content=body, headers=self._headers) as response:
                    sent(len(body))
                    if response.status_code == 409:  # a refusal frame: the link decides what to send next
                        receive(await response.aread())
                        continue
                    if response.status_code != 200:
                        receive(_error_frame(response.status_code, await response.aread(), posted["turn"]))
                        return
                    decoder = SSEDecoder()
                    async for chunk in response.aiter_bytes():
                        for event in decoder.decode(chunk):
                            receive(event.data.encode())
                            backoff.reset()
            except httpx.TransportError:
                pass
            if done():
                return
            delay = backoff.next_delay()
            await asyncio.sleep(self.retry.max_delay_s if delay is None else delay)

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_frame(status: int, body: bytes, turn: str) -> bytes:
    """The link's error frame for an HTTP answer: it ends the turn posted (each ``POST`` carries one)."""
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    return orjson.dumps({"type": "error", "status": status, "turn": turn, "error": error or {"code": "gateway_error",
                         "message": f"The gateway answered HTTP {status}."}})  # fmt: skip
