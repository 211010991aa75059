"""ASGI middleware: a request that says both ``Transfer-Encoding`` and ``Content-Length`` is refused.

h11 reads such a body by its transfer coding, as RFC 9112 (section 6.3) says, but the two headers are how request
smuggling starts: a proxy in front that trusts the length would see a different request boundary than tether does.
The RFC lets a server refuse the request, and says it must close the connection after answering it; tether refuses
with ``400 invalid_request_framing`` before reading the body, so the answer says ``connection: close``
(:class:`~tether.server.unread_body.CloseAfterUnreadBody`, which runs outside this one).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from tether.protocol.errors import invalid
from tether.server.http import error_response

REFUSAL = invalid(
    "invalid_request_framing",
    "The request has both Transfer-Encoding and Content-Length headers; send one of them (RFC 9112, section 6.3).",
)


class RefuseAmbiguousLength:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _says_both(scope):
            await error_response(REFUSAL)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _says_both(scope: Scope) -> bool:
    names = {name for name, _ in scope["headers"]}
    return b"transfer-encoding" in names and b"content-length" in names
