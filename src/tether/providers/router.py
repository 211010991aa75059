"""Model name → provider routing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from tether.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Route:
    """Requests whose model matches ``pattern`` (shell-style, e.g. ``gpt-*``) go to ``provider``."""

    pattern: str
    provider: str


class ProviderRouter:
    """Chooses the provider for a model name: the first matching route, else the default provider."""

    def __init__(self, providers: Mapping[str, Provider], routes: Sequence[Route] = (), default: str = "scripted"):
        if default not in providers:
            raise ValueError(f"default provider {default!r} is not configured")
        for route in routes:
            if route.provider not in providers:
                raise ValueError(f"route {route.pattern!r} names unknown provider {route.provider!r}")
        self.providers = dict(providers)
        self.routes = list(routes)
        self.default = default

    def resolve(self, model: str) -> Provider:
        for route in self.routes:
            if fnmatchcase(model, route.pattern):
                return self.providers[route.provider]
        return self.providers[self.default]

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()

    def model_names(self) -> list[str]:
        """Model names worth listing: the route patterns without wildcards, and the default provider's name."""
        names = {route.pattern for route in self.routes if not any(ch in route.pattern for ch in "*?[")}
        names.add(self.default)
        return sorted(names)
