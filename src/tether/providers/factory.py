"""Building the providers and the router from plain configuration values.

The caller (the server) reads ``Settings`` and passes down each provider's fields; this module never imports them.
Any object with the fields of :class:`ProviderConfig` will do (``ProviderSettings`` has them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

from tether.providers.anthropic import AnthropicFields, AnthropicProvider
from tether.providers.base import Provider
from tether.providers.chat_completions import ChatCompletionsProvider
from tether.providers.openai_responses import OpenAIResponsesProvider, ResponsesFields
from tether.providers.router import ProviderRouter, Route
from tether.providers.scripted import ScriptedProvider


class ProviderConfig(ResponsesFields, AnthropicFields, Protocol):
    """One configured upstream: the fields every provider kind reads, its kind, and where its key is."""

    @property
    def kind(self) -> str: ...
    @property
    def api_key_env(self) -> str | None: ...


ProviderBuilder = Callable[[str, ProviderConfig, str | None], Provider]


def upstream_key(config: ProviderConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The upstream API key from the environment variable the config names (never from the config file)."""
    if config.api_key_env is None:
        return None
    key = environ.get(config.api_key_env)
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


def build_router(
    configs: Mapping[str, ProviderConfig],
    routes: Sequence[Route],
    *,
    scripted: ScriptedProvider,
    default: str | None = "scripted",
    environ: Mapping[str, str] = os.environ,
) -> ProviderRouter:
    """The router over the built-in scripted model and every configured upstream.

    Raises:
        ValueError: a kind is unknown, a key's environment variable is unset, or a route names an unknown provider.
    """
    providers: dict[str, Provider] = {"scripted": scripted}
    for name, config in configs.items():
        if config.kind == "scripted":
            continue
        builder = BUILDERS.get(config.kind)
        if builder is None:
            raise ValueError(f"provider {name!r}: kind {config.kind!r} is not available")
        providers[name] = builder(name, config, upstream_key(config, environ))
    return ProviderRouter(providers, routes, default=default)
