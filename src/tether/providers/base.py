"""The ``Provider`` interface: one upstream model behind tether.

A provider gets the whole context a turn samples from (a read-only view: materialising it is the provider's choice,
so a stateful upstream can send only ``new_items``) and yields provider-neutral model events
(:mod:`tether.protocol.model_events`), ending with exactly one :class:`~tether.protocol.model_events.Finish`.
Failures are raised as :class:`~tether.protocol.errors.ProtocolError` (e.g. ``upstream_error``, 502).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tether.protocol.model_events import ModelEvent
from tether.protocol.steer import Steer, SteerErrorCode
from tether.types import Item, JSONObject


class Continuation(Protocol):
    """An upstream response that follows the one a turn just finished, on the same upstream connection: the successor
    a steer started. The provider that made it reads it as the stream of the successor turn
    (:attr:`ProviderRequest.continues`)."""

    def abandon(self) -> None:
        """Give up the upstream connection it is on (no turn will read it); a no-op once a provider took it."""


class SteeringPort(Protocol):
    """What a provider sees of the client's steering of the turn it runs (turns on a client WebSocket lane only).

    Each steer the provider takes gets its answers through these calls: ``accepted`` (at most once), then one of
    ``failed``, ``pending`` or, for every accepted steer at once, ``succeeded_by``. Anything left unanswered when the
    turn ends is answered ``response.steer.failed`` by the engine.
    """

    def take(self) -> Steer | None:
        """The client's next steer not taken yet (in the order sent), or ``None``: nothing waits."""

    def notify(self, wake: Callable[[], None] | None) -> None:
        """Call ``wake`` whenever the client submits a steer (``None``: no longer), and at once if steers wait
        already, so the provider takes them then: nothing waits for steers that may never come."""

    def accepted(self, steer: Steer) -> None:
        """The upstream owns the steer's input now."""

    def failed(self, steer: Steer, code: SteerErrorCode, message: str) -> None:
        """The upstream refused the steer, or could not commit it."""

    def pending(self, steer: Steer, reason: str, required_input: list[JSONObject]) -> None:
        """The response stopped for client tool output; the steer's input waits for the continuation that brings it."""

    def upstream_ended(self) -> None:
        """The upstream's response has ended: later answers follow the turn's terminal event."""

    def succeeded_by(self, continuation: Continuation) -> None:
        """The upstream started a successor that commits every accepted steer not answered otherwise."""


@runtime_checkable
class SteeringRelay(Protocol):
    """A provider that can relay ``response.steer`` to its upstream (``relays_steering``), through
    :attr:`ProviderRequest.steering`."""

    relays_steering: bool


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """What a provider needs to run one turn.

    Attributes:
        model: the model name the client asked for.
        context: the whole sampled context (parent context, parent output, new input), oldest first.
        new_items: the items this turn added (the tail of ``context``).
        context_tokens: estimated tokens of ``context``.
        cached_tokens: estimated tokens of the prefix the gateway already held (everything but ``new_items``).
        previous_response_id: tether's id of the parent response, for stateful upstreams.
        response_id: tether's id of the response being generated.
        lane_key: identifies the client connection and lane the turn runs on (``None`` over HTTP), so a stateful
            upstream can keep one upstream session per active lane.
        params: every other request parameter as the client sent it (tools, tool_choice, reasoning, ...).
        trace_headers: the W3C trace context (``traceparent``, ``tracestate``) to send with the upstream request.
        credentials: the agent's own credential headers (``authorization``, ``x-api-key``; names in lower case)
            when an edge relayed the turn: a provider with no key configured sends them upstream, one with a key
            ignores them. Never shown in ``repr``, never logged, never stored.
        steering: the client's steering of this turn (WebSocket lanes, providers that relay steering only).
        continues: this turn is the successor the previous turn's steering started upstream: read it from there
            instead of sending a request.
        queued_upstream: how many of ``new_items`` (the first ones) are steering input the upstream already holds
            for the parent, waiting for this continuation (``response.steer.pending``): sent as a delta on the same
            upstream connection, they are not sent again.
    """

    model: str
    instructions: str | None
    context: Sequence[Item]
    new_items: Sequence[Item]
    tools: list[JSONObject]
    tool_choice: str | JSONObject
    context_tokens: int
    cached_tokens: int
    previous_response_id: str | None
    response_id: str
    params: JSONObject = field(default_factory=dict)
    lane_key: str | None = None
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    steering: SteeringPort | None = None
    continues: Continuation | None = None
    queued_upstream: int = 0


class Provider(Protocol):
    """An upstream model."""

    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[ModelEvent]:
        """Run one turn, yielding model events and ending with one ``Finish``."""

    async def aclose(self) -> None:
        """Release connections."""


class ProviderResolver(Protocol):
    """What the engine needs to reach the models: the provider serving a model name (the router implements it)."""

    def resolve(self, model: str) -> Provider:
        """The provider for ``model`` (a default one when nothing else matches, if there is one).

        Raises:
            ProtocolError: ``model_not_found`` when nothing serves ``model``.
        """

    def provider_name(self, model: str) -> str:
        """The name of the provider ``model`` goes to, without raising (for logs and metric labels)."""

    def route_of(self, model: str) -> str:
        """The name of the route ``model`` takes (for metric labels: bounded by the configuration)."""

    def relays_steering(self, model: str) -> bool:
        """Whether the provider ``model`` goes to relays ``response.steer`` to its upstream."""

    def check_request(self, model: str, request: ProviderRequest) -> None:
        """Refuse what the provider ``model`` goes to cannot be sent (its parameters and ``new_items``).

        Raises:
            ProtocolError: ``unsupported_value`` and the like, before the turn starts.
        """

    def model_names(self) -> list[str]:
        """Model names worth listing to clients."""

    async def aclose(self) -> None:
        """Release every provider's connections."""
