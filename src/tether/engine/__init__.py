"""The transport-neutral engine."""

from tether.engine.cache import CachedResponse, ConnectionState, HotCache
from tether.engine.context import Context
from tether.engine.engine import Engine, EngineLimits, EngineStats
from tether.engine.reads import response_from_record
from tether.engine.turn import TERMINAL_EVENTS, Turn, TurnPlan

__all__ = [
    "TERMINAL_EVENTS",
    "CachedResponse",
    "ConnectionState",
    "Context",
    "Engine",
    "EngineLimits",
    "EngineStats",
    "HotCache",
    "Turn",
    "TurnPlan",
    "response_from_record",
]
