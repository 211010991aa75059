"""The benchmark's network profiles, each named for what it models, with where every figure comes from.

One table (``CATALOG``): a profile, what it models, and per figure either the source that gives it or the word
*assumption* with the reason. ``PROFILES`` is the same table by name; ``ALIASES`` keeps the old names working.
``docs/benchmarks.md``'s profile table is generated from it (``python -m tether.netem.doctable --write FILE``).

Outages and bursts are periodic: ``every`` seconds, the last ``length`` seconds of the period are dark (or lossy).
The in-flight blackouts are scaled to the benchmark's tasks, which take half a minute to two minutes where a flight
takes hours: the source's 20–30 s blackouts become 6 s every 30 s (the first 24 s into a run), so that every task
longer than 24 s meets at least one, whichever arm plays it. That scale is an assumption, and so is each frequency
no source gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tether.netem.profiles import NetworkProfile, mbit


@dataclass(frozen=True, slots=True)
class Source:
    """A published measurement or preset, and what it says that a profile uses."""

    key: str
    url: str
    says: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One profile of the table: its numbers, what it models, and where each figure comes from.

    Attributes:
        profile: The numbers.
        models: What the profile stands for.
        figures: Per figure (``rtt``, ``rate``, ``loss``, ``outages``, ...): the source key(s) it comes from, or
            ``"assumption: why"``.
    """

    profile: NetworkProfile
    models: str
    figures: Mapping[str, str]


SOURCES: Mapping[str, Source] = MappingProxyType({source.key: source for source in (
    Source("wirelessmoves-2019", "https://blog.wirelessmoves.com/2019/10/gogo-vs-panasonic-on-planes.html",
           "Gogo (GEO): several Mbit/s down, 2 Mbit/s up sustained, RTT around 1,000 ms; connectivity lost for "
           "20–30 s, frequently, whenever a VPN tunnel was open. Panasonic: RTT 1,000 ms, capped at 1 Mbit/s, later "
           "a couple of hundred kbit/s; uplink never more than a few kB/s."),
    Source("rgn-2015", "https://runwaygirlnetwork.com/2015/11/19/ookla-speedtest-proves-less-perfect-inflight-internet-measure",
           "Gogo 2Ku media flight: ping 600–1,200 ms; speed tests from under 0.5 to over 20 Mbit/s."),
    Source("engadget-2015", "https://www.engadget.com/2015-11-12-we-pushed-the-in-flight-wifi-of-the-future-to-its-limits.html",
           "the same 2Ku flight: 11.71 Mbit/s down, 0.53 Mbit/s up, 656 ms ping."),
    Source("fangfufu", "https://www.fangfufu.co.uk/wiki/doku.php?id=public:characterising_the_latency_of_in-flight_internet",
           "China Southern A330 (GEO, over a VPN): three runs of 30 pings, 0%, 6% and 16% loss; average RTT "
           "1,425–1,564 ms, minimum 1,253 ms, maximum 2,768 ms, mdev 127–298 ms."),
    Source("appneta-2014", "https://www.appneta.com/blog/gogo-slow-airplane-wifi/",
           "Gogo air-to-ground: 1.5 Mbit/s down and 300 kbit/s up shared by the cabin; loss approaching 40% in "
           "several instances."),
    Source("gigaom-2010", "https://gigaom.com/2010/01/11/why-gogo-in-flight-wi-fi-is-garbage/",
           "Gogo air-to-ground: latency 165–275 ms; about 390 kbit/s down at best with two dozen users."),
    Source("arxiv-2508.09839", "https://arxiv.org/abs/2508.09839",
           "Starlink in flight, one device: median 64 Mbit/s down, 24 Mbit/s up; RTT depends on the ground station."),
    Source("ookla-ispreview-2025", "https://www.ispreview.co.uk/ (Ookla in-flight study, via ukfcf.org.uk)",
           "Hawaiian Airlines on Starlink: median 161.76 Mbit/s down, 20.47 up, 74 ms; British Airways on Gogo 2Ku "
           "(GEO): 22.57 down, 3.9 up, 827 ms."),
    Source("ookla-q2-2021", "https://www.ookla.com/articles/starlink-hughesnet-viasat-performance-q2-2021",
           "US medians: Starlink 97.23 Mbit/s down, 13.89 up, 45 ms; HughesNet 19.73 / 2.43, 724 ms; "
           "Viasat 18.13 / 3.38, 630 ms."),
    Source("apnic-2022-05", "https://blog.apnic.net/2022/05/02/testing-leo-and-geo-satellite-services-in-australia/",
           "a GEO hop adds at least 477 ms; with switching and terrestrial parts, RTTs of around 600 ms."),
    Source("apnic-2024-05", "https://blog.apnic.net/2024/05/17/a-transport-protocols-view-of-starlink/",
           "Starlink: the minimum latency changes every 15 s (a new satellite); some loss and a latency spike at "
           "each handover (about +30 ms; worst 30 → 80 ms); 6.7 ms average jitter between successive RTTs."),
    Source("imc-2022", "https://openreview.net/forum?id=09EcD8pU0GD",
           "A browser-side view of Starlink (IMC 2022): frequent losses of up to 50% of packets, correlated with "
           "satellite handovers."),
    Source("chrome-devtools", "https://github.com/addyosmani/puppeteer-webperf (DevTools 'Slow 3G' values)",
           "'Slow 3G': 500 kbit/s × 0.8 = 400 kbit/s both ways, latency 400 ms × 5 = 2,000 ms (the × 5 corrects for "
           "request-level throttling: 400 ms is the packet-level RTT)."),
    Source("lighthouse", "https://github.com/GoogleChrome/lighthouse/blob/main/docs/throttling.md",
           "mobile preset ('Slow 4G', formerly 'Fast 3G'): 150 ms, 1.6 Mbit/s down, 750 kbit/s up, no packet loss."),
    Source("firefox-devtools", "https://firefox-source-docs.mozilla.org/devtools-user/network_monitor/throttling/",
           "'Regular 2G': 250 kbit/s down, 50 kbit/s up, 300 ms minimum latency."),
)})  # fmt: skip

_MOBILE_4G = NetworkProfile("mobile-4g", rtt_s=0.15, up_bps=mbit(0.75), down_bps=mbit(1.6))
_INFLIGHT_GEO = NetworkProfile("inflight-geo", rtt_s=0.9, jitter_s=0.3, up_bps=mbit(0.5), down_bps=mbit(2), loss=0.03)


def _with_handovers(profile: NetworkProfile) -> NetworkProfile:
    """``profile`` with Starlink's 15-second reconfigurations: a loss burst and a latency spike each time."""
    return dataclasses.replace(profile, burst_every_s=15.0, burst_s=0.5, burst_loss=0.5, burst_delay_s=0.015)


_HANDOVER_FIGURES = {
    "bursts": "apnic-2024-05 (every 15 s, +30 ms RTT), imc-2022 (up to 50% loss); assumption: 0.5 s long",
}

CATALOG: tuple[Entry, ...] = (
    Entry(NetworkProfile("loopback"), "no network at all: the baseline of every ratio", {}),
    Entry(_INFLIGHT_GEO, "in-flight Wi-Fi over a geostationary satellite (Gogo 2Ku, Panasonic, China Southern)", {
        "rtt, jitter": "wirelessmoves-2019 (~1,000 ms), rgn-2015 (600–1,200 ms), fangfufu (1,253–2,768 ms): "
                       "900 ms base + up to 300 ms jitter each way, so RTTs of 0.9–1.5 s before queueing",
        "rate": "wirelessmoves-2019 (Gogo 2 Mbit/s up, Panasonic ≤ 1 Mbit/s down), engadget-2015 (0.53 up): "
                "a passenger's share, 2 down / 0.5 up",
        "loss": "fangfufu (0% / 6% / 16% over 30 pings each); assumption: 3%, the lower part of that range",
    }),
    Entry(dataclasses.replace(_INFLIGHT_GEO, name="inflight-geo-blackout", outage_every_s=30.0, outage_s=6.0),
          "inflight-geo with the blackouts seen on Gogo with a tunnel open", {
        "rtt, jitter, rate, loss": "as inflight-geo",
        "outages": "wirelessmoves-2019 (20–30 s, frequently); assumption: scaled to the task length, 6 s every "
                   "30 s, TCP connections survive (stall)",
    }),
    Entry(NetworkProfile("inflight-atg", rtt_s=0.22, jitter_s=0.03, up_bps=mbit(0.3), down_bps=mbit(1.5),
                         loss=0.01, burst_every_s=20.0, burst_s=2.0, burst_loss=0.4),
          "in-flight Wi-Fi over air-to-ground cells (Gogo ATG)", {
        "rtt": "gigaom-2010 (165–275 ms)",
        "rate": "appneta-2014 (1.5 Mbit/s down, 300 kbit/s up, shared)",
        "loss, bursts": "appneta-2014 (approaching 40% in several instances): 40% bursts; assumption: 1% between "
                        "them, a 2 s burst every 20 s",
        "jitter": "assumption: 30 ms",
    }),
    Entry(_with_handovers(NetworkProfile("inflight-leo", rtt_s=0.074, jitter_s=0.007, up_bps=mbit(24),
                                         down_bps=mbit(64), loss=0.002)),
          "in-flight Wi-Fi over Starlink", {
        "rtt": "ookla-ispreview-2025 (74 ms median, Hawaiian)",
        "rate": "arxiv-2508.09839 (64 / 24 Mbit/s medians, one device)",
        "loss": "assumption: 0.2% outside handovers",
        **_HANDOVER_FIGURES,
        "jitter": "apnic-2024-05 (6.7 ms between successive RTTs, fixed site; assumed the same in flight)",
    }),
    Entry(NetworkProfile("sat-geo", rtt_s=0.65, jitter_s=0.01, up_bps=mbit(3), down_bps=mbit(19), loss=0.001),
          "fixed broadband over a geostationary satellite (HughesNet, Viasat)", {
        "rtt": "apnic-2022-05 (~600 ms), ookla-q2-2021 (630 and 724 ms)",
        "rate": "ookla-q2-2021 (18–20 Mbit/s down, 2.4–3.4 up)",
        "loss": "assumption: 0.1% (no source gives one)",
        "jitter": "assumption: 10 ms",
    }),
    Entry(_with_handovers(NetworkProfile("sat-leo", rtt_s=0.045, jitter_s=0.007, up_bps=mbit(14),
                                         down_bps=mbit(97), loss=0.002)),
          "fixed Starlink, with its 15-second reconfiguration", {
        "rtt": "ookla-q2-2021 (45 ms median)",
        "rate": "ookla-q2-2021 (97.23 / 13.89 Mbit/s)",
        "loss": "assumption: 0.2% outside handovers",
        **_HANDOVER_FIGURES,
        "jitter": "apnic-2024-05 (6.7 ms)",
    }),
    Entry(_MOBILE_4G, "a slow 4G / fast 3G phone (the web-performance tools' mobile preset)", {
        "rtt, rate": "lighthouse (150 ms, 1.6 Mbit/s down, 750 kbit/s up)",
        "loss": "lighthouse (none)",
    }),
    Entry(NetworkProfile("mobile-3g", rtt_s=0.4, up_bps=mbit(0.4), down_bps=mbit(0.4), loss=0.005),
          "a slow 3G phone", {
        "rtt, rate": "chrome-devtools (Slow 3G: 400 kbit/s both ways, 400 ms packet RTT)",
        "loss": "assumption: 0.5% (the presets have none)",
    }),
    Entry(NetworkProfile("rural-2g", rtt_s=0.3, jitter_s=0.05, up_bps=mbit(0.05), down_bps=mbit(0.25), loss=0.02,
                         outage_every_s=40.0, outage_s=4.0),
          "a rural 2G (EDGE) phone at the edge of a cell", {
        "rtt, rate": "firefox-devtools (Regular 2G: 250 / 50 kbit/s, 300 ms)",
        "loss, outages, jitter": "assumption: 2% loss, 50 ms jitter, 4 s dark every 40 s (no source gives them)",
    }),
    Entry(dataclasses.replace(_MOBILE_4G, name="intermittent-stall", outage_every_s=12.0, outage_s=3.0),
          "mobile-4g through tunnels or handovers that keep connection state", {
        "rtt, rate, loss": "as mobile-4g",
        "outages": "assumption: 3 s dark every 12 s; TCP connections survive (stall)",
    }),
    Entry(dataclasses.replace(_MOBILE_4G, name="intermittent-reset", outage_every_s=12.0, outage_s=3.0,
                              outage_mode="reset"),
          "mobile-4g whose outages lose connection state (NAT rebinding, a new radio bearer)", {
        "rtt, rate, loss": "as mobile-4g",
        "outages": "assumption: 3 s dark every 12 s; live connections are reset at both ends when it goes dark",
    }),
)  # fmt: skip

PROFILES: Mapping[str, NetworkProfile] = MappingProxyType({entry.profile.name: entry.profile for entry in CATALOG})
"""The named profiles of the benchmark, read-only; derive variants with ``dataclasses.replace``."""

ALIASES: Mapping[str, str] = MappingProxyType({
    "4g": "mobile-4g", "3g": "mobile-3g", "satellite": "sat-geo", "inflight-wifi": "inflight-geo",
    "intermittent": "intermittent-stall",
})  # fmt: skip
"""Names of earlier versions of the benchmark, and the profile each now means."""


def profile_named(name: str) -> NetworkProfile:
    """The profile called ``name`` (or an alias of it).

    Raises:
        KeyError: If no profile has that name; the message lists the names there are.
    """
    canonical = ALIASES.get(name, name)
    if canonical not in PROFILES:
        raise KeyError(f"no network profile {name!r}; known: {', '.join([*PROFILES, *ALIASES])}")
    return PROFILES[canonical]


def markdown_table() -> str:
    """The profile table of ``docs/benchmarks.md``, with every figure's source, and the sources below it."""

    def rate(bps: float | None) -> str:
        return "∞" if bps is None else f"{bps / 1e6:g} Mbit/s"

    lines = ["| profile | models | RTT | jitter | down | up | loss | outages / bursts | where each figure comes from |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for entry in CATALOG:
        p = entry.profile
        episodes = []
        if p.outage_every_s is not None:
            episodes.append(f"dark {p.outage_s:g} s every {p.outage_every_s:g} s ({p.outage_mode})")
        if p.burst_every_s is not None:
            extra = f", +{2 * p.burst_delay_s * 1000:g} ms RTT" if p.burst_delay_s else ""
            episodes.append(f"{p.burst_loss:.0%} loss for {p.burst_s:g} s every {p.burst_every_s:g} s{extra}")
        figures = "; ".join(f"{figure}: {text}" for figure, text in entry.figures.items()) or "–"
        lines.append(
            f"| `{p.name}` | {entry.models} | {p.rtt_s * 1000:g} ms | {p.jitter_s * 1000:g} ms | {rate(p.down_bps)} "
            f"| {rate(p.up_bps)} | {p.loss:.1%} | {'; '.join(episodes) or '–'} | {figures} |"
        )
    lines += ["", "Aliases (earlier names): " + ", ".join(f"`{old}` → `{new}`" for old, new in ALIASES.items()), ""]
    lines += ["Sources:", ""]
    lines += [f"- **{source.key}**: {source.says} <{source.url}>" for source in SOURCES.values()]
    return "\n".join(lines)
