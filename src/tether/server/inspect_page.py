"""``/inspect``: the inspector's page, server-rendered HTML with a little JS (no build step), and its JSON.

Access: switched off with ``inspector_enabled = false``. With an admin key configured (``admin_key_env`` names the
environment variable holding it) the key is required, as ``Authorization: Bearer`` or ``?key=``. Without one, only a
server bound to loopback serves the page.
"""

from __future__ import annotations

import hmac
import os
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tether.protocol.errors import ErrorType, ProtocolError
from tether.server.http import JSONBody
from tether.server.metrics import Metrics
from tether.server.state import server_state
from tether.types import JSONObject

STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{margin-top:1.5em}
dl#live{display:flex;gap:2em}dl#live dt{color:#666}dl#live dd{margin:0;font-weight:600;font-size:1.2em}
table{border-collapse:collapse;width:100%;margin:.5em 0 1em}td,th{border-bottom:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.failed,.rejected,.cancelled{color:#b00}.completed{color:#070}.timeline{position:relative;height:14px;
background:#f0f0f0;min-width:220px}.mark{position:absolute;top:0;width:2px;height:14px;background:#36c}
.events{display:none;color:#555;font-size:12px}tr.open .events{display:block}tr.turn{cursor:pointer}
code{font-size:12px}
"""

SCRIPT = """
document.addEventListener('click', e => {
  const row = e.target.closest('tr.turn');
  if (row) row.classList.toggle('open');
});
let timer = null;
document.getElementById('auto').addEventListener('change', e => {
  clearInterval(timer);
  if (!e.target.checked) return;
  timer = setInterval(async () => {
    const response = await fetch(location.pathname + location.search, {headers: {accept: 'text/html'}});
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), 'text/html');
    for (const id of ['live', 'tenants']) document.getElementById(id).replaceWith(page.getElementById(id));
  }, 2000);
});
"""


def authorize(request: Request, admin_key: str | None, host: str) -> None:
    """Raises: ProtocolError: 401 without the admin key, 403 off loopback with none configured."""
    from tether.server.startup import is_loopback  # startup imports the app, which imports this module

    if admin_key is None:
        if is_loopback(host):
            return
        raise ProtocolError(
            403,
            "inspector_needs_admin_key",
            "The inspector is served without a key only on loopback: set admin_key_env to the name of an "
            "environment variable holding an admin key.",
            error_type=ErrorType.AUTHENTICATION,
        )
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    candidate = presented.strip() if scheme.lower() == "bearer" else request.query_params.get("key", "")
    if not candidate or not hmac.compare_digest(candidate.encode(), admin_key.encode()):
        raise ProtocolError(
            401,
            "invalid_admin_key",
            "The inspector needs the admin key: 'Authorization: Bearer <key>' or '?key=<key>'.",
            error_type=ErrorType.AUTHENTICATION,
        )


def admin_key(env_name: str | None) -> str | None:
    """The admin key from the environment variable the settings name; a named but unset variable is an empty key
    (so nothing matches it: the inspector fails closed)."""
    if env_name is None:
        return None
    return os.environ.get(env_name, "")


def live_figures(metrics: Metrics) -> JSONObject:
    registry = metrics.registry
    in_flight = sum(
        sample.value
        for family in registry.collect()
        if family.name == "tether_turns_in_flight"
        for sample in family.samples
    )
    return {
        "websocket_connections": int(registry.get_sample_value("tether_websocket_connections") or 0),
        "lanes_active": int(registry.get_sample_value("tether_lanes_active") or 0),
        "turns_in_flight": int(in_flight),
    }


async def inspect_endpoint(request: Request) -> Response:
    state = server_state(request)
    if state.inspector is None:
        raise ProtocolError(404, "not_found", f"No route for {request.method} {request.url.path}.")
    authorize(request, admin_key(state.settings.admin_key_env), state.settings.host)
    metrics: Metrics = request.app.state.metrics
    data = {**state.inspector.snapshot(), "live": live_figures(metrics)}
    if request.query_params.get("format") == "json":
        return JSONBody(data)
    return HTMLResponse(render(data))


def render(data: JSONObject) -> str:
    live = data["live"]
    tenants: dict[str, Any] = data["tenants"]
    saved = sum(chain["bytes_saved"] for chains in tenants.values() for chain in chains)
    sections = "".join(_tenant(tenant, chains) for tenant, chains in tenants.items()) or "<p>No turns yet.</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>tether inspector</title>"
        f"<style>{STYLE}</style></head><body><h1>tether inspector</h1>"
        '<dl id="live">'
        f'<div><dt>WebSocket connections</dt><dd id="connections">{live["websocket_connections"]}</dd></div>'
        f'<div><dt>lanes in flight</dt><dd id="lanes">{live["lanes_active"]}</dd></div>'
        f'<div><dt>turns in flight</dt><dd id="in-flight">{live["turns_in_flight"]}</dd></div>'
        f'<div><dt>recent turns</dt><dd id="turn-count">{data["turns"]}</dd></div>'
        f'<div><dt>bytes saved</dt><dd id="saved-total">{saved}</dd></div>'
        "</dl>"
        '<label><input type=checkbox id="auto"> refresh every 2 s</label>'
        f'<main id="tenants">{sections}</main>'
        f"<script>{SCRIPT}</script></body></html>"
    )


def _tenant(tenant: str, chains: list[JSONObject]) -> str:
    body = "".join(_chain(chain) for chain in chains)
    return f'<section class="tenant" data-tenant="{escape(tenant)}"><h2>tenant {escape(tenant)}</h2>{body}</section>'


def _chain(chain: JSONObject) -> str:
    turns: list[JSONObject] = chain["turns"]
    rows = "".join(_turn(index, turn) for index, turn in enumerate(turns, start=1))
    return (
        f'<article class="chain" data-chain="{escape(chain["chain"])}">'
        f"<h3>chain <code>{escape(chain['chain'])}</code>: {len(turns)} turns, "
        f'bytes sent <span class="chain-sent">{chain["bytes_sent"]}</span>, '
        f'saved <span class="chain-saved">{chain["bytes_saved"]}</span>, '
        f"output tokens {chain['output_tokens']}</h3>"
        "<table class=turns><thead><tr><th>#</th><th>response</th><th>model</th><th>route → provider</th>"
        "<th>transport</th><th>found in</th><th>outcome</th><th class=num>tokens in/out</th>"
        "<th class=num>bytes sent</th><th class=num>bytes saved</th><th>timeline</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></article>"
    )


def _turn(index: int, turn: JSONObject) -> str:
    marks: list[JSONObject] = [mark for mark in turn["timeline"] if mark["ms"] is not None]
    total = max((mark["ms"] for mark in marks), default=0.0) or 1.0
    bars = "".join(
        f'<span class=mark title="{escape(mark["event"])} {mark["ms"]} ms" '
        f'style="left:{100 * mark["ms"] / total:.1f}%"></span>'
        for mark in marks
    )
    events = "<br>".join(
        escape(f"{mark['event']}" + (f" at {mark['ms']} ms" if mark["ms"] is not None else ""))
        for mark in turn["timeline"]
    )
    events += f"<br>{turn['deltas']} deltas, {turn['resumes']} resumes"
    outcome = escape(turn["outcome"]) + (f" ({escape(turn['error_code'])})" if turn["error_code"] else "")
    return (
        f'<tr class="turn" data-response-id="{escape(turn["response_id"])}" data-bytes-saved="{turn["bytes_saved"]}">'
        f"<td>{index}</td><td><code>{escape(turn['response_id'])}</code></td><td>{escape(turn['model'])}</td>"
        f"<td>{escape(turn['route'])} → {escape(turn['provider'])}</td><td>{escape(turn['transport'])}</td>"
        f'<td>{escape(turn["resolution"])}</td><td class="{escape(turn["outcome"])}">{outcome}</td>'
        f"<td class=num>{turn['input_tokens']}/{turn['output_tokens']}</td>"
        f'<td class="num sent">{turn["bytes_sent"]}</td><td class="num saved">{turn["bytes_saved"]}</td>'
        f"<td><div class=timeline>{bars}</div><div class=events>{events}</div></td></tr>"
    )
