"""The Starlette application factory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import structlog
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from tether.engine.engine import Engine, EngineLimits
from tether.protocol import edge_wire
from tether.protocol.errors import ProtocolError, server_error
from tether.providers import router as routing
from tether.providers.factory import build_router
from tether.providers.scripted import ScriptedProvider, ScriptedTiming, load_scripts
from tether.server import http
from tether.server.audit import Auditor
from tether.server.auth import Authenticator
from tether.server.edge_content import EdgeContent
from tether.server.edge_link import EdgeGateway, edge_http, edge_websocket
from tether.server.edge_turns import EdgeTurns
from tether.server.inspect_page import inspect_endpoint
from tether.server.metrics import Metrics, metrics_endpoint
from tether.server.observers import build_observers
from tether.server.request_framing import RefuseAmbiguousLength
from tether.server.state import ServerState
from tether.server.timed_store import TimedStore
from tether.server.traffic import TrafficMiddleware
from tether.server.unread_body import CloseAfterUnreadBody
from tether.server.websocket import websocket_endpoint, websocket_route_not_found
from tether.settings import Settings
from tether.store.base import Store, StoreDamagedError
from tether.store.memory import MemoryStore
from tether.store.sqlite import SQLiteStore
from tether.store.urls import is_cluster_url, open_cluster_store

_log = structlog.get_logger("tether.server")


async def open_store(url: str) -> Store:
    """Open the store a URL names: ``sqlite:///PATH``, ``memory://``, ``postgresql://…`` or ``redis://…``."""
    if is_cluster_url(url):
        return await open_cluster_store(url)
    if url.startswith("sqlite:///"):
        return await SQLiteStore.open(url.removeprefix("sqlite:///"))
    if url == "memory://" or url == "memory":
        return MemoryStore()
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH, memory://, postgresql://… or redis://…")


def provider_router(settings: Settings) -> routing.ProviderRouter:
    """The providers and routes ``settings`` configure, built from their plain values."""
    scripted = settings.scripted
    scripts = load_scripts(scripted.scripts_file) if scripted.scripts_file else {}
    return build_router(
        settings.providers,
        [routing.Route(r.model, r.provider, r.upstream_model, tuple(r.fallbacks)) for r in settings.routes],
        scripted=ScriptedProvider(ScriptedTiming(scripted.ttft_s, scripted.tokens_per_second), scripts),
        default=unrouted_provider(settings),
    )


def unrouted_provider(settings: Settings) -> str | None:
    """Where a model no route matches goes: with no upstreams configured (the quick start), the scripted model;
    once real upstreams are configured, nowhere (``400 model_not_found``) unless ``default_provider`` is set."""
    upstreams = any(config.kind != "scripted" for config in settings.providers.values())
    if upstreams and "default_provider" not in settings.model_fields_set:
        return None
    return settings.default_provider


def create_app(
    settings: Settings,
    *,
    tracer_provider: TracerProvider | None = None,
    store_layer: Callable[[Store], Store] | None = None,
) -> Starlette:
    """Build the gateway. Nothing is opened until the app's lifespan starts.

    Args:
        tracer_provider: where turn spans go, instead of the provider the ``OTEL_*`` variables configure.
        store_layer: wraps the store ``settings.store_url`` opens, before the engine sees it (a test double that
            refuses writes, as a damaged or full disk does).
    """
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await open_store(settings.store_url)
        if store_layer is not None:
            store = store_layer(store)
        limits = EngineLimits(
            response_ttl_s=settings.response_ttl_s,
            snapshot_every=settings.snapshot_every,
            hot_cache_size=settings.hot_cache_size,
            hot_cache_bytes=settings.hot_cache_bytes,
            resume_grace_s=settings.resume_grace_s,
            continue_on_disconnect=settings.continue_on_disconnect,
            shutdown_grace_s=settings.shutdown_grace_s,
            lease_s=settings.lease_s,
            coherent_reads=is_cluster_url(settings.store_url),
        )
        observers = build_observers(settings, metrics, tracer_provider)
        timed = TimedStore(store, metrics.store_seconds)
        engine = Engine(timed, provider_router(settings), limits, observer=observers.engine, node=settings.node_name)
        auth = Authenticator(settings.api_keys)
        if observers.audit is not None:
            observers.audit.started(auth.key_ids())
        state = ServerState(
            settings=settings, engine=engine, auth=auth, audit=observers.audit, inspector=observers.inspector
        )
        app.state.tether = state
        edge_turns = EdgeTurns(settings.edge.turn_grace_s)
        app.state.tether_edge = EdgeGateway(
            engine,
            auth,
            EdgeContent(settings.edge.content_max_bytes, timed, settings.edge.content_ttl_s),
            edge_turns,
            settings.max_body_bytes,
            max_json_values=settings.max_json_values,
            value_counter=state.value_counter,
            off_loop=state.off_loop,
        )
        purger = asyncio.create_task(_purge_periodically(store, settings.purge_interval_s, observers.audit))
        _log.info("server.ready", store=settings.store_url.split(":", 1)[0], auth=bool(settings.api_keys))
        try:
            yield
        finally:
            purger.cancel()
            await asyncio.gather(purger, return_exceptions=True)
            await edge_turns.aclose()
            await engine.aclose()
            state.off_loop.close()
            await state.value_counter.aclose()
            observers.close()

    routes = [
        Route("/v1/responses", http.create_response, methods=["POST"]),
        Route("/v1/responses", http.websocket_upgrade_required, methods=["GET"]),
        WebSocketRoute("/v1/responses", websocket_endpoint),
        Route("/v1/responses/compact", http.compact, methods=["POST"]),
        Route("/v1/responses/input_tokens", http.input_tokens, methods=["POST"]),
        Route("/v1/responses/{response_id}", http.get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", http.delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", http.list_input_items, methods=["GET"]),
        Route("/v1/responses/{response_id}/cancel", http.cancel_response, methods=["POST"]),
        Route("/v1/models", http.list_models, methods=["GET"]),
        Route(edge_wire.PATH, edge_http, methods=["POST"]),
        WebSocketRoute(edge_wire.PATH, edge_websocket),
        Route("/health", http.health, methods=["GET"]),
        Route("/health/ready", http.ready, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/inspect", inspect_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(TrafficMiddleware, metrics=metrics),
            Middleware(CloseAfterUnreadBody),
            Middleware(RefuseAmbiguousLength),
        ],
        exception_handlers={
            ProtocolError: _protocol_error,
            HTTPException: _http_error,
            StoreDamagedError: _store_damaged,
            Exception: _unexpected_error,
        },
    )
    # Starlette answers a path with a trailing slash that no route takes by 307 to the path without it, with an
    # empty body; the API has no such redirects, so it is an unknown route like any other (404 not_found).
    app.router.redirect_slashes = False
    http_not_found = app.router.not_found

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await websocket_route_not_found(WebSocket(scope, receive, send))
        else:
            await http_not_found(scope, receive, send)

    app.router.default = not_found
    app.state.metrics = metrics
    return app


async def _purge_periodically(store: Store, interval_s: float, audit: Auditor | None) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            removed = await store.purge_expired(time.time())
        except Exception as error:  # a failed purge is retried next time; it must not stop the server
            _log.error("store.purge_failed", error=repr(error))
            continue
        if removed:
            _log.info("store.purged", responses=removed)
            if audit is not None:
                audit.purged(removed)


async def _protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    return http.error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {
        404: f"No route for {request.method} {request.url.path}.",
        405: f"Method {request.method} is not allowed on {request.url.path}.",
    }
    error = ProtocolError(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        message.get(exc.status_code, str(exc.detail)),
    )
    return http.error_response(error)


async def _store_damaged(request: Request, exc: Exception) -> Response:
    """The disk's fault, not a bug: one line that names the file and what to run, not a traceback."""
    _log.error("store.damaged", path=request.url.path, problem=str(exc))
    return http.error_response(server_error())


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    _log.error("http.unexpected_error", path=request.url.path, error=repr(exc))
    return http.error_response(server_error())
