"""The transport-neutral engine: starts turns, lets transports follow and resume them, answers reads.

Each rule lives in a module named for it: :mod:`~tether.engine.continuation` (``previous_response_id``, eviction,
call ids), :mod:`~tether.engine.idempotency`, :mod:`~tether.engine.resume`, :mod:`~tether.engine.reads`; one turn
runs in :mod:`~tether.engine.turn` and writes its :mod:`~tether.engine.stream_log`. This class ties them together.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import structlog

from tether.engine import background, idempotency, resume
from tether.engine.cache import CachedResponse, ConnectionState, HotCache
from tether.engine.context import Context
from tether.engine.continuation import Continuations
from tether.engine.live import LiveRegistry, LiveResponse
from tether.engine.observer import Resolution, TurnObserver, TurnOrigin, TurnTimings
from tether.engine.reads import Reads
from tether.engine.shared_turns import LeaseLostError, SharedTurns, SharingPolicy
from tether.engine.steering import SteeringInbox
from tether.engine.turn import Turn, TurnPlan
from tether.protocol import ids
from tether.protocol.errors import ProtocolError, invalid
from tether.protocol.events import ResponseObject, StreamEvent
from tether.protocol.items import fingerprints, input_item_id
from tether.protocol.lanes import Lane
from tether.protocol.request import CreateRequest
from tether.protocol.response import response_object
from tether.protocol.stream import ResponseStream
from tether.protocol.vocabulary import IDEMPOTENCY_KEY, RESUME_TOKEN
from tether.providers.base import Continuation, Provider, ProviderRequest, ProviderResolver
from tether.store.base import ResponseRecord, Store
from tether.store.turns import Lease
from tether.types import Item, JSONObject

_log = structlog.get_logger("tether.engine")


@dataclass(slots=True)
class EngineStats:
    """Counters for metrics and tests: generations actually run, and turns answered without generating.

    (The cluster's interrupted turns are counted by :class:`~tether.engine.shared_turns.SharedTurns`: ``given_up``
    and ``interrupted_for_dead_nodes``.)
    """

    generations: int = 0
    idempotent_replays: int = 0
    resumes: int = 0


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Engine policy.

    Attributes:
        resume_grace_s: how long a finished response stays attachable from memory (``store=false`` responses can
            only be resumed, with their resume token, within this window).
        continue_on_disconnect: keep generating when every client following a response has gone.
        shutdown_grace_s: on shutdown, how long in-flight generations may take to finish.
        lease_s: how long a ``store=true`` turn's lease outlives its node's last heartbeat (the cluster).
        coherent_reads: check with the store that a cached parent was not deleted by another node (the cluster).
    """

    response_ttl_s: float | None = 30 * 24 * 3600.0
    snapshot_every: int = 32
    hot_cache_size: int = 10_000
    hot_cache_bytes: int | None = 512 * 1024 * 1024
    resume_grace_s: float = 120.0
    continue_on_disconnect: bool = True
    shutdown_grace_s: float = 30.0
    lease_s: float = 10.0
    coherent_reads: bool = False


class Engine:
    """Runs turns for every transport.

    Args:
        store: the durable store (``store=true`` responses).
        router: chooses the provider of each model.
        limits: TTL, snapshot interval and hot-cache size.
        clock: unix time, injectable for tests.
        observer: told of every turn's milestones (metrics, logs, traces, audit); does nothing by default.
    """

    def __init__(
        self,
        store: Store,
        router: ProviderResolver,
        limits: EngineLimits | None = None,
        clock: Callable[[], float] = time.time,
        observer: TurnObserver | None = None,
        node: str | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.limits = limits or EngineLimits()
        self.clock = clock
        self.hot = HotCache(self.limits.hot_cache_size, self.limits.hot_cache_bytes)
        self.live = LiveRegistry(self.limits.resume_grace_s)
        self.stats = EngineStats()
        self.observer = observer or TurnObserver()
        self._connections: weakref.WeakSet[ConnectionState] = weakref.WeakSet()
        self.continuations = Continuations(store, self.hot, coherent=self.limits.coherent_reads)
        lease_s = self.limits.lease_s
        policy = SharingPolicy(node or ids.new_id("node"), lease_s, min(1.0, lease_s / 4))
        self.shared = SharedTurns(store, self.live, policy, self.observer)
        self.reads = Reads(store, self.hot, self._connections, self.continuations, clock, self.shared)

    def connect(self, tenant: str) -> ConnectionState:
        """The state of a new client connection (its lanes' latest responses)."""
        connection = ConnectionState(tenant)
        self._connections.add(connection)
        return connection

    # -- turns ---------------------------------------------------------------------------------------------

    async def create(
        self,
        request: CreateRequest,
        *,
        tenant: str,
        connection: ConnectionState | None = None,
        lane: Lane = None,
        origin: TurnOrigin | None = None,
    ) -> LiveResponse:
        """Start a turn, or find the one this idempotency key already started, and return it to follow.

        Raises:
            ProtocolError: as :meth:`open_turn`.
        """
        live, _ = await self.start(request, tenant=tenant, connection=connection, lane=lane, origin=origin)
        return live

    async def start(
        self,
        request: CreateRequest,
        *,
        tenant: str,
        connection: ConnectionState | None = None,
        lane: Lane = None,
        origin: TurnOrigin | None = None,
    ) -> tuple[LiveResponse, bool]:
        """:meth:`create`, also saying whether this call started the turn (``False``: an idempotent replay, which
        answers with the key's response alone, never the successors its steering started).

        Raises:
            ProtocolError: as :meth:`open_turn`.
        """
        key = request.idempotency_key
        if key is not None:
            existing = await self._by_idempotency_key(tenant, key)
            if existing is not None:
                return existing, False
        turn = await self.open_turn(request, tenant=tenant, connection=connection, lane=lane, origin=origin)
        if key is not None:  # another request with the key may have started while this one was resolving
            raced = self.live.by_idempotency_key(tenant, key)
            if raced is not None:
                self.stats.idempotent_replays += 1
                self.observer.idempotent_replay("live")
                return raced, False
        if not request.store:  # store=false never reaches the shared store
            return self.launch(turn), True
        claim = await self.shared.claim(tenant, turn.response_id, key)
        if claim.lease is not None:
            return self.launch(turn, claim.lease), True
        assert claim.holder is not None  # another node runs (or ran) this key's turn: follow it there
        self.stats.idempotent_replays += 1
        self.observer.idempotent_replay("store")
        _log.info("turn.idempotent_replay", response_id=claim.holder, source="cluster")
        try:
            return await self._follow_holder(tenant, claim.holder), False
        except ProtocolError as missing:  # the key's response was deleted (or has expired): the key is spent
            if missing.code != "response_not_found" or key is None:
                raise
            raise invalid(
                "invalid_value",
                f"The idempotency key {key!r} belongs to a response that no longer exists (it was deleted or has "
                "expired): send this turn with a new key.",
                IDEMPOTENCY_KEY,
            ) from None

    async def _follow_holder(self, tenant: str, holder: str) -> LiveResponse:
        followed = await self.shared.follow(tenant, holder)
        if followed is not None:
            return followed
        return await resume.find_resumable(self.live, self.store, tenant, holder, None)

    async def _by_idempotency_key(self, tenant: str, key: str) -> LiveResponse | None:
        existing = await idempotency.find_turn(self.live, self.store, tenant, key)
        if existing is not None:
            self.stats.idempotent_replays += 1
            self.observer.idempotent_replay("live" if existing.task is not None else "store")
        return existing

    def launch(self, turn: Turn, lease: Lease | None = None) -> LiveResponse:
        """Run a turn as an engine-owned task: it goes on whether or not anyone follows it.

        With a ``lease`` (a claimed ``store=true`` turn) its events reach clients through the shared log.
        """
        plan = turn.plan
        live = LiveResponse(
            plan.response_id,
            plan.tenant,
            plan.request.store,
            turn.log,
            resume_token=turn.resume_token,
            idempotency_key=plan.request.idempotency_key,
            background=plan.request.background,
            cancel=turn.request_cancel,
            steering=plan.steering,
            successor=asyncio.get_running_loop().create_future() if plan.steering is not None else None,
        )
        publisher = None
        if lease is not None:
            cancel = turn.request_cancel if plan.request.background else None
            publisher = self.shared.publish(lease, turn.log, lambda: self.live.release_key(live), cancel)
            live.log = publisher.visible
        self.live.add(live)
        self.stats.generations += 1
        live.task = asyncio.create_task(self._generate(turn, live), name=f"turn-{plan.response_id}")
        if publisher is not None:
            publisher.generation = live.task
        return live

    async def _generate(self, turn: Turn, live: LiveResponse) -> None:
        successor: LiveResponse | None = None
        try:
            await turn.run()
            successor = await self._succeed(turn)
        except LeaseLostError:
            _log.warning("turn.fenced_off", response_id=turn.response_id)
        finally:
            if turn.commit_failed:
                self.live.release_key(live)  # nothing was kept: a retry with the key generates again
            if turn.plan.continues is not None:
                turn.plan.continues.abandon()  # a successor that never reached its provider (a no-op if it did)
            if turn.plan.steering is not None:
                turn.plan.steering.close()
            if live.successor is not None and not live.successor.done():
                live.successor.set_result(successor)
            self.live.finished(live)

    async def follow(self, live: LiveResponse, after: int = -1) -> AsyncIterator[StreamEvent]:
        """Yield a response's events after ``after``; the last follower leaving may cancel the generation.

        Raises:
            ProtocolError: ``nothing_to_resume`` when the response ends without an event after ``after >= 0``.
        """
        live.followers += 1
        followed = False
        try:
            async for event in live.log.follow(after):
                followed = True
                yield event
        finally:
            live.followers -= 1
            self._left(live)
        if not followed and after >= 0:
            resume.check_after(live, after)

    def forgo_successor(self, live: LiveResponse) -> None:
        """The caller that was to follow ``live``'s successor (the client of the turn that started it) has gone
        before following it: the successor, once there, is left as any response whose last follower has gone
        (cancelled, unless ``continue_on_disconnect``)."""
        if live.successor is None or self.limits.continue_on_disconnect:
            return

        def left(future: asyncio.Future[LiveResponse | None]) -> None:
            successor = None if future.cancelled() else future.result()
            if successor is not None:
                self._left(successor)

        live.successor.add_done_callback(left)

    def _left(self, live: LiveResponse) -> None:
        """A follower has gone: a response nobody follows any more stops, unless ``continue_on_disconnect``."""
        orphaned = not live.done and live.followers == 0 and not live.background
        if orphaned and not self.limits.continue_on_disconnect and live.task:
            live.task.cancel()

    async def attach(
        self, tenant: str, response_id: str, *, after: int | None, resume_token: str | None = None
    ) -> LiveResponse:
        """Find a response to resume after sequence number ``after`` (see :mod:`tether.engine.resume`).

        Raises:
            ProtocolError: ``response_not_found`` for unknown, expired, another tenant's, or token-less ids;
                ``nothing_to_resume`` when the response has already ended at or before ``after``.
        """
        live = self.live.get(response_id)
        if live is None or not live.allows(tenant, resume_token):
            live = await self.shared.follow(tenant, response_id)  # another node's turn, live or kept
        if live is None:
            live = await resume.find_resumable(self.live, self.store, tenant, response_id, resume_token)
        resume.check_after(live, -1 if after is None else after)
        self.stats.resumes += 1
        self.observer.resumed(live.response_id)
        return live

    async def open_turn(
        self,
        request: CreateRequest,
        *,
        tenant: str,
        connection: ConnectionState | None = None,
        lane: Lane = None,
        origin: TurnOrigin | None = None,
    ) -> Turn:
        """Resolve and validate a request; the returned turn is ready to stream.

        Raises:
            ProtocolError: ``previous_response_not_found``, an orphan ``function_call_output`` and the like. A
                failed continuation evicts the id it referenced from the lane's cache.
        """
        origin, timings = origin or TurnOrigin(), TurnTimings()
        try:
            resolved = await self.continuations.resolve(request, tenant, connection, lane)
        except ProtocolError as error:
            route, provider_name = self.router.route_of(request.model), self.router.provider_name(request.model)
            self.observer.turn_rejected(request, origin, error, route=route, provider=provider_name)
            raise
        request = resolved.request
        try:
            provider = self.router.resolve(request.model)
        except ProtocolError as error:  # model_not_found: a failed continuation like any other
            self.continuations.evict(request, connection, lane)
            self.observer.turn_rejected(request, origin, error, route="none", provider="none")
            raise
        if request.generate:
            try:  # what the upstream's translation refuses is the client's 400 on every transport, not a failed turn
                self.router.check_request(request.model, _new_part(request, resolved.sampled.items))
            except ProtocolError as error:
                self.continuations.evict(request, connection, lane)
                route, provider_name = self.router.route_of(request.model), self.router.provider_name(request.model)
                self.observer.turn_rejected(request, origin, error, route=route, provider=provider_name)
                raise
        response_id = ids.response_id()
        steers = connection is not None and request.generate and self.router.relays_steering(request.model)
        plan = TurnPlan(
            request=request,
            tenant=tenant,
            lane=lane,
            response_id=response_id,
            parent=resolved.parent,
            sampled=resolved.sampled,
            new_prints=resolved.new_prints,
            input_ids=[input_item_id(item) for item in request.input],
            created_at=int(self.clock()),
            params=request.forwarded_params(),
            lane_key=f"{connection.id}/{lane or ''}" if connection is not None else None,
            origin=origin,
            resolution=resolved.resolution,
            route=self.router.route_of(request.model),
            steering=SteeringInbox(response_id, lane, connection) if steers else None,
            queued_upstream=resolved.queued_upstream,
        )
        return self._turn(plan, provider, connection, timings)

    def _turn(
        self, plan: TurnPlan, provider: Provider, connection: ConnectionState | None, timings: TurnTimings
    ) -> Turn:
        request = plan.request
        response = response_object(
            response_id=plan.response_id,
            created_at=plan.created_at,
            status="queued" if request.background else "in_progress",
            model=request.model,
            params=plan.params,
            output=[],
            previous_response_id=request.previous_response_id,
            store=request.store,
        )
        resume_token = secrets.token_urlsafe(24)
        response[RESUME_TOKEN] = resume_token
        stream = ResponseStream(response, stream_id=plan.lane)

        async def commit(turn: Turn, whole: Context | None) -> None:
            await self._commit(turn, whole, connection)

        timings.resolved = time.perf_counter()
        return Turn(plan, provider, stream, commit, resume_token, observer=self.observer, timings=timings)

    # -- successors: the turns steering starts upstream (see tether.engine.steering) ----------------------

    async def _succeed(self, turn: Turn) -> LiveResponse | None:
        """Run the successor the turn's steering started upstream, as a turn of its own (its parent: this turn)."""
        steering = turn.plan.steering
        if steering is None or steering.successor is None:
            return None
        parent = turn.kept
        if parent is None:  # failed, cancelled or not kept: nothing to continue from
            steering.successor_failed(f"Response '{turn.response_id}' was not kept, so it cannot be continued.")
            return None
        if self.shared.draining:
            steering.successor_failed("The server is shutting down; continue the steered response on a new connection.")
            return None
        continuation, steers = steering.successor
        items = [item for steer in steers for item in steer.items]
        try:
            successor = self._successor_turn(turn, parent, continuation, items)
            lease = None
            if successor.plan.request.store:
                lease = (await self.shared.claim(successor.plan.tenant, successor.response_id, None)).lease
            live = self.launch(successor, lease)
        except Exception as error:  # the store refused the claim: the upstream's successor is given up
            _log.error("turn.successor_failed", response_id=turn.response_id, error=repr(error))
            steering.successor_failed("The successor response could not be created.")
            return None
        steering.successor = None  # committed: the successor turn owns the upstream response now
        _log.info("turn.successor", response_id=live.response_id, parent=turn.response_id, steered_items=len(items))
        return live

    def _successor_turn(
        self, turn: Turn, parent: CachedResponse, continuation: Continuation, items: list[Item]
    ) -> Turn:
        plan = turn.plan
        request = plan.request.model_copy(
            update={
                "input": items,
                "previous_response_id": plan.response_id,
                "idempotency_key": None,
                "inherit_params": False,
            }
        )
        prints = fingerprints(items)
        response_id = ids.response_id()
        connection = plan.steering.connection if plan.steering is not None else None
        successor = TurnPlan(
            request=request,
            tenant=plan.tenant,
            lane=plan.lane,
            response_id=response_id,
            parent=parent,
            sampled=parent.context.extend(items, prints),
            new_prints=prints,
            input_ids=[input_item_id(item) for item in items],
            created_at=int(self.clock()),
            params=request.forwarded_params(),
            lane_key=plan.lane_key,
            origin=plan.origin,
            resolution=Resolution.LANE,
            route=plan.route,
            steering=SteeringInbox(response_id, plan.lane, connection),
            continues=continuation,
        )
        return self._turn(successor, turn.provider, connection, TurnTimings())

    async def _commit(self, turn: Turn, whole: Context | None, connection: ConnectionState | None) -> None:
        plan = turn.plan
        request = plan.request
        if turn.failed is not None:
            self.continuations.evict(request, connection, plan.lane)
        depth = plan.depth
        if request.store:
            snapshot = whole.hashes() if whole is not None and depth % self.limits.snapshot_every == 0 else None
            ttl = self.limits.response_ttl_s
            record = turn.record(self.clock() + ttl if ttl else None, snapshot)
            publisher = self.shared.publishers.get(plan.response_id)
            if publisher is None:
                await self.store.put(record)
            else:  # fenced: the record and the terminal events land together, only while the lease holds
                await publisher.finish(record, turn.pending)
        if whole is not None:  # continuable only once committed (a fenced-off turn never is)
            entry = CachedResponse(plan.response_id, whole, depth, request.store, plan.params)
            self.continuations.remember(plan.tenant, connection, plan.lane, entry)
            turn.kept = entry

    # -- background mode (see tether.engine.background) -----------------------------------------------------

    async def started(self, live: LiveResponse) -> ResponseObject:
        """The response as a ``background: true`` create answers it, at once (``queued``)."""
        return await background.started(live)

    async def cancel(self, tenant: str, response_id: str) -> ResponseObject:
        """Cancel a background response (``POST /v1/responses/{id}/cancel``).

        Raises:
            ProtocolError: as :func:`tether.engine.background.cancel`.
        """
        return await background.cancel(self.live, self.shared, self.reads, tenant, response_id)

    # -- reads (see tether.engine.reads) -------------------------------------------------------------------

    async def get_record(self, tenant: str, response_id: str) -> ResponseRecord:
        return await self.reads.record(tenant, response_id)

    async def get_response(self, tenant: str, response_id: str) -> ResponseObject:
        return await self.reads.response(tenant, response_id)

    async def delete_response(self, tenant: str, response_id: str) -> JSONObject:
        return await self.reads.delete(tenant, response_id)

    async def list_input_items(
        self, tenant: str, response_id: str, *, after: str | None, limit: int, order: str
    ) -> JSONObject:
        """The response's input items, paged as ``GET /v1/responses/{id}/input_items``."""
        return await self.reads.input_items(tenant, response_id, after=after, limit=limit, order=order)

    async def resolve_context(self, request: CreateRequest, tenant: str) -> Context:
        """The context a request would sample from (no lane: HTTP semantics)."""
        return await self.continuations.context(request, tenant)

    async def count_input_tokens(self, request: CreateRequest, *, tenant: str) -> int:
        return await self.reads.input_tokens(request, tenant)

    async def compact(self, request: CreateRequest, *, tenant: str) -> JSONObject:
        """Answer ``POST /v1/responses/compact``: the compacted window of a context."""
        return await self.reads.compact(request, tenant)

    async def aclose(self) -> None:
        """Let in-flight generations finish (up to the shutdown grace), then close providers and the store."""
        self.shared.draining = True
        deadline = asyncio.get_running_loop().time() + self.limits.shutdown_grace_s
        # Looked at again once those end: a steered turn that was claiming its successor when draining began
        # launches it then, a generation in flight like any other.
        while tasks := self._in_flight():
            _log.info("engine.draining", in_flight=len(tasks))
            timeout = max(deadline - asyncio.get_running_loop().time(), 0.0)
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # Cut-off turns are given up as interrupted (their keys released), so clients retry them on another node.
        await self.shared.aclose()
        await self.router.aclose()
        await self.store.close()
        self.live.close()

    def _in_flight(self) -> list[asyncio.Task[None]]:
        """The tasks of this node's generations still running (a mirror of another node's turn is not one)."""
        tasks = [live.task for live in self.live.running() if live.task is not None and not live.task.done()]
        return [task for task in tasks if not task.get_name().startswith("mirror-")]


def _new_part(request: CreateRequest, context: Sequence[Item]) -> ProviderRequest:
    """The request as a provider would get it, with only its new items as context: what a translation checks of a
    turn (its parameters, tools and each item) is all in it, and checking it costs O(new items), not O(context)."""
    new_items = context[len(context) - len(request.input) :] if request.input else []
    return ProviderRequest(
        model=request.model,
        instructions=request.instructions,
        context=new_items,
        new_items=new_items,
        tools=request.tools,
        tool_choice=request.tool_choice,
        context_tokens=0,
        cached_tokens=0,
        previous_response_id=request.previous_response_id,
        response_id="",
        params=request.forwarded_params(),
    )
