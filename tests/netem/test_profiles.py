"""Profiles: realistic, consistent, validated."""

from __future__ import annotations

import dataclasses

import pytest

from tether.netem import PROFILES, NetworkProfile, mbit


def test_the_issue_profiles_exist_under_their_names() -> None:
    assert set(PROFILES) == {
        "loopback", "4g", "3g", "satellite", "inflight-wifi", "intermittent", "intermittent-reset",
    }  # fmt: skip
    for name, profile in PROFILES.items():
        assert profile.name == name


def test_loopback_shapes_nothing() -> None:
    loopback = PROFILES["loopback"]
    assert (loopback.rtt_s, loopback.up_bps, loopback.down_bps, loopback.loss) == (0.0, None, None, 0.0)
    assert loopback.outage_every_s is None


def test_values_are_in_realistic_ranges() -> None:
    for profile in PROFILES.values():
        if profile.name == "loopback":
            continue
        assert profile.up_bps is not None
        assert profile.down_bps is not None
        assert profile.up_bps <= profile.down_bps, "uplinks are never faster than downlinks here"
        assert 0 < profile.loss <= 0.05
    assert PROFILES["satellite"].rtt_s >= 0.5
    assert PROFILES["inflight-wifi"].rtt_s >= PROFILES["satellite"].rtt_s
    assert PROFILES["inflight-wifi"].up_bps == mbit(0.25)
    assert PROFILES["inflight-wifi"].jitter_s > 0
    assert PROFILES["3g"].rtt_s > PROFILES["4g"].rtt_s


def test_intermittent_reset_is_intermittent_that_loses_connection_state() -> None:
    reset = PROFILES["intermittent-reset"]
    assert dataclasses.replace(reset, name="intermittent", outage_mode="stall") == PROFILES["intermittent"]
    assert reset.outage_mode == "reset"


def test_intermittent_is_4g_that_goes_dark() -> None:
    intermittent = PROFILES["intermittent"]
    assert dataclasses.replace(intermittent, name="4g", outage_every_s=None, outage_s=0.0) == PROFILES["4g"]
    assert (intermittent.outage_every_s, intermittent.outage_s, intermittent.outage_mode) == (12.0, 3.0, "stall")


def test_delay_and_rto_derive_from_rtt() -> None:
    satellite = PROFILES["satellite"]
    assert satellite.one_way_delay_s == pytest.approx(0.3)
    assert satellite.rto_s == pytest.approx(1.2)
    assert PROFILES["4g"].rto_s == pytest.approx(0.2), "Linux's minimum RTO"


def test_profiles_cannot_be_mutated() -> None:
    with pytest.raises(TypeError):
        PROFILES["loopback"] = NetworkProfile("other")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["4g"].rtt_s = 1.0  # type: ignore[misc]


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
    ],
)
def test_invalid_profiles_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        NetworkProfile("bad", **changes)  # type: ignore[arg-type]
