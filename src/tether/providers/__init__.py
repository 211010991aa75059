"""Upstream models behind one interface, and the built-in scripted model."""

from tether.providers.base import Provider, ProviderRequest
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import Script, ScriptedProvider, ScriptedTiming, load_scripts

__all__ = [
    "Provider",
    "ProviderRequest",
    "ProviderRouter",
    "Route",
    "Script",
    "ScriptedProvider",
    "ScriptedTiming",
    "load_scripts",
]
