"""tether's configuration: one ``Settings`` object, read once and passed down.

Sources, lowest priority first: defaults, a TOML config file, ``TETHER_*`` environment variables (nested fields with
``__``, e.g. ``TETHER_SCRIPTED__TTFT_S=0.4``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class ScriptedSettings(BaseModel):
    """The built-in scripted model."""

    ttft_s: float = Field(default=0.0, ge=0.0, description="Time to first token, in seconds.")
    tokens_per_second: float = Field(default=0.0, ge=0.0, description="Output pace; 0 means as fast as possible.")
    scripts_file: Path | None = Field(default=None, description="JSON file of named scripts (model 'script:NAME').")


KIND_ONLY: dict[str, str] = {
    "transport": "openai-responses",
    "max_connection_age_s": "openai-responses",
    "steer_answer_grace_s": "openai-responses",
    "stateful": "openai-responses",
    "prompt_caching": "anthropic",
    "thinking_budget_tokens": "anthropic",
}
"""The provider settings that one kind of provider reads, by the kind."""


class ProviderSettings(BaseModel):
    """One upstream. ``kind`` selects the implementation; credentials come from the environment variable it names."""

    kind: Literal["scripted", "openai-responses", "chat-completions", "anthropic"]
    base_url: str = ""
    api_key_env: str | None = Field(default=None, description="Environment variable holding the upstream API key.")
    transport: Literal["http", "websocket"] = Field(default="http", description="openai-responses only.")
    timeout_s: float = Field(default=300.0, gt=0.0, description="Whole-turn timeout.")
    connect_timeout_s: float = Field(default=10.0, gt=0.0)
    max_retries: int = Field(default=2, ge=0, description="Retries on 429/5xx/connection errors before the first byte.")
    backoff_s: float = Field(default=0.5, ge=0.0, description="First retry delay; doubles each retry, with jitter.")
    max_connection_age_s: float = Field(default=3300.0, gt=0.0, description="Upstream WebSocket rotation age.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent upstream.")
    max_connections: int = Field(default=1024, ge=1, description="HTTP connections open to the upstream at once.")
    max_idle_connections: int = Field(default=256, ge=0, description="HTTP connections kept open between turns.")
    steer_answer_grace_s: float = Field(
        default=10.0,
        gt=0.0,
        description="openai-responses over WebSocket only: once a steered response has ended, how long the upstream"
        " may take to say what became of its steers (a successor, pending or failed) before they fail"
        " response_not_active and its socket is closed; also how long a steer still being sent then may take to go"
        " up.",
    )
    stateful: bool = Field(
        default=True,
        description="openai-responses only: false for an upstream that keeps no responses (vLLM, SGLang): every"
        " turn goes up with the full context, in one request.",
    )
    prompt_caching: bool = Field(default=True, description="anthropic only: cache_control breakpoints.")
    thinking_budget_tokens: int | None = Field(
        default=None,
        ge=1024,
        description="anthropic only: extended thinking with this budget for requests that set no reasoning.effort"
        " (or thinking) of their own.",
    )

    @field_validator(*KIND_ONLY)
    @classmethod
    def _for_its_kind(cls, value: object, info: ValidationInfo) -> object:
        # Set explicitly on another kind, such a key did nothing, silently: prompt_caching = false on an
        # openai-responses provider still cached nothing differently, transport = "websocket" on an anthropic one
        # still spoke HTTP. Defaults are not validated, so only keys the config names are judged.
        kind = info.data.get("kind")
        wanted = KIND_ONLY[str(info.field_name)]
        if kind is not None and kind != wanted:
            raise ValueError(f"applies to {wanted} providers only, and this one is {kind}: remove it")
        return value

    @field_validator("base_url")
    @classmethod
    def _an_http_url(cls, base_url: str) -> str:
        # Checked at start-up: a bad one failed every turn (one with transport = "websocket" as a 500, a crash).
        if base_url:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        return base_url


class RouteSettings(BaseModel):
    """Requests whose model matches ``model`` (shell-style pattern) go to ``provider``, then to ``fallbacks``."""

    model: str
    provider: str
    upstream_model: str | None = Field(default=None, description="The model name sent upstream (default: as asked).")
    fallbacks: list[str] = Field(default_factory=list)


class WebSocketSettings(BaseModel):
    max_connection_age_s: float = Field(default=3600.0, gt=0.0)
    ping_interval_s: float = Field(default=20.0, gt=0.0)
    ping_timeout_s: float = Field(default=20.0, gt=0.0)
    max_in_flight: int = Field(default=16, ge=1)
    max_named_lanes: int = Field(default=32, ge=0)
    max_queued: int = Field(default=64, ge=0)
    per_message_deflate: bool = True


class EdgeSettings(BaseModel):
    """``tether edge`` (the agent's side of the link) and the gateway's edge endpoint."""

    gateway: str | None = Field(default=None, description="The gateway's base URL, e.g. https://gw.example/v1.")
    gateway_key: str | None = Field(default=None, description="The gateway's API key (not the agent's).")
    host: str = Field(default="127.0.0.1", description="Where the edge listens for agents.")
    port: int = Field(default=8787, ge=0, le=65535)
    journal: Path = Field(default=Path(".tether/edge.db"), description="The edge's local journal (SQLite).")
    offline_hold_s: float = Field(default=300.0, ge=0.0, description="How long a request waits for a dead link.")
    keepalive_s: float = Field(default=10.0, gt=0.0, description="Keep-alives to the agent while its answer waits.")
    transport: Literal["auto", "websocket", "http"] = "auto"
    max_chains: int = Field(default=256, ge=1, description="Recent requests the edge keeps as delta bases.")
    hold_answers: bool = Field(
        default=False,
        description="Keep each answer at the edge until it is complete, so a turn interrupted mid-generation (a "
        "gateway node died) is retried without the agent noticing; off, answers stream live.",
    )
    content_max_bytes: int = Field(
        default=256 * MIB, ge=MIB, description="Gateway: content held for edges (per node, all tenants)."
    )
    turn_grace_s: float = Field(default=300.0, ge=0.0, description="Gateway: a finished turn stays resumable.")
    content_ttl_s: float = Field(
        default=7 * 86400.0,
        gt=0.0,
        description="Gateway: edge chains are kept in the store this long after a turn last used them.",
    )


class HTTPSettings(BaseModel):
    """Deadlines for HTTP clients, so a slow or silent client cannot hold a connection forever."""

    header_timeout_s: float = Field(
        default=10.0, gt=0.0, description="A request's headers must be complete this long after the connection opens."
    )
    body_timeout_s: float = Field(
        default=60.0,
        gt=0.0,
        description="The longest pause allowed inside a request's body (a slow link may take longer in all).",
    )
    body_min_rate: float = Field(
        default=1024.0,
        ge=0.0,
        description="Bytes a second a body must average once body_timeout_s has passed (cuts dribbling clients).",
    )
    idle_timeout_s: float = Field(
        default=75.0,
        gt=0.0,
        description="A keep-alive connection idle this long is closed (nginx's default: on a slow link a new "
        "connection costs round trips; an agent's tools often run longer than uvicorn's 5 s).",
    )


class Settings(BaseSettings):
    """Everything tether reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="TETHER_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    store_url: str = Field(
        default="sqlite:///.tether/tether.db",
        description=(
            "sqlite:///PATH (default, relative to the working directory), memory://, or a cluster store: "
            "postgresql://USER@HOST:PORT/DB[?schema=NAME] or redis://HOST:PORT/N[?prefix=NAME]"
        ),
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict, description="API key -> tenant name. None configured means open access."
    )
    max_body_bytes: int = Field(default=16 * MIB, ge=1024, description="Largest HTTP body or WebSocket message.")
    response_ttl_s: float | None = Field(
        default=30 * 24 * 3600.0,
        ge=0.0,
        description="Stored responses expire after this; 0 means they never expire (a negative value is refused).",
    )
    hot_cache_size: int = Field(default=10_000, ge=0, description="Contexts of stored responses kept in memory.")
    hot_cache_bytes: int = Field(
        default=512 * MIB, ge=0, description="At most this much context JSON in the hot cache (each entry counted)."
    )
    max_input_items: int = Field(
        default=10_000, ge=1, description="The most input items one request may carry (400 too_many_input_items)."
    )
    max_json_values: int = Field(
        default=100_000,
        ge=1,
        description="The most JSON values (objects, arrays, strings, numbers, literals; not keys) one request may "
        "hold (400 too_many_json_values): decoding costs per value, ~0.5 s for 16 MiB of tiny objects.",
    )
    snapshot_every: int = Field(default=32, ge=1, description="A full-context snapshot every N responses of a chain.")
    purge_interval_s: float = Field(default=600.0, gt=0.0, description="How often expired responses are purged.")
    resume_grace_s: float = Field(
        default=120.0, ge=0.0, description="How long a finished response stays resumable from memory."
    )
    continue_on_disconnect: bool = Field(
        default=True, description="Keep generating when every client following a response has disconnected."
    )
    shutdown_grace_s: float = Field(default=30.0, ge=0.0, description="In-flight turns may finish for this long.")
    lease_s: float = Field(
        default=10.0,
        gt=0.0,
        description="Cluster: a generating node's lease on a turn lapses this long after its last heartbeat; its "
        "followers then end the turn with generation_interrupted and the retry generates it once more.",
    )
    node_name: str | None = Field(default=None, description="Cluster: this node's name in leases (default: random).")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto", description="auto: JSON lines unless stderr is a terminal (then colours)."
    )
    audit_enabled: bool = Field(default=True, description="Keep the hash-chained audit log of stored turns.")
    audit_dir: Path | None = Field(
        default=None, description="Audit log directory; default: audit/ beside a SQLite database (off for others)."
    )
    audit_content: bool = Field(default=False, description="Put message content in audit entries; off by default.")
    tracing_enabled: bool = Field(
        default=False, description="Export OpenTelemetry traces (also on when OTEL_EXPORTER_OTLP_ENDPOINT is set)."
    )
    inspector_enabled: bool = Field(default=True, description="Serve the /inspect page of recent chains and turns.")
    admin_key_env: str | None = Field(
        default=None,
        description="Environment variable holding the admin key /inspect requires (without one: loopback only).",
    )
    log_content: bool = Field(
        default=False, description="Put message content (input and output items) in turn log lines; off by default."
    )
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    scripted: ScriptedSettings = Field(default_factory=ScriptedSettings)
    providers: dict[str, ProviderSettings] = Field(
        default_factory=dict, description="Named upstreams; 'scripted' always exists."
    )
    routes: list[RouteSettings] = Field(default_factory=list, description="First match wins.")
    default_provider: str = "scripted"

    @field_validator("api_keys")
    @classmethod
    def _usable_keys(cls, api_keys: dict[str, str]) -> dict[str, str]:
        # A key of "" authenticated any request whose x-api-key header was blank; one with spaces around it could
        # never match (a presented key is read stripped); a tenant of "" names no one in logs and the audit.
        for key, tenant in api_keys.items():
            if not key.strip():
                raise ValueError("an API key is empty: give each key some characters, or remove it")
            if key != key.strip():
                raise ValueError(f"the API key of tenant {tenant!r} starts or ends with white space, so none can match")
            if not tenant.strip():
                raise ValueError("an API key's tenant is empty: name the tenant")
        return api_keys

    @classmethod
    def load(cls, config_file: Path | None = None) -> Settings:
        """Read the config file (if any), then let ``TETHER_*`` environment variables override it."""
        from_env = cls()
        if config_file is None:
            return from_env
        with config_file.open("rb") as handle:
            from_file = tomllib.load(handle)
        return cls.model_validate(_merge(from_file, from_env.model_dump(exclude_unset=True)))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
