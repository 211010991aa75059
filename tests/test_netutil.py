"""The shared thread-server helper: it serves, stops, and says so when it cannot start."""

from __future__ import annotations

import socket

import httpx2 as httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tether.netutil import ThreadedServer, free_port


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def config(port: int) -> uvicorn.Config:
    app = Starlette(routes=[Route("/", hello)])
    return uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, log_level="warning")


def test_the_app_answers_while_the_block_runs_and_the_thread_ends_after() -> None:
    with ThreadedServer(config(free_port()), name="netutil-test") as running:
        assert httpx.get(f"http://127.0.0.1:{running.port}/", timeout=5).text == "hello"
    assert not running.thread.is_alive()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{running.port}/", timeout=5)


def test_a_port_in_use_is_a_clear_error_not_a_hang() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"did not start on 127.0.0.1:{port}"), ThreadedServer(config(port)):
            pass
