"""What the server's handlers share: created in the lifespan, reached through ``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from tether.engine.engine import Engine
from tether.server.audit import Auditor
from tether.server.auth import Authenticator
from tether.server.inspector import Inspector
from tether.server.off_loop import OffLoop
from tether.server.value_counter import ValueCounter
from tether.settings import Settings


@dataclass(frozen=True, slots=True)
class ServerState:
    settings: Settings
    engine: Engine
    auth: Authenticator
    audit: Auditor | None = None
    inspector: Inspector | None = None
    off_loop: OffLoop = field(default_factory=OffLoop)  # large requests are read here
    value_counter: ValueCounter = field(default_factory=ValueCounter)  # requests over the cheap bound are counted here


def server_state(connection: HTTPConnection) -> ServerState:
    state: ServerState = connection.app.state.tether
    return state
