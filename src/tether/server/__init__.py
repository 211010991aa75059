"""Thin transport adapters: the Starlette app, HTTP/SSE routes, the WebSocket endpoint, auth."""

from tether.server.app import create_app
from tether.server.runner import RunningServer, serve_in_thread, uvicorn_config

__all__ = ["RunningServer", "create_app", "serve_in_thread", "uvicorn_config"]
