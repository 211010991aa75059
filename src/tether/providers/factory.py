"""Building the providers and the router from ``Settings``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType

from tether.providers.anthropic import AnthropicProvider
from tether.providers.base import Provider
from tether.providers.chat_completions import ChatCompletionsProvider
from tether.providers.openai_responses import OpenAIResponsesProvider
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import ScriptedProvider, ScriptedTiming, load_scripts
from tether.settings import ProviderSettings, Settings

ProviderBuilder = Callable[[str, ProviderSettings, str | None], Provider]


def upstream_key(config: ProviderSettings) -> str | None:
    """The upstream API key from the environment variable the config names (never from the config file)."""
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ValueError(
            f"environment variable {config.api_key_env} (the upstream API key) is not set: "
            "export it before starting tether"
        )
    return key


BUILDERS: Mapping[str, ProviderBuilder] = MappingProxyType(
    {
        "chat-completions": ChatCompletionsProvider.from_config,
        "anthropic": AnthropicProvider.from_config,
        "openai-responses": OpenAIResponsesProvider.from_config,
    }
)


def build_router(settings: Settings) -> ProviderRouter:
    scripted = settings.scripted
    scripts = load_scripts(scripted.scripts_file) if scripted.scripts_file else {}
    providers: dict[str, Provider] = {
        "scripted": ScriptedProvider(ScriptedTiming(scripted.ttft_s, scripted.tokens_per_second), scripts)
    }
    for name, config in settings.providers.items():
        if config.kind == "scripted":
            continue
        builder = BUILDERS.get(config.kind)
        if builder is None:
            raise ValueError(f"provider {name!r}: kind {config.kind!r} is not available")
        providers[name] = builder(name, config, upstream_key(config))
    routes = [Route(r.model, r.provider, r.upstream_model, tuple(r.fallbacks)) for r in settings.routes]
    return ProviderRouter(providers, routes, default=settings.default_provider)
