"""The transport-neutral engine."""

from tether.engine.cache import CachedResponse, ConnectionState, HotCache
from tether.engine.context import Context
from tether.engine.engine import Engine, EngineLimits, EngineStats
from tether.engine.observer import (
    FanOut,
    InterruptReason,
    LeaseRenewal,
    Resolution,
    TurnObserver,
    TurnOrigin,
    TurnTimings,
)
from tether.engine.reads import response_from_record
from tether.engine.turn import Turn, TurnPlan

__all__ = [
    "CachedResponse",
    "ConnectionState",
    "Context",
    "Engine",
    "EngineLimits",
    "EngineStats",
    "FanOut",
    "HotCache",
    "InterruptReason",
    "LeaseRenewal",
    "Resolution",
    "Turn",
    "TurnObserver",
    "TurnOrigin",
    "TurnPlan",
    "TurnTimings",
    "response_from_record",
]
