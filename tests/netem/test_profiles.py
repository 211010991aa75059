"""Profiles: realistic, consistent, validated."""

from __future__ import annotations

import dataclasses

import pytest

from tether.netem import ALIASES, CATALOG, PROFILES, NetworkProfile, mbit, profile_named
from tether.netem.catalog import SOURCES, Entry


def test_the_profiles_are_named_for_what_they_model() -> None:
    assert set(PROFILES) == {
        "loopback", "inflight-geo", "inflight-geo-blackout", "inflight-atg", "inflight-leo", "sat-geo", "sat-leo",
        "mobile-4g", "mobile-3g", "rural-2g", "intermittent-stall", "intermittent-reset",
    }  # fmt: skip
    for name, profile in PROFILES.items():
        assert profile.name == name


@pytest.mark.parametrize(("old", "new"), sorted(ALIASES.items()))
def test_old_names_keep_working(old: str, new: str) -> None:
    assert profile_named(old) is PROFILES[new]


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="inflight-geo"):
        profile_named("5g")


def test_loopback_shapes_nothing() -> None:
    loopback = PROFILES["loopback"]
    assert loopback == NetworkProfile("loopback")


def aspects(profile: NetworkProfile) -> set[str]:
    wanted = {
        "rtt": profile.rtt_s > 0,
        "jitter": profile.jitter_s > 0,
        "rate": profile.down_bps is not None,
        "loss": True,
        "outages": profile.outage_every_s is not None,
        "bursts": profile.burst_every_s is not None,
    }
    return {aspect for aspect, asked in wanted.items() if asked}  # fmt: skip


@pytest.mark.parametrize("entry", CATALOG[1:], ids=lambda entry: entry.profile.name)
def test_every_figure_has_a_source_or_says_it_is_an_assumption(entry: Entry) -> None:
    covered = {aspect.strip() for figure in entry.figures for aspect in figure.split(",")}
    assert aspects(entry.profile) <= covered, "each figure the profile sets is accounted for"
    for text in entry.figures.values():
        cited = [key for key in SOURCES if key in text]
        assert cited or "assumption" in text or text.startswith("as "), text


def test_the_profiles_order_the_links_as_the_sources_do() -> None:
    assert PROFILES["inflight-geo"].rtt_s > PROFILES["sat-geo"].rtt_s * 1.2, "in-flight GEO adds the cabin's queues"
    assert PROFILES["sat-leo"].rtt_s < 0.1
    assert PROFILES["inflight-atg"].rtt_s < PROFILES["inflight-geo"].rtt_s
    assert PROFILES["rural-2g"].up_bps == mbit(0.05)
    for profile in PROFILES.values():
        if profile.up_bps is not None and profile.down_bps is not None:
            assert profile.up_bps <= profile.down_bps, "uplinks are never faster than downlinks here"


def test_starlink_profiles_reconfigure_every_15_seconds() -> None:
    for name in ("sat-leo", "inflight-leo"):
        assert PROFILES[name].burst_every_s == 15.0
        assert PROFILES[name].burst_loss > 0
        assert PROFILES[name].burst_delay_s > 0


def test_intermittent_reset_is_intermittent_stall_that_loses_connection_state() -> None:
    reset = PROFILES["intermittent-reset"]
    assert dataclasses.replace(reset, name="intermittent-stall", outage_mode="stall") == PROFILES["intermittent-stall"]
    assert reset.outage_mode == "reset"
    assert (
        dataclasses.replace(reset, name="mobile-4g", outage_every_s=None, outage_s=0.0, outage_mode="stall")
        == (PROFILES["mobile-4g"])
    )


def test_delay_and_rto_derive_from_rtt() -> None:
    satellite = PROFILES["sat-geo"]
    assert satellite.one_way_delay_s == pytest.approx(0.325)
    assert satellite.rto_s == pytest.approx(1.3)
    assert PROFILES["mobile-4g"].rto_s == pytest.approx(0.3)
    assert PROFILES["sat-leo"].rto_s == pytest.approx(0.2), "Linux's minimum RTO"


def test_profiles_cannot_be_mutated() -> None:
    with pytest.raises(TypeError):
        PROFILES["loopback"] = NetworkProfile("other")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["mobile-4g"].rtt_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [
        {"rtt_s": -0.1},
        {"up_bps": 0},
        {"loss": 1.0},
        {"loss": -0.1},
        {"outage_every_s": 1.0, "outage_s": 1.0},
        {"outage_every_s": 1.0, "outage_s": 0.0},
        {"outage_mode": "drop"},
        {"burst_every_s": 15.0, "burst_s": 0.0},
        {"burst_loss": 1.0},
    ],
)
def test_invalid_profiles_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        NetworkProfile("bad", **changes)  # type: ignore[arg-type]
