"""Prometheus metrics: one registry per app, fed by the engine's observer, the traffic middleware and the store.

Labels never carry a tenant, a session, a connection or a response id: only bounded vocabularies (transport,
route pattern, provider name, outcome, resolution, store operation, and a cluster node's name).
"""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from tether.engine.observer import InterruptReason, LeaseRenewal, TurnObserver, TurnOrigin, turn_outcome
from tether.engine.turn import Turn
from tether.protocol.errors import ProtocolError
from tether.protocol.request import CreateRequest
from tether.protocol.stateless import sent_params, stateless_size

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
SAVED_BUCKETS = (0.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0)

# The definition behind tether_turn_bytes_saved, stated once where the metric is made (README repeats it).
BYTES_SAVED_HELP = (
    "Per turn: the size of the equivalent stateless request (the turn's whole input context with the parameters "
    "the client set, without previous_response_id, as compact JSON) minus the size of the request body or "
    "WebSocket message the client actually sent. Near zero for a chain's first turn (a string input counts as the "
    "message item it stands for; transport fields such as stream count against it)."
)


class Metrics(TurnObserver):
    """Every tether metric, registered on the app's own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        turn_labels = ("transport", "route", "provider", "outcome")
        self.turns = Counter(
            "tether_turns", "Turns by transport, route, provider and outcome.", turn_labels, registry=r
        )
        self.turn_seconds = Histogram(
            "tether_turn_duration_seconds",
            "From the request's arrival at the engine to the turn's last event.",
            ("transport", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "tether_time_to_first_token_seconds",
            "From the request's arrival at the engine to the first output delta.",
            ("transport", "provider"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "tether_upstream_duration_seconds",
            "From the provider call to the model's finish.",
            ("provider",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_received = Counter(
            "tether_bytes_received", "Bytes of request bodies and WebSocket messages from clients.", ("transport",),
            registry=r,
        )  # fmt: skip
        self.bytes_sent = Counter(
            "tether_bytes_sent", "Bytes of response bodies and WebSocket messages to clients.", ("transport",),
            registry=r,
        )  # fmt: skip
        self.turn_request_bytes = Counter(
            "tether_turn_request_bytes", "Bytes of the turn requests clients actually sent.", ("transport",), registry=r
        )
        self.turn_stateless_bytes = Counter(
            "tether_turn_stateless_request_bytes",
            "Bytes of the equivalent stateless requests of those turns (see tether_turn_bytes_saved).",
            ("transport",),
            registry=r,
        )
        self.bytes_saved = Histogram(
            "tether_turn_bytes_saved", BYTES_SAVED_HELP, ("transport",), buckets=SAVED_BUCKETS, registry=r
        )
        self.continuations = Counter(
            "tether_continuations",
            "Where each turn's previous_response_id resolved: lane, hot_cache, store; new_chain without one.",
            ("resolution",),
            registry=r,
        )
        self.resumes = Counter("tether_resumes", "Clients re-attached to a response's stream.", registry=r)
        self.idempotent_replays = Counter(
            "tether_idempotent_replays", "Retried turns answered from the log, by source.", ("source",), registry=r
        )
        self.connections = Gauge("tether_websocket_connections", "Open WebSocket connections.", registry=r)
        self.lanes = Gauge("tether_lanes_active", "WebSocket lanes with a turn in flight.", registry=r)
        self.in_flight = Gauge("tether_turns_in_flight", "Turns generating now.", ("transport",), registry=r)
        self.gc_objects = Gauge(
            "tether_gc_tracked_objects",
            "Objects the garbage collector tracks (counted when scraped): the state the process holds.",
            registry=r,
        )
        self.gc_objects.set_function(lambda: len(gc.get_objects()))
        self.interrupted = Counter(
            "tether_generations_interrupted",
            "Generations ended as generation_interrupted, by the node that ran them and why (lease_expired, drain, "
            "store_unreachable, cancelled). Counted once across the cluster, by the node that ended it in the store.",
            ("node", "reason"),
            registry=r,
        )
        self.claims_taken_over = Counter(
            "tether_claims_taken_over",
            "Turns of a node whose lease lapsed (dead, paused or cut off) that this node, following them, ended as "
            "interrupted and whose idempotency key it released for the retry; by the node that held the claim.",
            ("node",),
            registry=r,
        )
        self.lease_renewals_failed = Counter(
            "tether_lease_renewals_failed",
            "Heartbeats of this node's leases that failed: refused (the lease was fenced off) or error (the store "
            "did not answer).",
            ("outcome",),
            registry=r,
        )
        self.store_seconds = Histogram(
            "tether_store_operation_duration_seconds",
            "Durable store operations, by operation.",
            ("operation",),
            buckets=STORE_BUCKETS,
            registry=r,
        )

    # -- the engine's observer -----------------------------------------------------------------------------

    def turn_started(self, turn: Turn) -> None:
        plan = turn.plan
        self.continuations.labels(plan.resolution.value).inc()
        self.in_flight.labels(plan.origin.transport).inc()
        if plan.lane_key is not None:
            self.lanes.inc()

    def turn_finished(self, turn: Turn) -> None:
        plan, timings = turn.plan, turn.timings
        transport, provider, outcome = plan.origin.transport, turn.provider.name, turn_outcome(turn)
        self.in_flight.labels(transport).dec()
        if plan.lane_key is not None:
            self.lanes.dec()
        self.turns.labels(transport, plan.route, provider, outcome).inc()
        if timings.ended is not None:
            self.turn_seconds.labels(transport, outcome).observe(timings.ended - timings.opened)
        if timings.first_token is not None:
            self.ttft_seconds.labels(transport, provider).observe(timings.first_token - timings.opened)
        if timings.upstream_started is not None and timings.upstream_done is not None:
            self.upstream_seconds.labels(provider).observe(timings.upstream_done - timings.upstream_started)
        if plan.origin.request_bytes:
            params = sent_params(plan.request, plan.params)
            stateless = stateless_size(params, len(plan.sampled), plan.sampled.json_bytes)
            self.turn_request_bytes.labels(transport).inc(plan.origin.request_bytes)
            self.turn_stateless_bytes.labels(transport).inc(stateless)
            self.bytes_saved.labels(transport).observe(stateless - plan.origin.request_bytes)

    def turn_rejected(
        self, request: CreateRequest, origin: TurnOrigin, error: ProtocolError, *, route: str, provider: str
    ) -> None:
        self.turns.labels(origin.transport, route, provider, "rejected").inc()

    def idempotent_replay(self, source: str) -> None:
        self.idempotent_replays.labels(source).inc()

    def resumed(self, response_id: str) -> None:
        self.resumes.inc()

    def generation_interrupted(self, node: str, reason: InterruptReason, *, taken_over: bool) -> None:
        self.interrupted.labels(node, reason.value).inc()
        if taken_over:
            self.claims_taken_over.labels(node).inc()

    def lease_renewal_failed(self, outcome: LeaseRenewal) -> None:
        self.lease_renewals_failed.labels(outcome.value).inc()

    # -- exposition ----------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
