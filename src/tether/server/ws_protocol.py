"""uvicorn's sans-I/O WebSocket protocol, with the end of a refused handshake recorded as the end of the handshake.

An ASGI app refuses an upgrade with a ``websocket.http.response`` (tether answers an upgrade without a valid API key
with ``401 invalid_api_key``). uvicorn 0.54 writes that response and closes the socket, but leaves its
``handshake_complete`` flag unset, so once the app returns it logs the error ``ASGI callable returned without
completing handshake.``: an error-level line for every client that forgot its key.
"""

from __future__ import annotations

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol; a denial response completes the handshake."""

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True
