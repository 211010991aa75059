"""ASGI middleware: an answer sent before the request's body was read in full says ``connection: close``.

Authentication and routing are decided on the headers, before the body is read, so a ``401 invalid_api_key`` (or a
404 for an unknown path) is answered while the client may still be sending a body of any size. On a kept-alive
connection uvicorn would then read and drop all of it (past ``max_body_bytes`` too: only reading the body checks the
limit). With ``connection: close`` the connection closes after the answer, lingering a little so the client reads
it (``server/http_timeouts.py``), as after a ``413`` or ``415``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CLOSE = (b"connection", b"close")


class CloseAfterUnreadBody:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        body_read = False

        async def watching_receive() -> Message:
            nonlocal body_read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_read:
                headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() != b"connection"]
                message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        await self.app(scope, watching_receive, closing_send)


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False
