"""The routing rule: scripted for everything until upstreams exist; then an unmatched model is model_not_found."""

from __future__ import annotations

import pytest

from tether.protocol.errors import ProtocolError
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import ScriptedProvider, ScriptedTiming, parse_scripts
from tether.server.app import unrouted_provider
from tether.settings import ProviderSettings, Settings

UPSTREAM = {"up": ProviderSettings(kind="chat-completions", base_url="http://127.0.0.1:9/v1")}


def scripted() -> ScriptedProvider:
    return ScriptedProvider(ScriptedTiming(0.0, 0.0), parse_scripts({"scripts": {"known": [{"text": "hi"}]}}))


def test_without_upstreams_every_model_goes_to_the_scripted_model() -> None:
    assert unrouted_provider(Settings()) == "scripted"
    router = ProviderRouter({"scripted": scripted()}, default="scripted")
    assert router.resolve("gpt-5").name == "scripted"


def test_with_upstreams_an_unmatched_model_is_model_not_found() -> None:
    assert unrouted_provider(Settings(providers=UPSTREAM)) is None
    router = ProviderRouter({"scripted": scripted(), "up": scripted()}, [Route("claude-*", "up")], default=None)
    with pytest.raises(ProtocolError) as raised:
        router.resolve("gpt-5")
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, "model_not_found", "model")
    assert "claude-*" in raised.value.message
    assert router.provider_name("gpt-5") == "none"
    assert router.model_names() == []


def test_a_catch_all_route_or_an_explicit_default_still_takes_everything() -> None:
    router = ProviderRouter({"scripted": scripted()}, [Route("*", "scripted")], default=None)
    assert router.resolve("anything").name == "scripted"
    assert unrouted_provider(Settings(providers=UPSTREAM, default_provider="scripted")) == "scripted"


def test_an_unknown_script_is_refused_before_the_turn() -> None:
    router = ProviderRouter({"scripted": scripted()}, default="scripted")
    assert router.resolve("script:known").name == "scripted"
    with pytest.raises(ProtocolError) as raised:
        router.resolve("script:unknown")
    assert raised.value.code == "model_not_found"
