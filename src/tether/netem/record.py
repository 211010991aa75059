"""What emulated a run's network: the record a benchmark stores next to its numbers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from tether.netem.profiles import NetworkProfile

Tier: TypeAlias = Literal["proxy", "kernel", "packet"]
Mechanism: TypeAlias = Literal["proxy", "tc-tbf", "tc-netem", "nft", "packet", "none"]

ASPECTS = ("delay", "rate", "loss", "outages", "bursts")


@dataclass(frozen=True, slots=True)
class EmulationRecord:
    """The tier a run used, and which mechanism emulated each aspect of its profile.

    Attributes:
        tier: ``"packet"`` for the packet emulator between namespaces, ``"kernel"`` if ``tc``/nftables shaped
            anything, else ``"proxy"``.
        profile: The profile emulated.
        seed: Seed of the proxy's random draws, if a proxy made any.
        mechanisms: For each of ``delay``, ``rate``, ``loss``, ``outages`` and ``bursts``: who emulated it
            (``"none"`` when the profile does not ask for it, or when the tier cannot).
    """

    tier: Tier
    profile: NetworkProfile
    seed: int | None
    mechanisms: Mapping[str, Mechanism]

    @classmethod
    def for_proxy(cls, profile: NetworkProfile, seed: int) -> EmulationRecord:
        """The record of a run shaped by ``ShapingProxy`` alone."""
        # The proxy has no notion of a packet burst: bursts are left out of its runs, and the record says so.
        mechanisms: dict[str, Mechanism] = {
            aspect: "proxy" if wanted and aspect != "bursts" else "none" for aspect, wanted in wants(profile)
        }
        return cls("proxy", profile, seed, mechanisms)

    @classmethod
    def for_packet(cls, profile: NetworkProfile, seed: int) -> EmulationRecord:
        """The record of a run shaped by the packet emulator between namespaces."""
        mechanisms: dict[str, Mechanism] = {aspect: "packet" if wanted else "none" for aspect, wanted in wants(profile)}
        return cls("packet", profile, seed, mechanisms)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        return {
            "tier": self.tier,
            "profile": dataclasses.asdict(self.profile),
            "seed": self.seed,
            "mechanisms": dict(self.mechanisms),
        }


def wants(profile: NetworkProfile) -> list[tuple[str, bool]]:
    """Each aspect of ``ASPECTS``, and whether ``profile`` asks for it."""
    return [
        ("delay", profile.rtt_s > 0 or profile.jitter_s > 0),
        ("rate", profile.up_bps is not None or profile.down_bps is not None),
        ("loss", profile.loss > 0),
        ("outages", profile.outage_every_s is not None),
        ("bursts", profile.burst_every_s is not None),
    ]
