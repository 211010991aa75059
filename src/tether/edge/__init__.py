"""``tether edge``: the agent's side of the last mile. See ``docs/edge.md``."""

from tether.edge.app import EdgeConfig, create_edge_app
from tether.edge.chains import ChainBook, Delta, Sent
from tether.edge.link import EdgeStats, GatewayLink, LinkOptions, LinkState, LinkUnavailableError

__all__ = [
    "ChainBook",
    "Delta",
    "EdgeConfig",
    "EdgeStats",
    "GatewayLink",
    "LinkOptions",
    "LinkState",
    "LinkUnavailableError",
    "Sent",
    "create_edge_app",
]
