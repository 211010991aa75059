"""Model name → provider routing, with upstream model names and ordered fallbacks."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol, runtime_checkable

import structlog

from tether.protocol.errors import ProtocolError
from tether.protocol.model_events import ModelEvent
from tether.providers.base import Provider, ProviderRequest, SteeringRelay
from tether.providers.raw_forward import ForwardedAPI, RawForwarding, RawReply, RawRequest, with_model

_log = structlog.get_logger("tether.providers")


@runtime_checkable
class ModelChecking(Protocol):
    """A provider that can tell before a turn starts that it has no such model (the scripted model's scripts)."""

    def check_model(self, model: str) -> None:
        """Raises: ProtocolError: ``model_not_found``."""


@runtime_checkable
class RequestChecking(Protocol):
    """A provider that can tell before a turn starts that its upstream cannot be sent the request: a parameter
    or a new input item its translation refuses (``unsupported_value``), as the stateless upstreams' do."""

    def check_request(self, request: ProviderRequest) -> None:
        """Raises: ProtocolError: what the translation would raise once the turn had started."""


def _check_model(provider: Provider) -> Callable[[str], None] | None:
    return provider.check_model if isinstance(provider, ModelChecking) else None


def _check_request(provider: Provider) -> Callable[[ProviderRequest], None] | None:
    return provider.check_request if isinstance(provider, RequestChecking) else None


def model_not_found(model: str, reason: str) -> ProtocolError:
    return ProtocolError(400, "model_not_found", f"The model '{model}' does not exist: {reason}.", param="model")


@dataclass(frozen=True, slots=True)
class Route:
    """Requests whose model matches ``pattern`` (shell-style, e.g. ``gpt-*``) go to ``provider``.

    Attributes:
        upstream_model: the model name sent upstream; ``None`` sends the client's.
        fallbacks: providers tried in order when the one before fails before its first event.
    """

    pattern: str
    provider: str
    upstream_model: str | None = None
    fallbacks: tuple[str, ...] = ()


class RoutedProvider:
    """A provider reached through a route: renames the model, and falls back along the route's chain.

    A fallback happens only when a provider fails before yielding any event, so the client never sees two answers.
    """

    def __init__(self, chain: Sequence[Provider], upstream_model: str | None) -> None:
        self.chain = list(chain)
        self.upstream_model = upstream_model
        self.name = "+".join(provider.name for provider in self.chain)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ModelEvent]:
        if self.upstream_model is not None:
            request = dataclasses.replace(request, model=self.upstream_model)
        for position, provider in enumerate(self.chain):
            started = False
            try:
                async for event in provider.stream(request):
                    started = True
                    yield event
                return
            except ProtocolError as error:
                if started or position == len(self.chain) - 1:
                    raise
                _log.warning(
                    "provider.fallback", failed=provider.name, code=error.code, next=self.chain[position + 1].name
                )

    def forwarder(self, api: ForwardedAPI) -> RawForwarding | None:
        """Forwarding along this route for requests of ``api``, when the route's provider speaks it (else ``None``:
        translate instead). Fallbacks are the chain's later providers that speak ``api`` too; the route's
        ``upstream_model``, if any, replaces the body's ``model`` (the one change forwarding makes)."""
        chain = [p for p in self.chain if isinstance(p, RawForwarding) and p.api == api]
        if not chain or chain[0] is not self.chain[0]:
            return None
        return RoutedForwarder(chain, self.upstream_model, api)

    async def aclose(self) -> None:
        """The chain's providers are owned (and closed) by the router."""


class RoutedForwarder:
    """Forwards along a route's same-API providers: the next one is tried when one could not be reached, or answered
    429/5xx after its own retries, and nothing has gone to the caller yet."""

    def __init__(self, chain: Sequence[RawForwarding], upstream_model: str | None, api: ForwardedAPI) -> None:
        self.chain = list(chain)
        self.upstream_model = upstream_model
        self.api = api
        self.name = "+".join(forwarder.name for forwarder in self.chain)

    @contextlib.asynccontextmanager
    async def forward(self, request: RawRequest) -> AsyncIterator[RawReply]:
        """Forward ``request`` (see :class:`~tether.providers.raw_forward.RawForwarding`)."""
        if self.upstream_model is not None and request.body:
            request = dataclasses.replace(request, body=with_model(request.body, self.upstream_model))
        yielded = False
        for position, forwarder in enumerate(self.chain):
            last = position == len(self.chain) - 1
            try:
                async with forwarder.forward(request) as reply:
                    if last or not (reply.status == 429 or reply.status >= 500):
                        yielded = True
                        yield reply
                        return
                    reason = f"HTTP {reply.status}"
            except ProtocolError as error:
                if yielded or last:
                    raise
                reason = error.code
            _log.warning("provider.fallback", failed=forwarder.name, code=reason, next=self.chain[position + 1].name)


class ProviderRouter:
    """Chooses the provider for a model name: the first matching route, else the default provider.

    With ``default=None`` a model no route matches is ``400 model_not_found`` (once real upstreams are configured,
    a misspelt model must not get a scripted answer); a catch-all route (``model = "*"``) still takes everything.
    """

    def __init__(
        self, providers: Mapping[str, Provider], routes: Sequence[Route] = (), default: str | None = "scripted"
    ):
        if default is not None and default not in providers:
            raise ValueError(f"default provider {default!r} is not configured")
        for route in routes:
            for name in (route.provider, *route.fallbacks):
                if name not in providers:
                    raise ValueError(f"route {route.pattern!r} names unknown provider {name!r}")
        self.providers = dict(providers)
        self.routes = list(routes)
        self.default = default
        self._routed = {
            index: RoutedProvider([self.providers[n] for n in (r.provider, *r.fallbacks)], r.upstream_model)
            for index, r in enumerate(self.routes)
        }
        # Which providers check models, decided once: an isinstance against a runtime Protocol walks the
        # Protocol's attributes on every call (about 20 us on Python 3.11), and resolve runs every turn.
        self._checks = {name: _check_model(provider) for name, provider in self.providers.items()}
        self._request_checks = {name: _check_request(provider) for name, provider in self.providers.items()}
        self._steers = {
            name: isinstance(provider, SteeringRelay) and provider.relays_steering
            for name, provider in self.providers.items()
        }

    def resolve(self, model: str) -> Provider:
        """The provider for ``model``, checked to have it before the turn starts.

        Raises:
            ProtocolError: ``model_not_found`` when no route matches and there is no default provider, or the
                provider knows it has no such model (``script:NAME`` with no such script).
        """
        for index, route in enumerate(self.routes):
            if fnmatchcase(model, route.pattern):
                check = self._checks[route.provider]
                if check is not None:
                    check(route.upstream_model or model)
                return self._routed[index]
        if self.default is None:
            patterns = ", ".join(route.pattern for route in self.routes) or "none"
            raise model_not_found(model, f"no route matches it (routes: {patterns}); add a route for it")
        check = self._checks[self.default]
        if check is not None:
            check(model)
        return self.providers[self.default]

    def provider_name(self, model: str) -> str:
        """The name of the provider a model goes to, for logs and metrics (``none`` when it has none)."""
        for index, route in enumerate(self.routes):
            if fnmatchcase(model, route.pattern):
                return self._routed[index].name
        return self.default or "none"

    def check_request(self, model: str, request: ProviderRequest) -> None:
        """Refuse, before the turn starts, what the provider ``model`` goes to first would refuse once it had.

        Raises:
            ProtocolError: ``unsupported_value`` (or the like) for a parameter or new item that upstream cannot take.
        """
        for route in self.routes:
            if fnmatchcase(model, route.pattern):
                check = self._request_checks[route.provider]
                break
        else:
            check = None if self.default is None else self._request_checks[self.default]
        if check is not None:
            check(request)

    def relays_steering(self, model: str) -> bool:
        """Whether the provider ``model`` goes to first (a route's own, not its fallbacks) relays steering."""
        for route in self.routes:
            if fnmatchcase(model, route.pattern):
                return self._steers[route.provider]
        return self.default is not None and self._steers[self.default]

    def route_of(self, model: str) -> str:
        """The name of the route a model takes, for metrics: its pattern, or ``default``."""
        for route in self.routes:
            if fnmatchcase(model, route.pattern):
                return route.pattern
        return "default"

    def model_names(self) -> list[str]:
        """Model names worth listing: the route patterns without wildcards, and the default provider's name."""
        names = {route.pattern for route in self.routes if not any(ch in route.pattern for ch in "*?[")}
        if self.default is not None:
            names.add(self.default)
        return sorted(names)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
