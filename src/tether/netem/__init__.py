"""Network emulation for tether's benchmarks: profiles, a packet emulator between namespaces, a shaping TCP proxy,
fault injection, kernel shaping.

A standalone TCP tool: it knows nothing of HTTP or of tether's server, and can sit in front of any TCP service.
"""

from tether.netem.catalog import ALIASES, CATALOG, PROFILES, profile_named
from tether.netem.faults import AtBytes, AtTime, ByteTriggers, Fault, FaultSchedule, seeded_cuts
from tether.netem.kernel import KernelLink, KernelSupport, kernel_tier_available, probe_kernel, run_in_netns
from tether.netem.link import DirectionCounters, Drop, LinkDirection
from tether.netem.packet import PacketLink, PacketLinkError, PacketSupport, probe_packet_tier
from tether.netem.profiles import NetworkProfile, mbit
from tether.netem.proxy import ShapingProxy
from tether.netem.record import EmulationRecord
from tether.netem.shaping import DirectionShaper, OutageClock, Piece
from tether.netem.stats import ConnectionStats, DirectionStats, ProxyStats
from tether.netem.thread import ProxyThread
from tether.netem.types import Direction, FaultMode

__all__ = [
    "ALIASES",
    "CATALOG",
    "PROFILES",
    "AtBytes",
    "AtTime",
    "ByteTriggers",
    "ConnectionStats",
    "Direction",
    "DirectionCounters",
    "DirectionShaper",
    "DirectionStats",
    "Drop",
    "EmulationRecord",
    "Fault",
    "FaultMode",
    "FaultSchedule",
    "KernelLink",
    "KernelSupport",
    "LinkDirection",
    "NetworkProfile",
    "OutageClock",
    "PacketLink",
    "PacketLinkError",
    "PacketSupport",
    "Piece",
    "ProxyStats",
    "ProxyThread",
    "ShapingProxy",
    "kernel_tier_available",
    "mbit",
    "probe_kernel",
    "probe_packet_tier",
    "profile_named",
    "run_in_netns",
    "seeded_cuts",
]
